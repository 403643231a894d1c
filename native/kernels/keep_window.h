// The StreamingLLM keep rule shared by KvWindow and KvWindowMask: along one axis keep positions
// [0, sink) and [T - window, T); the identity when T <= sink + window.
#pragma once

#include <cstring>

#include "core.h"

namespace parekit {

inline int64_t kept_length(int64_t t, int64_t sink, int64_t window) { return t < sink + window ? t : sink + window; }

// Copies the kept rows of `in` viewed as [outer, t, inner] bytes-per-element `elem` into `out`
// ([outer, kept, inner]), one outer row per parallel item.
inline void keep_window_copy(const Context& ctx, const void* in, void* out, int64_t outer, int64_t t,
                             int64_t inner, size_t elem, int64_t sink, int64_t window) {
  const int64_t kept = kept_length(t, sink, window);
  const size_t row = static_cast<size_t>(inner) * elem;
  const int64_t head = kept == t ? t : sink;
  const int64_t tail = kept - head;
  const auto* src = static_cast<const unsigned char*>(in);
  auto* dst = static_cast<unsigned char*>(out);
  ctx.parallel_for(outer, static_cast<double>(kept * inner), [&](int64_t begin, int64_t end) {
    for (int64_t o = begin; o < end; ++o) {
      const unsigned char* s = src + static_cast<size_t>(o * t) * row;
      unsigned char* d = dst + static_cast<size_t>(o * kept) * row;
      if (head > 0) std::memcpy(d, s, static_cast<size_t>(head) * row);
      if (tail > 0) std::memcpy(d + static_cast<size_t>(head) * row, s + static_cast<size_t>(t - tail) * row,
                                static_cast<size_t>(tail) * row);
    }
  });
}

inline std::vector<AttrDecl> keep_window_attrs() {
  return {int_attr("sink", 4, true, 0), int_attr("window", 1024, true, 1)};
}

}  // namespace parekit
