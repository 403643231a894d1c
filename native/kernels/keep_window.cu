// CUDA kernel of the StreamingLLM keep rule (KvWindow, KvWindowMask): one thread per output element.
#include "device.h"
#include "keep_window.h"
#include "keep_window_cuda.h"

namespace parekit {
namespace {

template <typename T>
void keep_window_typed(const KeepWindowParams& p, const Launch& launch) {
  const T* src = static_cast<const T*>(p.src);
  T* dst = static_cast<T*>(p.dst);
  const int64_t t = p.t, inner = p.inner;
  const int64_t kept = kept_length(t, p.sink, p.window);
  const int64_t head = kept == t ? t : p.sink;  // rows [0, head) come from the front
  const int64_t shift = t - kept;               // row r >= head comes from r + shift
  dev::for_each(launch, "KvWindow", p.outer * kept * inner, [=] PAREKIT_HD(int64_t i) {
    const int64_t c = i % inner;
    const int64_t r = (i / inner) % kept;
    const int64_t o = i / (inner * kept);
    const int64_t from = r < head ? r : r + shift;
    dst[i] = src[(o * t + from) * inner + c];
  });
}

}  // namespace

void launch_keep_window(const KeepWindowParams& p, const Launch& launch) {
  if (p.outer < 0 || p.t < 0 || p.inner < 0 || p.sink < 0 || p.window < 1) fail("KvWindow", "bad launch params");
  switch (p.elem_size) {
    case 1: keep_window_typed<uint8_t>(p, launch); return;
    case 2: keep_window_typed<uint16_t>(p, launch); return;
    case 4: keep_window_typed<uint32_t>(p, launch); return;
    case 8: keep_window_typed<uint64_t>(p, launch); return;
    default: fail("KvWindow", "element size " + std::to_string(p.elem_size) + " is not supported");
  }
}

}  // namespace parekit
