// Device twins of token_common.h's float64 helpers (included by nvcc only): values read as double,
// results rounded straight from double to the element type (no double rounding through float32), and
// NumPy's pairwise summation - the same operations in the same order as the CPU twins, so the CUDA
// kernels and their host emulation give the CPU twins' bits. Written for TokenPrune; TokenMerge's fused
// group means need the same pieces.
#pragma once

#include "device.h"

namespace parekit {
namespace tokdev {

constexpr double kBig = 1.0e30;  // token_common.BIG

PAREKIT_HD inline bool sign_bit(double d) {
#ifdef __CUDA_ARCH__
  return __double_as_longlong(d) < 0;
#else
  int64_t b;
  std::memcpy(&b, &d, sizeof b);
  return b < 0;
#endif
}

// float64 -> float16 bits, round to nearest even directly from double (tokens::double_to_half_bits).
PAREKIT_HD inline uint16_t double_to_half(double d) {
  const uint16_t sign = sign_bit(d) ? 0x8000u : 0u;
  const double a = fabs(d);
  if (d != d) return static_cast<uint16_t>(sign | 0x7e00u);
  if (a < 6.103515625e-05) return static_cast<uint16_t>(sign | static_cast<uint16_t>(rint(ldexp(a, 24))));
  int e = ilogb(a);
  if (e > 15) return static_cast<uint16_t>(sign | 0x7c00u);
  double r = rint(ldexp(a, 10 - e));  // in [1024, 2048]
  if (r >= 2048.0) {
    r = 1024.0;
    ++e;
  }
  if (e > 15) return static_cast<uint16_t>(sign | 0x7c00u);
  return static_cast<uint16_t>(sign | static_cast<uint16_t>((e + 15) << 10) | static_cast<uint16_t>(r - 1024.0));
}

// float64 -> bfloat16 bits, round to nearest even directly from double (tokens::double_to_bf16_bits).
PAREKIT_HD inline uint16_t double_to_bf16(double d) {
  const uint16_t sign = sign_bit(d) ? 0x8000u : 0u;
  const double a = fabs(d);
  if (d != d) return static_cast<uint16_t>(sign | 0x7fc0u);
  if (a < 1.1754943508222875e-38) return static_cast<uint16_t>(sign | static_cast<uint16_t>(rint(ldexp(a, 133))));
  int e = ilogb(a);
  if (e > 127) return static_cast<uint16_t>(sign | 0x7f80u);
  double r = rint(ldexp(a, 7 - e));  // in [128, 256]
  if (r >= 256.0) {
    r = 128.0;
    ++e;
  }
  if (e > 127) return static_cast<uint16_t>(sign | 0x7f80u);
  return static_cast<uint16_t>(sign | static_cast<uint16_t>((e + 127) << 7) | static_cast<uint16_t>(r - 128.0));
}

// Element i of a float32 / float16 / bfloat16 tensor as double (exact).
PAREKIT_HD inline double load(const void* data, DType t, int64_t i) {
  if (t == DType::kFloat32) return static_cast<const float*>(data)[i];
  const uint16_t h = static_cast<const uint16_t*>(data)[i];
  return t == DType::kFloat16 ? dev::half_to_float(h) : dev::bf16_to_float(h);
}

PAREKIT_HD inline void store(void* data, DType t, int64_t i, double v) {
  if (t == DType::kFloat32) {
    static_cast<float*>(data)[i] = static_cast<float>(v);
  } else {
    static_cast<uint16_t*>(data)[i] = t == DType::kFloat16 ? double_to_half(v) : double_to_bf16(v);
  }
}

// NumPy's pairwise sum in double (tokens::pairwise_sum): dev::pairwise_sum.
template <typename Get>
PAREKIT_HD double pairwise_sum(const Get& get, int64_t n) {
  return dev::pairwise_sum<double>(get, n);
}

}  // namespace tokdev
}  // namespace parekit
