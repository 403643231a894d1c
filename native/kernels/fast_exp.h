// exp for the softmax kernels (AttentionProbs, KvQuantAttention, ExitGate): float32, inlined into every
// ISA version of its callers so the loops that call it vectorize. The CUDA kernels (.cu, nvcc) use the
// very same function (host and device), so device, host emulation and CPU twin round alike.
#pragma once

#include <cstdint>
#include <cstring>

namespace parekit {

#if defined(__CUDACC__)
#define PAREKIT_ALWAYS_INLINE __host__ __device__ inline
#elif defined(__GNUC__)
#define PAREKIT_ALWAYS_INLINE inline __attribute__((always_inline))
#else
#define PAREKIT_ALWAYS_INLINE inline
#endif

// exp(x) for x <= 0 (the shifted scores): range reduction by ln 2 and Cephes' expf polynomial, ~1 ulp;
// 0 below -87.5 (where the float64 reference's result is < 1e-38) and for -inf (masked keys).
PAREKIT_ALWAYS_INLINE float exp_nonpositive(float x) {
  const float xc = x >= -87.5f ? (x <= 0.0f ? x : 0.0f) : -87.5f;  // NaN -> -87.5 (handled below)
  const float n = (xc * 1.44269504088896341f + 12582912.0f) - 12582912.0f;  // round to nearest
  float r = xc - n * 0.693359375f;
  r = r - n * -2.12194440e-4f;
  float p = 1.9875691500e-4f;
  p = p * r + 1.3981999507e-3f;
  p = p * r + 8.3334519073e-3f;
  p = p * r + 4.1665795894e-2f;
  p = p * r + 1.6666665459e-1f;
  p = p * r + 5.0000001201e-1f;
  p = p * r * r + r + 1.0f;
  const int32_t bits = (static_cast<int32_t>(n) + 127) * (1 << 23);
#if defined(__CUDA_ARCH__)
  const float two_n = __int_as_float(bits);
#else
  float two_n;
  std::memcpy(&two_n, &bits, sizeof two_n);
#endif
  const float e = p * two_n;
  return x >= -87.5f ? e : (x != x ? x : 0.0f);
}

}  // namespace parekit
