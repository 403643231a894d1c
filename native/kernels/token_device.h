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

// NumPy's pairwise sum of get(0) .. get(n - 1) (tokens::pairwise_sum), without recursion: a post-order
// walk of the same split tree with an explicit stack (depth <= 62 for any int64 n).
template <typename Get>
PAREKIT_HD double pairwise_sum(const Get& get, int64_t n) {
  struct Frame {
    int64_t off, len;
    int stage;
  };
  Frame stack[64];
  double vals[64];
  int top = 0, nv = 0;
  stack[top++] = {0, n, 0};
  while (top > 0) {
    Frame& f = stack[top - 1];
    if (f.len <= 128) {
      const int64_t off = f.off, len = f.len;
      double res;
      if (len < 8) {
        res = 0.0;
        for (int64_t i = 0; i < len; ++i) res += get(off + i);
      } else {
        double r[8];
        for (int j = 0; j < 8; ++j) r[j] = get(off + j);
        int64_t i = 8;
        for (; i < len - (len % 8); i += 8) {
          for (int j = 0; j < 8; ++j) r[j] += get(off + i + j);
        }
        res = ((r[0] + r[1]) + (r[2] + r[3])) + ((r[4] + r[5]) + (r[6] + r[7]));
        for (; i < len; ++i) res += get(off + i);
      }
      --top;
      vals[nv++] = res;
      continue;
    }
    int64_t n2 = f.len / 2;
    n2 -= n2 % 8;
    if (f.stage == 0) {
      f.stage = 1;
      stack[top++] = {f.off, n2, 0};
    } else if (f.stage == 1) {
      f.stage = 2;
      stack[top++] = {f.off + n2, f.len - n2, 0};
    } else {
      --top;
      const double right = vals[--nv];
      const double left = vals[--nv];
      vals[nv++] = left + right;
    }
  }
  return vals[0];
}

}  // namespace tokdev
}  // namespace parekit
