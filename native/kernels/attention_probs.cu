// CUDA kernel of AttentionProbs: one thread per output row (b, h, query s). The row's own output
// [t] doubles as the scratch for its scores, so no workspace is needed.
//
// The arithmetic is the CPU twin's (attention_probs.cpp), operation for operation:
// - dots: for S >= 4 one float sum per key in x order (the twin's register tile); for S < 4 (decode) 16
//   partial sums over x strided by 16, folded as the twin's lane_sum tree, then the tail in x order;
// - softmax over the visible span [a, z) (first / last true mask entry): max of dot * scale (masked: -inf),
//   exp(v - max) with the twin's exp_nonpositive polynomial, the sum in 8 double lanes (tail in lane 0,
//   folded as a tree), then float(double(e) * (1 / sum)); zeros outside the span and for empty rows.
// Multiplies and adds go through mul()/add(), which on the device forbid FMA contraction (__fmul_rn /
// __fadd_rn) so that the device rounds as the twin's baseline build does, whatever --fmad says.
#include <cmath>
#include <string>

#include "attention_probs_cuda.h"
#include "device.h"
#include "fast_exp.h"

namespace parekit {
namespace {

PAREKIT_HD inline float mul(float a, float b) {
#ifdef __CUDA_ARCH__
  return __fmul_rn(a, b);
#else
  return a * b;
#endif
}

PAREKIT_HD inline float add(float a, float b) {
#ifdef __CUDA_ARCH__
  return __fadd_rn(a, b);
#else
  return a + b;
#endif
}


// dot(q, k) over d in the order of the twin's kernel for this S.
PAREKIT_HD inline float dot(const float* q, const float* k, int64_t d, bool direct) {
  if (!direct) {
    float sum = 0.0f;
    for (int64_t x = 0; x < d; ++x) sum = add(sum, mul(q[x], k[x]));
    return sum;
  }
  float lanes[16];
  for (int l = 0; l < 16; ++l) lanes[l] = 0.0f;
  int64_t x = 0;
  for (; x + 16 <= d; x += 16) {
    for (int l = 0; l < 16; ++l) lanes[l] = add(lanes[l], mul(q[x + l], k[x + l]));
  }
  // lane_sum: 16 -> 8 -> 4 lanes, then (c0 + c2) + (c1 + c3)
  float c[4];
  for (int l = 0; l < 4; ++l) c[l] = add(add(lanes[l], lanes[l + 8]), add(lanes[l + 4], lanes[l + 12]));
  float sum = add(add(c[0], c[2]), add(c[1], c[3]));
  for (; x < d; ++x) sum = add(sum, mul(q[x], k[x]));
  return sum;
}

}  // namespace

void launch_attention_probs(const AttentionProbsParams& p, const Launch& launch) {
  static const char* op = "AttentionProbs";
  if (p.b < 0 || p.h < 0 || p.s < 0 || p.d < 0 || p.t < 0 || (p.mh != 1 && p.mh != p.h)) fail(op, "bad launch params");
  const float scale = p.scale != 0.0f ? p.scale : static_cast<float>(1.0 / std::sqrt(static_cast<double>(p.d)));
  const float* qd = p.q;
  const float* kd = p.k;
  const uint8_t* md = p.mask;
  float* od = p.out;
  const int64_t h = p.h, s = p.s, d = p.d, t = p.t, mh = p.mh;
  const bool direct = s < 4;  // the twin's switch between its decode and tiled dot products
  dev::for_each(launch, op, p.b * h * s, [=] PAREKIT_HD(int64_t row) {
    const int64_t q_i = row % s, bh = row / s, hi = bh % h, bi = bh / h;
    const uint8_t* m = md + ((bi * mh + (mh == 1 ? 0 : hi)) * s + q_i) * t;
    const float* q = qd + row * d;
    const float* keys = kd + bh * t * d;
    float* o = od + row * t;
    int64_t a = 0, z = t;
    while (a < t && !m[a]) ++a;
    while (z > a && !m[z - 1]) --z;
    for (int64_t j = 0; j < a; ++j) o[j] = 0.0f;
    for (int64_t j = z; j < t; ++j) o[j] = 0.0f;
    if (a >= z) return;
    const float neg_inf = -INFINITY;
    float top = neg_inf;
    for (int64_t j = a; j < z; ++j) {
      const float v = m[j] ? mul(dot(q, keys + j * d, d, direct), scale) : neg_inf;
      o[j] = v;
      top = v > top ? v : top;
    }
    if (!isfinite(top)) top = 0.0f;  // as the twin: no finite maximum, shift by 0
    double lanes[8] = {0, 0, 0, 0, 0, 0, 0, 0};
    for (int64_t j = a; j < z; ++j) {
      o[j] = exp_nonpositive(add(o[j], -top));
      // the twin adds full chunks of 8 lane-wise from a, the tail into lane 0
      const int64_t off = j - a;
      const int lane = (off / 8 + 1) * 8 <= z - a ? static_cast<int>(off % 8) : 0;
      lanes[lane] += static_cast<double>(o[j]);
    }
    const double total =
        ((lanes[0] + lanes[1]) + (lanes[2] + lanes[3])) + ((lanes[4] + lanes[5]) + (lanes[6] + lanes[7]));
    if (total > 0.0) {
      const double inv = 1.0 / total;
      for (int64_t j = a; j < z; ++j) o[j] = static_cast<float>(static_cast<double>(o[j]) * inv);
    } else {
      for (int64_t j = a; j < z; ++j) o[j] = 0.0f;
    }
  });
}

}  // namespace parekit
