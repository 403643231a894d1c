// parekit::KvQuantAttention: attention of query [B, Hq, S, D] over keys/values dequantize(store) ++ tail,
// reading the packed codes directly (no float cache is materialized).
//
// Per (batch, query head) item and query row:
//   scores: for each key group (one float16 scale/min per channel over `group` tokens) the query is folded
//           into the scale once, qs = q * scale_k, bias = q . min_k, and each stored token costs one dot
//           product of qs with its unpacked codes (KIVI's trick); tail tokens are plain dot products;
//   softmax over the visible positions (exponentials by a vectorizable Cephes-style polynomial,
//           ~1 ulp); rows with no visible key give zeros;
//   output:  per stored token, w = p * scale_v per channel group times the codes, plus p * min_v per group;
//           tail tokens p * v.
// Grouped-query attention: query head h reads KV head h / (Hq / Hkv). Floats are accumulated in float32
// in a different order than the reference (float64), so results agree to ~1e-6 relative, not bit-exactly.
#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <vector>

#include "fast_exp.h"
#include "kv_quant_attention_cuda.h"
#include "kv_quant_format.h"

namespace parekit {
namespace {

constexpr const char* kOp = "KvQuantAttention";

// float16 bits -> float32 without branches (vectorizable): exact for zeros, subnormals and normals (the
// exponent is rebased by a multiplication by 2^112), inf and NaN keep an all-ones exponent.
PAREKIT_KVQ_INLINE float half_to_float_fast(uint16_t h) {
  const uint32_t em = static_cast<uint32_t>(h & 0x7fffu);
  uint32_t bits = em << 13;
  float f;
  std::memcpy(&f, &bits, sizeof f);
  f *= 5.192296858534828e33f;  // 2^112
  uint32_t out;
  std::memcpy(&out, &f, sizeof out);
  const uint32_t special = (em << 13) | 0x7f800000u;
  out = em >= 0x7c00u ? special : out;
  out |= static_cast<uint32_t>(h & 0x8000u) << 16;
  std::memcpy(&f, &out, sizeof f);
  return f;
}


// Sum of a[j] * b[j] with eight partial sums (a fixed association the compiler can vectorize).
PAREKIT_KVQ_INLINE float dot(const float* a, const float* b, int64_t n) {
  float acc[8] = {0, 0, 0, 0, 0, 0, 0, 0};
  int64_t j = 0;
  for (; j + 8 <= n; j += 8) {
    for (int l = 0; l < 8; ++l) acc[l] += a[j + l] * b[j + l];
  }
  float tail = 0.0f;
  for (; j < n; ++j) tail += a[j] * b[j];
  return ((acc[0] + acc[4]) + (acc[1] + acc[5])) + ((acc[2] + acc[6]) + (acc[3] + acc[7])) + tail;
}

// Sum of a[0..n) with eight partial sums.
PAREKIT_KVQ_INLINE float sum(const float* a, int64_t n) {
  float part[8] = {0, 0, 0, 0, 0, 0, 0, 0};
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) {
    for (int l = 0; l < 8; ++l) part[l] += a[i + l];
  }
  float tail = 0.0f;
  for (; i < n; ++i) tail += a[i];
  return ((part[0] + part[4]) + (part[1] + part[5])) + ((part[2] + part[6]) + (part[3] + part[7])) + tail;
}

// Broadcast strides of a rank-4 mask over [B, Hq, S, T] (0 where the mask's dim is 1).
struct MaskView {
  const bool* data;
  int64_t sb, sh, ss, st;
  PAREKIT_KVQ_INLINE bool at(int64_t b, int64_t h, int64_t s, int64_t t) const { return data[b * sb + h * sh + s * ss + t * st]; }
};

// The geometry and data of one call, shared by the work items.
struct Problem {
  int64_t b, hq, hkv, s, d, nq, tf, t, bits, group, rep, dp, ng, kgroups, rows, chunk, nchunks, stride;
  float scale;
  MaskView mv;
  const float* qp;
  const int8_t *kcp, *vcp;
  const uint16_t *ksp, *kmp, *vsp, *vmp;
  const float *ktp, *vtp;
  float* partial;  // [B * Hkv * nchunks, rows, d + 2]: per chunk and row, acc[d], max, sum
};

// Floats of scratch one thread needs for attend_chunk.
int64_t scratch_floats(const Problem& p) { return p.rows * p.chunk + (2 * p.rows + 3) * p.d + p.rows * p.ng + p.rows; }

// One work item: a (batch, KV head, chunk of whole key groups) triple. Writes, per query row sharing the
// KV head, the chunk's partial softmax (max, sum of exponentials, unnormalized output) for the merge.
PAREKIT_KVQ_HOT void attend_chunk(const Problem& pb, int64_t item, float* buf) {
  const int64_t rows = pb.rows, chunk = pb.chunk, d = pb.d, s = pb.s, ng = pb.ng, nq = pb.nq, t = pb.t;
  const int64_t nchunks = pb.nchunks, stride = pb.stride, rep = pb.rep, hkv = pb.hkv, hq = pb.hq;
  const int64_t group_ = pb.group, bits_ = pb.bits, dp = pb.dp, tf = pb.tf, kgroups = pb.kgroups;
  const float scale = pb.scale;
  const MaskView& mv = pb.mv;
  const float* qp = pb.qp;
  const int8_t *kcp = pb.kcp, *vcp = pb.vcp;
  const uint16_t *ksp = pb.ksp, *kmp = pb.kmp, *vsp = pb.vsp, *vmp = pb.vmp;
  const float *ktp = pb.ktp, *vtp = pb.vtp;
  float* sc = buf;                // [rows, chunk]: scores, then exponentials
  float* qs = sc + rows * chunk;  // [rows, d]: query times the key group's scales
  float* qrows = qs + rows * d;   // [rows, d]: the rows' queries, scaled
  float* codes = qrows + rows * d;
  float* s_f = codes + d;
  float* m_f = s_f + d;
  float* wbias = m_f + d;           // [rows, ng]: sum of p * min per value channel group
  float* bias = wbias + rows * ng;  // [rows]: q . min of the current key group
  const int64_t ci = item % nchunks, g = item / nchunks, bi = g / hkv;
  const int64_t c0 = ci * chunk, c1 = std::min(t, c0 + chunk), n = c1 - c0;
  float* part = pb.partial + item * rows * stride;
  const int8_t* kcr = kcp + g * nq * dp;
  const uint16_t* ksr = ksp + g * kgroups * d;
  const uint16_t* kmr = kmp + g * kgroups * d;
  const float* ktr = ktp + g * tf * d;
  const int8_t* vcr = vcp + g * nq * dp;
  const uint16_t* vsr = vsp + g * nq * ng;
  const uint16_t* vmr = vmp + g * nq * ng;
  const float* vtr = vtp + g * tf * d;
  auto head = [&](int64_t r) { return (g % hkv) * rep + r / s; };
  for (int64_t r = 0; r < rows; ++r) {
    const float* qrow = qp + ((bi * hq + head(r)) * s + r % s) * d;
    for (int64_t j = 0; j < d; ++j) qrows[r * d + j] = qrow[j] * scale;
  }
  // 1. scores over the chunk (masked: -inf)
  const float ninf = -std::numeric_limits<float>::infinity();
  for (int64_t tok = c0; tok < std::min(c1, nq); ++tok) {
    if ((tok - c0) % group_ == 0 || tok == c0) {
      const int64_t gi = tok / group_;
      for (int64_t j = 0; j < d; ++j) {
        s_f[j] = half_to_float_fast(ksr[gi * d + j]);
        m_f[j] = half_to_float_fast(kmr[gi * d + j]);
      }
      for (int64_t r = 0; r < rows; ++r) {
        for (int64_t j = 0; j < d; ++j) qs[r * d + j] = qrows[r * d + j] * s_f[j];
        bias[r] = dot(qrows + r * d, m_f, d);
      }
    }
    kvq::unpack_row(kcr + tok * dp, d, bits_, codes);
    for (int64_t r = 0; r < rows; ++r) {
      sc[r * chunk + (tok - c0)] =
          mv.at(bi, head(r), r % s, tok) ? dot(qs + r * d, codes, d) + bias[r] : ninf;
    }
  }
  for (int64_t tok = std::max(c0, nq); tok < c1; ++tok) {
    const float* kv = ktr + (tok - nq) * d;
    for (int64_t r = 0; r < rows; ++r) {
      sc[r * chunk + (tok - c0)] = mv.at(bi, head(r), r % s, tok) ? dot(qrows + r * d, kv, d) : ninf;
    }
  }
  // 2. per row: chunk maximum, exponentials, their sum
  for (int64_t r = 0; r < rows; ++r) {
    float* e = sc + r * chunk;
    float top = ninf;
    for (int64_t i = 0; i < n; ++i) top = e[i] > top ? e[i] : top;
    float* pr = part + r * stride;
    pr[d] = top;
    pr[d + 1] = 0.0f;
    if (top == ninf) continue;  // nothing visible in this chunk
    for (int64_t i = 0; i < n; ++i) e[i] = exp_nonpositive(e[i] - top);
    pr[d + 1] = sum(e, n);
  }
  // 3. unnormalized outputs
  for (int64_t r = 0; r < rows; ++r) {
    std::fill(part + r * stride, part + r * stride + d, 0.0f);
    std::fill(wbias + r * ng, wbias + (r + 1) * ng, 0.0f);
  }
  for (int64_t tok = c0; tok < std::min(c1, nq); ++tok) {
    kvq::unpack_row(vcr + tok * dp, d, bits_, codes);
    for (int64_t c = 0; c < ng; ++c) {
      s_f[c] = half_to_float_fast(vsr[tok * ng + c]);
      m_f[c] = half_to_float_fast(vmr[tok * ng + c]);
    }
    for (int64_t r = 0; r < rows; ++r) {
      const float w = sc[r * chunk + (tok - c0)];
      if (w == 0.0f || part[r * stride + d] == ninf) continue;
      float* acc = part + r * stride;
      for (int64_t c = 0; c < ng; ++c) {
        const float ws = w * s_f[c];
        wbias[r * ng + c] += w * m_f[c];
        float* a = acc + c * group_;
        const float* cd = codes + c * group_;
        for (int64_t j = 0; j < group_; ++j) a[j] += ws * cd[j];
      }
    }
  }
  for (int64_t r = 0; r < rows; ++r) {
    float* acc = part + r * stride;
    for (int64_t c = 0; c < ng; ++c) {
      for (int64_t j = 0; j < group_; ++j) acc[c * group_ + j] += wbias[r * ng + c];
    }
  }
  for (int64_t tok = std::max(c0, nq); tok < c1; ++tok) {
    const float* v = vtr + (tok - nq) * d;
    for (int64_t r = 0; r < rows; ++r) {
      const float w = sc[r * chunk + (tok - c0)];
      if (w == 0.0f || part[r * stride + d] == ninf) continue;
      float* acc = part + r * stride;
      for (int64_t j = 0; j < d; ++j) acc[j] += w * v[j];
    }
  }
}

// The shape rule (OpSpec::shapes): validates the ten inputs as the kernel does and gives [B, Hq, S, D].
// The store checks are kv_quant_format.h's, run on data-less tensors (they read shapes only).
std::vector<Shape> kv_quant_attention_shapes(const std::vector<Shape>& in, const Attrs& a) {
  const int64_t bits = a.get_int("bits"), group = a.get_int("group");
  auto view = [&](size_t i) {
    ConstTensor t;
    t.shape = in.at(i);
    return t;
  };
  const ConstTensor q = view(0), kt = view(4), vt = view(8), mask = view(9);
  expect_rank(kOp, "query", q, 4);
  expect_rank(kOp, "k_tail", kt, 4);
  const int64_t b = q.dim(0), hq = q.dim(1), s = q.dim(2), d = q.dim(3);
  const int64_t hkv = kt.dim(1), tf = kt.dim(2);
  if (kt.dim(0) != b || kt.dim(3) != d) {
    fail(kOp, "input 'k_tail' has shape " + shape_text(kt.shape) + ", expected [" + std::to_string(b) +
                  ", Hkv, Tf, " + std::to_string(d) + "] like 'query' " + shape_text(q.shape));
  }
  if (hkv == 0 || hq % hkv != 0) {
    fail(kOp, "query heads Hq = " + std::to_string(hq) + " are not a multiple of the KV heads Hkv = " +
                  std::to_string(hkv) + " ('query' " + shape_text(q.shape) + ", 'k_tail' " +
                  shape_text(kt.shape) + ")");
  }
  if (vt.shape != kt.shape) {
    fail(kOp, "input 'v_tail' has shape " + shape_text(vt.shape) + ", expected 'k_tail''s " + shape_text(kt.shape));
  }
  const int64_t nq = kvq::check_store(kOp, view(1), view(2), view(3), b, hkv, d, bits, group, true, "k_");
  const int64_t nqv = kvq::check_store(kOp, view(5), view(6), view(7), b, hkv, d, bits, group, false, "v_");
  if (nqv != nq) {
    fail(kOp, "the value store holds " + std::to_string(nqv) + " tokens, the key store " + std::to_string(nq));
  }
  const int64_t t = nq + tf;
  expect_rank(kOp, "mask", mask, 4);
  const Shape full{b, hq, s, t};
  for (size_t i = 0; i < 4; ++i) {
    if (mask.dim(i) != 1 && mask.dim(i) != full[i]) {
      fail(kOp, "input 'mask' has shape " + shape_text(mask.shape) + ", which does not broadcast to [B, Hq, S, T] = " +
                    shape_text(full));
    }
  }
  return {{b, hq, s, d}};
}

class KvQuantAttentionKernel : public Kernel {
 public:
  explicit KvQuantAttentionKernel(const Attrs& a)
      : attrs_(a), bits_(a.get_int("bits")), group_(a.get_int("group")), scale_(a.get_float("scale")) {}

