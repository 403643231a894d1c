// Device-side helpers for the .cu files of native/kernels (included by nvcc only).
//
// - PAREKIT_HD: functions that run on the device and, for host emulation (launch.h), on the host.
// - fp16 / bf16 <-> fp32 (float16.h: the very functions core.h's conversions use, host and device),
//   without depending on cuda_fp16 intrinsics.
// - for_each(launch, n, f): calls f(i) for i in [0, n) - a grid-stride CUDA kernel, or a host loop.
//   Every launch is checked (cudaGetLastError) and a failure throws parekit::Error.
#pragma once

#include <cuda_runtime.h>

#include <cmath>
#include <cstdint>
#include <cstring>
#include <string>

#include "core.h"
#include "float16.h"
#include "launch.h"

#define PAREKIT_HD __host__ __device__

namespace parekit {
namespace dev {

using fp16::bf16_to_float;
using fp16::bits_to_float;
using fp16::float_to_bf16;
using fp16::float_to_bits;
using fp16::float_to_half;
using fp16::half_to_float;

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

// NumPy's pairwise sum of get(0) .. get(n - 1) in accumulator type Acc (the CPU twins' pairwise_sum), without recursion: a post-order
// walk of the same split tree with an explicit stack (depth <= 62 for any int64 n).
template <typename Acc, typename Get>
PAREKIT_HD Acc pairwise_sum(const Get& get, int64_t n) {
  struct Frame {
    int64_t off, len;
    int stage;
  };
  Frame stack[64];
  Acc vals[64];
  int top = 0, nv = 0;
  stack[top++] = {0, n, 0};
  while (top > 0) {
    Frame& f = stack[top - 1];
    if (f.len <= 128) {
      const int64_t off = f.off, len = f.len;
      Acc res;
      if (len < 8) {
        res = Acc(0);
        for (int64_t i = 0; i < len; ++i) res += get(off + i);
      } else {
        Acc r[8];
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
      const Acc right = vals[--nv];
      const Acc left = vals[--nv];
      vals[nv++] = left + right;
    }
  }
  return vals[0];
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
