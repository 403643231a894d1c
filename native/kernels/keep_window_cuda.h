// CUDA launcher shared by KvWindow and KvWindowMask (the StreamingLLM keep rule of keep_window.h):
// copies the kept rows of `src` viewed as [outer, t, inner] elements of `elem_size` bytes into `dst`
// ([outer, kept_length(t, sink, window), inner]). Pure data movement: bit-exact.
#pragma once

#include <cstddef>
#include <cstdint>

#include "launch.h"

namespace parekit {

struct KeepWindowParams {
  const void* src{nullptr};
  void* dst{nullptr};
  int64_t outer{0}, t{0}, inner{0};
  size_t elem_size{0};  // 1, 2, 4 or 8
  int64_t sink{0}, window{0};
};

void launch_keep_window(const KeepWindowParams& p, const Launch& launch);

}  // namespace parekit
