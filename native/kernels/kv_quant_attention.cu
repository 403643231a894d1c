// CUDA kernel of KvQuantAttention: attention over dequantize(store) ++ tail, reading the packed codes.
//
// Four launches, each one thread per independent result, in the CPU twin's float32 order (the twin is
// kv_quant_attention.cpp; its helpers dot/sum use eight partial sums, reproduced here exactly):
//   1. scores   one thread per (row, token): scale * q . k, KIVI-folded for stored tokens; -inf if masked;
//   2. softmax  one thread per (row, chunk): chunk max, exponentials in place, their sum;
//   3. values   one thread per (row, chunk, channel): the chunk's unnormalized output for that channel;
//   4. merge    one thread per output element: rescale the chunks to the row's max and normalize.
// A row is (batch, query head, query position); query head h reads KV head h / (Hq / Hkv). Built with
// --fmad=false, so device, host emulation and CPU twin round every product and sum alike; the only
// difference left on a GPU is expf in the merge (~1 ulp from glibc's).
#include <cmath>
#include <limits>
#include <string>

#include "device.h"
#include "fast_exp.h"
#include "kv_quant_attention_cuda.h"

namespace parekit {
namespace {

constexpr const char* kOp = "KvQuantAttention";


PAREKIT_HD inline float exp_hd(float x) {
#ifdef __CUDA_ARCH__
  return expf(x);
#else
  return std::exp(x);
#endif
}

// sum_j a(j) * b(j) with the twin's association: eight partial sums, then a serial tail.
template <typename A, typename B>
PAREKIT_HD inline float dot8(A a, B b, int64_t n) {
  float acc[8] = {0, 0, 0, 0, 0, 0, 0, 0};
  int64_t j = 0;
  for (; j + 8 <= n; j += 8) {
    for (int l = 0; l < 8; ++l) acc[l] += a(j + l) * b(j + l);
  }
  float tail = 0.0f;
  for (; j < n; ++j) tail += a(j) * b(j);
  return ((acc[0] + acc[4]) + (acc[1] + acc[5])) + ((acc[2] + acc[6]) + (acc[3] + acc[7])) + tail;
}

// Code of channel j of one token's packed row (kv_quant_format.h): D/2 bytes of two digits at 4 bits,
// else one code per byte (byte % 2^bits).
PAREKIT_HD inline float code_at(const int8_t* packed, int64_t j, int64_t d, int64_t bits) {
  if (bits == 4) {
    const int64_t half = d / 2;
    const uint32_t byte = static_cast<uint32_t>(static_cast<uint8_t>(packed[j < half ? j : j - half])) ^ 0x80u;
    return static_cast<float>(static_cast<int32_t>(j < half ? (byte & 15u) : (byte >> 4)));
  }
  const uint32_t byte = static_cast<uint32_t>(static_cast<uint8_t>(packed[j])) ^ 0x80u;
  return static_cast<float>(static_cast<int32_t>(byte & ((1u << bits) - 1u)));
}

// The geometry every launch shares (captured by value).
struct Geo {
  int64_t hq, hkv, s, d, nq, tf, t, bits, group, rep, dp, ng, kgroups, chunk, nchunks, stride;
  int64_t msb, msh, mss, mst;  // mask strides, 0 along broadcast dims
  float scale;
  // KV head slab g = batch * Hkv + kv head of row `row` (= (batch * Hq + head) * S + position).
  PAREKIT_HD int64_t slab(int64_t row) const {
    const int64_t h = (row / s) % hq, bi = row / (s * hq);
    return bi * hkv + h / rep;
  }
  PAREKIT_HD int64_t mask_at(int64_t row, int64_t tok) const {
    const int64_t sq = row % s, h = (row / s) % hq, bi = row / (s * hq);
    return bi * msb + h * msh + sq * mss + tok * mst;
  }
};

void check_params(const KvQuantAttentionParams& p) {
  const bool dims_ok = p.b >= 0 && p.hq >= 0 && p.hkv > 0 && p.s >= 0 && p.d >= 0 && p.nq >= 0 && p.tf >= 0 &&
                       p.hq % p.hkv == 0;
  if (!dims_ok) fail(kOp, "bad launch dims");
  if (p.bits < 4 || p.bits > 8 || p.group < 1) fail(kOp, "bad launch params (bits " + std::to_string(p.bits) +
                                                          ", group " + std::to_string(p.group) + ")");
  if (p.d % (8 / p.bits) != 0 || p.d % p.group != 0 || p.nq % p.group != 0) {
    fail(kOp, "D = " + std::to_string(p.d) + " / Nq = " + std::to_string(p.nq) + " do not fit bits " +
                  std::to_string(p.bits) + " and group " + std::to_string(p.group));
  }
  const int64_t full[4] = {p.b, p.hq, p.s, p.nq + p.tf};
  for (int i = 0; i < 4; ++i) {
    if (p.mask_dims[i] != 1 && p.mask_dims[i] != full[i]) fail(kOp, "the mask does not broadcast to [B, Hq, S, T]");
  }
}

}  // namespace

void launch_kv_quant_attention(const KvQuantAttentionParams& p, const Launch& launch) {
  check_params(p);
  const int64_t rows = p.b * p.hq * p.s, d = p.d;
  if (rows == 0 || d == 0) return;
  Geo g{};
  g.hq = p.hq, g.hkv = p.hkv, g.s = p.s, g.d = d, g.nq = p.nq, g.tf = p.tf, g.t = p.nq + p.tf;
  g.bits = p.bits, g.group = p.group, g.rep = p.hq / p.hkv, g.dp = d / (8 / p.bits), g.ng = d / p.group;
  g.kgroups = p.nq / p.group;
  g.chunk = kv_quant_attention_chunk(p.group);
  g.nchunks = kv_quant_attention_chunks(g.t, p.group);
  g.stride = d + 2;  // per row and chunk: acc[d], max, sum
  {
    int64_t stride = 1;
    int64_t* strides[4] = {&g.msb, &g.msh, &g.mss, &g.mst};
    for (int i = 3; i >= 0; --i) {
      *strides[i] = p.mask_dims[i] == 1 ? 0 : stride;
      stride *= p.mask_dims[i];
    }
  }
  g.scale = p.scale > 0.0f ? p.scale : 1.0f / std::sqrt(static_cast<float>(d));
  float* sc = static_cast<float*>(p.workspace);  // [rows, T]
  float* partial = reinterpret_cast<float*>(static_cast<unsigned char*>(p.workspace) +
                                            kv_quant_attention_align(static_cast<size_t>(rows * g.t) * sizeof(float)));
  const float* q = p.query;
  const int8_t *kc = p.k_codes, *vc = p.v_codes;
  const uint16_t *ks = p.k_scale, *km = p.k_min, *vs = p.v_scale, *vm = p.v_min;
  const float *kt = p.k_tail, *vt = p.v_tail;
  const uint8_t* mask = p.mask;
  float* out = p.out;
  const float ninf = -std::numeric_limits<float>::infinity();

  // 1. scores. Stored tokens: (q * scale * scale_k) . codes + (q * scale) . min_k, as the twin folds them.
  dev::for_each(launch, kOp, rows * g.t, [=] PAREKIT_HD(int64_t i) {
    const int64_t row = i / g.t, tok = i % g.t, gs = g.slab(row);
    const float* qrow = q + row * g.d;
    const float scale = g.scale;
    float score = ninf;
    if (mask[g.mask_at(row, tok)] != 0) {
      auto qv = [=](int64_t j) { return qrow[j] * scale; };
      if (tok < g.nq) {
        const int64_t gi = tok / g.group;
        const uint16_t* sk = ks + (gs * g.kgroups + gi) * g.d;
        const uint16_t* mk = km + (gs * g.kgroups + gi) * g.d;
        const int8_t* packed = kc + (gs * g.nq + tok) * g.dp;
        const float bias = dot8(qv, [=](int64_t j) { return dev::half_to_float(mk[j]); }, g.d);
        const float dotq = dot8([=](int64_t j) { return qv(j) * dev::half_to_float(sk[j]); },
                                [=](int64_t j) { return code_at(packed, j, g.d, g.bits); }, g.d);
        score = dotq + bias;
      } else {
        const float* kv = kt + (gs * g.tf + (tok - g.nq)) * g.d;
        score = dot8(qv, [=](int64_t j) { return kv[j]; }, g.d);
      }
    }
    sc[i] = score;
  });

  // 2. per row and chunk: maximum, exponentials (in place), their sum in eight partial sums.
  dev::for_each(launch, kOp, rows * g.nchunks, [=] PAREKIT_HD(int64_t i) {
    const int64_t row = i / g.nchunks, ci = i % g.nchunks;
    const int64_t c0 = ci * g.chunk, c1 = c0 + g.chunk < g.t ? c0 + g.chunk : g.t, n = c1 > c0 ? c1 - c0 : 0;
    float* e = sc + row * g.t + c0;
    float* pr = partial + i * g.stride;
    float top = ninf;
    for (int64_t k = 0; k < n; ++k) top = e[k] > top ? e[k] : top;
    pr[g.d] = top;
    pr[g.d + 1] = 0.0f;
    if (top == ninf) return;  // nothing visible in this chunk
    for (int64_t k = 0; k < n; ++k) e[k] = exp_nonpositive(e[k] - top);
    pr[g.d + 1] = dot8([=](int64_t k) { return e[k]; }, [](int64_t) { return 1.0f; }, n);
  });

  // 3. per row, chunk and channel j: sum of (p * scale_v) * code_j over stored tokens, plus the group's
  //    sum of p * min_v, plus sum of p * v_j over tail tokens (zero weights skipped, as the twin).
  dev::for_each(launch, kOp, rows * g.nchunks * g.d, [=] PAREKIT_HD(int64_t i) {
    const int64_t j = i % g.d, item = i / g.d, row = item / g.nchunks, ci = item % g.nchunks;
    const int64_t gs = g.slab(row), c = j / g.group;
    const int64_t c0 = ci * g.chunk, c1 = c0 + g.chunk < g.t ? c0 + g.chunk : g.t;
    float* pr = partial + item * g.stride;
    const float* w = sc + row * g.t;
    float acc = 0.0f, wbias = 0.0f;
    const bool live = pr[g.d] != ninf;
    const int64_t stored_end = c1 < g.nq ? c1 : g.nq;
    for (int64_t tok = c0; live && tok < stored_end; ++tok) {
      const float wt = w[tok];
      if (wt == 0.0f) continue;
      const int64_t at = (gs * g.nq + tok) * g.ng + c;
      const float ws = wt * dev::half_to_float(vs[at]);
      wbias += wt * dev::half_to_float(vm[at]);
      acc += ws * code_at(vc + (gs * g.nq + tok) * g.dp, j, g.d, g.bits);
    }
    acc += wbias;
    for (int64_t tok = c0 > g.nq ? c0 : g.nq; live && tok < c1; ++tok) {
      const float wt = w[tok];
      if (wt == 0.0f) continue;
      acc += wt * vt[(gs * g.tf + (tok - g.nq)) * g.d + j];
    }
    pr[j] = acc;
  });

  // 4. merge: out = sum_c acc_c e^(m_c - M) * (1 / sum_c l_c e^(m_c - M)); zeros where nothing is visible.
  dev::for_each(launch, kOp, rows * g.d, [=] PAREKIT_HD(int64_t i) {
    const int64_t j = i % g.d, row = i / g.d;
    const float* first = partial + row * g.nchunks * g.stride;
    float top = ninf;
    for (int64_t c = 0; c < g.nchunks; ++c) {
      const float m = first[c * g.stride + g.d];
      top = top < m ? m : top;  // std::max's comparison (a NaN max is ignored)
    }
    float o = 0.0f;
    if (top != ninf) {
      float total = 0.0f;
      for (int64_t c = 0; c < g.nchunks; ++c) {
        const float* pc = first + c * g.stride;
        if (pc[g.d] == ninf) continue;
        const float f = exp_hd(pc[g.d] - top);
        total += pc[g.d + 1] * f;
        o += pc[j] * f;
      }
      const float inv = 1.0f / total;
      o *= inv;
    }
    out[i] = o;
  });
}

}  // namespace parekit