  void compute(Context& ctx) const override {
    const ConstTensor q = ctx.input(0);
    const ConstTensor kc = ctx.input(1), ks = ctx.input(2), km = ctx.input(3), kt = ctx.input(4);
    const ConstTensor vc = ctx.input(5), vs = ctx.input(6), vm = ctx.input(7), vt = ctx.input(8);
    const ConstTensor mask = ctx.input(9);
    std::vector<Shape> shapes;
    for (const ConstTensor* in : {&q, &kc, &ks, &km, &kt, &vc, &vs, &vm, &vt, &mask}) shapes.push_back(in->shape);
    const Shape out_shape = kv_quant_attention_shapes(shapes, attrs_).at(0);
    const int64_t b = q.dim(0), hq = q.dim(1), s = q.dim(2), d = q.dim(3);
    const int64_t hkv = kt.dim(1), tf = kt.dim(2), nq = kc.dim(2), t = nq + tf;
    Tensor out = ctx.output(0, out_shape);
    if (b == 0 || hq == 0 || s == 0 || d == 0) return;
    MaskView mv{mask.as<bool>(), 0, 0, 0, 0};
    {
      int64_t stride = 1;
      int64_t* strides[4] = {&mv.sb, &mv.sh, &mv.ss, &mv.st};
      for (int i = 3; i >= 0; --i) {
        *strides[i] = mask.dim(static_cast<size_t>(i)) == 1 ? 0 : stride;
        stride *= mask.dim(static_cast<size_t>(i));
      }
    }
    const float scale = scale_ > 0.0f ? scale_ : 1.0f / std::sqrt(static_cast<float>(d));
    const int64_t rep = hq / hkv, dp = d / kvq::codes_per_byte(bits_), ng = d / group_;
    float* op = out.as<float>();
    const int64_t kgroups = nq / group_;
    const int64_t rows = rep * s;  // the query rows that share one KV head
    // Token chunks (whole key groups) are the unit of work; each yields, per row, a partial softmax
    // (max, sum of exponentials, unnormalized output) that the merge below combines.
    const int64_t chunk = kv_quant_attention_chunk(group_);
    const int64_t nchunks = kv_quant_attention_chunks(t, group_);
    const int64_t stride = d + 2;  // per row: acc[d], max, sum
    std::vector<float> partial(static_cast<size_t>(b * hkv * nchunks * rows * stride));
    const Problem pb{b,        hq,        hkv,       s,          d,         nq,        tf,           t,
                     bits_,    group_,    rep,       dp,         ng,        kgroups,   rows,         chunk,
                     nchunks,  stride,    scale,     mv,         q.as<float>(),        kc.as<int8_t>(),
                     vc.as<int8_t>(),     ks.as<uint16_t>(),     km.as<uint16_t>(),    vs.as<uint16_t>(),
                     vm.as<uint16_t>(),   kt.as<float>(),        vt.as<float>(),       partial.data()};

    ctx.parallel_for(b * hkv * nchunks, static_cast<double>(rows * chunk * d * 2), [&](int64_t begin, int64_t end) {
      std::vector<float> buf(static_cast<size_t>(scratch_floats(pb)));
      for (int64_t item = begin; item < end; ++item) attend_chunk(pb, item, buf.data());
    });

    // 4. merge the chunks of each row: out = sum_c acc_c e^(m_c - M) / sum_c l_c e^(m_c - M)
    ctx.parallel_for(b * hkv * rows, static_cast<double>(nchunks * d), [&](int64_t begin, int64_t end) {
      for (int64_t item = begin; item < end; ++item) {
        const int64_t g = item / rows, r = item % rows, bi = g / hkv;
        const int64_t h = (g % hkv) * rep + r / s;
        float* orow = op + ((bi * hq + h) * s + r % s) * d;
        const float* first = partial.data() + (g * nchunks * rows + r) * stride;
        float top = -std::numeric_limits<float>::infinity();
        for (int64_t c = 0; c < nchunks; ++c) top = std::max(top, first[c * rows * stride + d]);
        std::fill(orow, orow + d, 0.0f);
        if (top == -std::numeric_limits<float>::infinity()) continue;  // no visible key: zeros
        float total = 0.0f;
        for (int64_t c = 0; c < nchunks; ++c) {
          const float* pr = first + c * rows * stride;
          if (pr[d] == -std::numeric_limits<float>::infinity()) continue;
          const float f = std::exp(pr[d] - top);
          total += pr[d + 1] * f;
          for (int64_t j = 0; j < d; ++j) orow[j] += pr[j] * f;
        }
        const float inv = 1.0f / total;
        for (int64_t j = 0; j < d; ++j) orow[j] *= inv;
      }
    });
  }

 private:
  Attrs attrs_;
  int64_t bits_, group_;
  float scale_;
};

}  // namespace

void register_kv_quant_attention(std::vector<OpSpec>& ops) {
  OpSpec spec;
  spec.name = kOp;
  spec.version = "1";
  spec.inputs = {"query", "k_codes", "k_scale", "k_min", "k_tail", "v_codes", "v_scale", "v_min", "v_tail", "mask"};
  spec.outputs = {"context"};
  spec.attrs = {int_attr("bits", 8, true, 4, true, 8), int_attr("group", 32, true, 1), float_attr("scale", 0.0f, true, 0.0)};
  spec.variants.push_back({{DType::kFloat32, DType::kInt8, DType::kFloat16, DType::kFloat16, DType::kFloat32, DType::kInt8,
                            DType::kFloat16, DType::kFloat16, DType::kFloat32, DType::kBool},
                           {DType::kFloat32}});
  spec.create = [](const Attrs& a) { return std::make_unique<KvQuantAttentionKernel>(a); };
  spec.shapes = kv_quant_attention_shapes;
  ops.push_back(std::move(spec));
}

}  // namespace parekit
