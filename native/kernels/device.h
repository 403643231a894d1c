// Device-side helpers for the .cu files of native/kernels (included by nvcc only).
//
// - PAREKIT_HD: functions that run on the device and, for host emulation (launch.h), on the host.
// - fp16 / bf16 <-> fp32 by bit manipulation, round to nearest even: the same results on host and
//   device as core.h's conversions (the CPU twins), without depending on cuda_fp16 intrinsics.
// - for_each(launch, n, f): calls f(i) for i in [0, n) - a grid-stride CUDA kernel, or a host loop.
//   Every launch is checked (cudaGetLastError) and a failure throws parekit::Error.
#pragma once

#include <cuda_runtime.h>

#include <cmath>
#include <cstdint>
#include <cstring>
#include <string>

#include "core.h"
#include "launch.h"

#define PAREKIT_HD __host__ __device__

namespace parekit {
namespace dev {

PAREKIT_HD inline float bits_to_float(uint32_t b) {
#ifdef __CUDA_ARCH__
  return __uint_as_float(b);
#else
  float f;
  std::memcpy(&f, &b, sizeof f);
  return f;
#endif
}

PAREKIT_HD inline uint32_t float_to_bits(float f) {
#ifdef __CUDA_ARCH__
  return __float_as_uint(f);
#else
  uint32_t b;
  std::memcpy(&b, &f, sizeof b);
  return b;
#endif
}

PAREKIT_HD inline float half_to_float(uint16_t h) {
  const uint32_t sign = static_cast<uint32_t>(h & 0x8000u) << 16;
  const uint32_t exp = (h >> 10) & 0x1fu;
  uint32_t mant = h & 0x3ffu;
  if (exp == 0) {
    if (mant == 0) return bits_to_float(sign);
    int e = -1;
    do {
      ++e;
      mant <<= 1;
    } while ((mant & 0x400u) == 0);
    return bits_to_float(sign | (static_cast<uint32_t>(127 - 15 - e) << 23) | ((mant & 0x3ffu) << 13));
  }
  if (exp == 0x1f) return bits_to_float(sign | 0x7f800000u | (mant << 13));
  return bits_to_float(sign | ((exp + 127 - 15) << 23) | (mant << 13));
}

PAREKIT_HD inline uint16_t float_to_half(float f) {
  const uint32_t x = float_to_bits(f);
  const uint32_t sign = (x >> 16) & 0x8000u;
  const uint32_t abs = x & 0x7fffffffu;
  if (abs >= 0x7f800000u) return static_cast<uint16_t>(sign | 0x7c00u | (abs > 0x7f800000u ? 0x200u : 0u));
  if (abs >= 0x477ff000u) return static_cast<uint16_t>(sign | 0x7c00u);
  if (abs < 0x38800000u) {  // subnormal half or zero: round abs * 2^24 to an integer, ties to even
    const float scaled = bits_to_float(abs) * 16777216.0f;
    return static_cast<uint16_t>(sign | static_cast<uint32_t>(rintf(scaled)));
  }
  const uint32_t rounded = abs + 0xfffu + ((abs >> 13) & 1u);
  return static_cast<uint16_t>(sign | ((rounded - 0x38000000u) >> 13));
}

PAREKIT_HD inline float bf16_to_float(uint16_t b) { return bits_to_float(static_cast<uint32_t>(b) << 16); }

PAREKIT_HD inline uint16_t float_to_bf16(float f) {
  const uint32_t x = float_to_bits(f);
  if ((x & 0x7fffffffu) > 0x7f800000u) return static_cast<uint16_t>((x >> 16) | 0x40u);
  return static_cast<uint16_t>((x + 0x7fffu + ((x >> 16) & 1u)) >> 16);
}

// Element access for the float dtypes a kernel is instantiated for.
struct F32 {
  using storage = float;
  PAREKIT_HD static float load(const storage* p, int64_t i) { return p[i]; }
  PAREKIT_HD static void store(storage* p, int64_t i, float v) { p[i] = v; }
};
struct F16 {
  using storage = uint16_t;
  PAREKIT_HD static float load(const storage* p, int64_t i) { return half_to_float(p[i]); }
  PAREKIT_HD static void store(storage* p, int64_t i, float v) { p[i] = float_to_half(v); }
};
struct BF16 {
  using storage = uint16_t;
  PAREKIT_HD static float load(const storage* p, int64_t i) { return bf16_to_float(p[i]); }
  PAREKIT_HD static void store(storage* p, int64_t i, float v) { p[i] = float_to_bf16(v); }
};

// Calls f(Access{}) with the accessor of a float dtype (float32, float16, bfloat16); throws otherwise.
template <typename F>
void dispatch_float(DType t, const char* op, F&& f) {
  switch (t) {
    case DType::kFloat32: f(F32{}); return;
    case DType::kFloat16: f(F16{}); return;
    case DType::kBFloat16: f(BF16{}); return;
    default: fail(op, std::string("the CUDA kernel has no ") + dtype_name(t) + " variant");
  }
}

void check_launch(const char* op, cudaError_t err);

template <typename F>
__global__ void for_each_kernel(int64_t n, F f) {
  const int64_t stride = static_cast<int64_t>(blockDim.x) * gridDim.x;
  for (int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < n; i += stride) f(i);
}

constexpr int kBlock = 256;

// f(i) for every i in [0, n): one CUDA thread per item (grid-stride beyond 2^20 blocks), or a host loop.
template <typename F>
void for_each(const Launch& launch, const char* op, int64_t n, F f) {
  if (n <= 0) return;
  if (launch.host) {
    for (int64_t i = 0; i < n; ++i) f(i);
    return;
  }
  const int64_t blocks64 = (n + kBlock - 1) / kBlock;
  const unsigned blocks = static_cast<unsigned>(blocks64 < (1 << 20) ? blocks64 : (1 << 20));
  for_each_kernel<<<blocks, kBlock, 0, static_cast<cudaStream_t>(launch.stream)>>>(n, f);
  check_launch(op, cudaGetLastError());
}

}  // namespace dev
}  // namespace parekit
