// CUDA kernels of KvSlotMask and KvMaskRemap: one thread per output element, no scratch.
#include <cstring>
#include <string>

#include "device.h"
#include "kv_slot_mask_cuda.h"

namespace parekit {
namespace {

template <typename T>
void mask_remap_typed(const KvMaskRemapParams& p, T one, const Launch& launch) {
  const T* src = static_cast<const T*>(p.mask);
  T* dst = static_cast<T*>(p.out);
  const int64_t n = p.n, past = p.p, s = p.s, width = p.p + p.s;
  dev::for_each(launch, "KvMaskRemap", p.b * width, [=] PAREKIT_HD(int64_t i) {
    const int64_t c = i % width, row = i / width;
    // column c >= past comes from column n - s + (c - past) of the row: always inside [0, n) as s <= n
    dst[i] = c < past ? one : src[row * n + (n - s) + (c - past)];
  });
}

// The bytes of 1 in the mask dtype as the element type T (what the twin's store_from_double writes).
template <typename T>
T one_as(DType t) {
  unsigned char bytes[8] = {0, 0, 0, 0, 0, 0, 0, 0};
  store_from_double(bytes, t, 0, 1.0);
  T v;
  std::memcpy(&v, bytes, sizeof v);
  return v;
}

}  // namespace

void launch_kv_slot_mask(const KvSlotMaskParams& p, const Launch& launch) {
  static const char* op = "KvSlotMask";
  const int64_t hq = p.hkv * p.group;
  if (p.b < 0 || p.hkv < 0 || p.group < 1 || p.s < 0 || p.t < 0 || p.p < 0 || p.p > p.t ||
      (p.mh != 1 && p.mh != hq)) {
    fail(op, "bad launch params");
  }
  const uint8_t* mask = p.mask;
  const float* score = p.score;
  uint8_t* out = p.out;
  const int64_t s = p.s, t = p.t, past = p.p, mh = p.mh, hkv = p.hkv, group = p.group;
  dev::for_each(launch, op, p.b * hq * s * t, [=] PAREKIT_HD(int64_t i) {
    const int64_t j = i % t;
    const int64_t q = (i / t) % s;
    const int64_t h = (i / (t * s)) % hq;
    const int64_t bi = i / (t * s * hq);
    const uint8_t m = mask[((bi * mh + (mh == 1 ? 0 : h)) * s + q) * t + j];
    // new slots (j >= P) are kept as the mask says; past slots need a non-negative score (evicted: -1)
    const uint8_t valid = j >= past ? 1 : (score[(bi * hkv + h / group) * past + j] >= 0.0f ? 1 : 0);
    out[i] = static_cast<uint8_t>(m & valid);
  });
}

void launch_kv_mask_remap(const KvMaskRemapParams& p, const Launch& launch) {
  static const char* op = "KvMaskRemap";
  if (p.b < 0 || p.n < 0 || p.p < 0 || p.s < 0 || p.s > p.n) fail(op, "bad launch params");
  switch (dtype_size(p.dtype)) {
    case 1: mask_remap_typed<uint8_t>(p, one_as<uint8_t>(p.dtype), launch); return;
    case 2: mask_remap_typed<uint16_t>(p, one_as<uint16_t>(p.dtype), launch); return;
    case 4: mask_remap_typed<uint32_t>(p, one_as<uint32_t>(p.dtype), launch); return;
    case 8: mask_remap_typed<uint64_t>(p, one_as<uint64_t>(p.dtype), launch); return;
    default: fail(op, std::string("the CUDA kernel has no ") + dtype_name(p.dtype) + " variant");
  }
}

}  // namespace parekit
