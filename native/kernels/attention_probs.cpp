// parekit::AttentionProbs{scale}(q [B, H, S, D], k [B, H, T, D], mask bool [B, 1|H, S, T]) -> probs [B, H, S, T]
// (parekit/ops/attention_probs.py): softmax over T of scale * q.k where the mask is true, rows with no
// visible key all zero, scale 0 = 1/sqrt(D).
//
// Fused and numerically stable, float32 throughout (the reference is float64; they agree within 1e-5):
// per (batch, head) the keys are transposed once into [D, T] so that a block of 4 query rows times 16 keys
// is a register tile of independent sums (vectorizable without reassociation), computed only over the
// span of keys the block's mask rows can see (causal masks skip the upper triangle); then per row the
// masked maximum, exp(s - max) (a vectorizable Cephes-style expf), the sum (double lanes) and one scale.
// Parallel over (batch, head, block of 16 query rows).
#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <string>
#include <vector>

#include "core.h"
#include "fast_exp.h"

namespace parekit {
namespace {

constexpr int64_t kKeyTile = 16;    // keys per register tile
constexpr int64_t kRowTile = 4;     // query rows per register tile
constexpr int64_t kRowsPerItem = 16;  // query rows per parallel item


// x86-64: the hot loops are compiled for AVX-512, AVX2 and the baseline, picked at load time (GCC/Clang
// function multiversioning); the arithmetic is the same plain float32 mul + add in every version.
#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
#define PAREKIT_HOT __attribute__((target_clones("arch=x86-64-v4", "arch=x86-64-v3", "default")))
#else
#define PAREKIT_HOT
#endif

// 16 floats; GCC/Clang lower it to the widest vectors the function's target has (4 SSE, 2 AVX2 or
// 1 AVX-512 register).
typedef float Lanes __attribute__((vector_size(64)));

// (a macro, not a function: a function returning Lanes would change the ABI between the clones)
#define PAREKIT_LOAD_LANES(v, p) std::memcpy(&(v), (p), sizeof(Lanes))

// Sum of the 16 lanes as a tree of half-width vector adds.
inline float lane_sum(const Lanes& v) {
  typedef float Half __attribute__((vector_size(32)));
  typedef float Quarter __attribute__((vector_size(16)));
  Half a, b;
  std::memcpy(&a, &v, sizeof a);
  std::memcpy(&b, reinterpret_cast<const unsigned char*>(&v) + sizeof a, sizeof b);
  a += b;
  Quarter c, e;
  std::memcpy(&c, &a, sizeof c);
  std::memcpy(&e, reinterpret_cast<const unsigned char*>(&a) + sizeof c, sizeof e);
  c += e;
  return (c[0] + c[2]) + (c[1] + c[3]);
}

// scores[r * pitch + t] = dot(q row r, key t) for r < rows and t in [t_lo, t_hi), with t_lo a multiple
// of kKeyTile, from the keys in tiles kt [T / kKeyTile][D][kKeyTile] (one contiguous block each) and the
// query rows qt [kRowTile][D] (zero rows past `rows`): a register tile of kRowTile rows by kKeyTile keys.
PAREKIT_HOT void tiled_dots(const float* qt, int64_t rows, int64_t d, const float* kt, int64_t t_lo, int64_t t_hi,
                            float* scores, int64_t pitch) {
  static_assert(kKeyTile == 16 && kRowTile == 4, "the register tile is 4 rows of one Lanes");
  const float *q0 = qt, *q1 = qt + d, *q2 = qt + 2 * d, *q3 = qt + 3 * d;
  for (int64_t t0 = t_lo; t0 < t_hi; t0 += kKeyTile) {
    const float* tile = kt + t0 * d;
    Lanes a0 = {}, a1 = {}, a2 = {}, a3 = {};
    for (int64_t x = 0; x < d; ++x) {
      Lanes k;
      PAREKIT_LOAD_LANES(k, tile + x * kKeyTile);
      a0 += q0[x] * k;
      a1 += q1[x] * k;
      a2 += q2[x] * k;
      a3 += q3[x] * k;
    }
    const Lanes* acc[kRowTile] = {&a0, &a1, &a2, &a3};
    for (int64_t r = 0; r < rows; ++r) std::memcpy(scores + r * pitch + t0, acc[r], sizeof(Lanes));
  }
}

// The same for one query row straight from the keys [T, D] (decode steps: no transposition), 16
// partial sums per key.
PAREKIT_HOT void direct_dots(const float* q, int64_t d, const float* keys, int64_t t_lo, int64_t t_hi, float* scores) {
  for (int64_t t = t_lo; t < t_hi; ++t) {
    const float* k = keys + t * d;
    Lanes acc = {};
    int64_t x = 0;
    for (; x + kKeyTile <= d; x += kKeyTile) {
      Lanes qv, kv;
      PAREKIT_LOAD_LANES(qv, q + x);
      PAREKIT_LOAD_LANES(kv, k + x);
      acc += qv * kv;
    }
    float sum = lane_sum(acc);
    for (; x < d; ++x) sum += q[x] * k[x];
    scores[t] = sum;
  }
}

// One output row: softmax over [a, z) of scale * scores where the mask is true; zeros elsewhere and for
// a row with no visible key. `sc` is overwritten.
PAREKIT_HOT void softmax_row(float* sc, const unsigned char* m, int64_t a, int64_t z, int64_t t, float scale,
                             float* o) {
  if (a >= z) {
    std::fill(o, o + t, 0.0f);
    return;
  }
  const float neg_inf = -std::numeric_limits<float>::infinity();
  float top = neg_inf;
  for (int64_t j = a; j < z; ++j) {
    const float v = m[j] ? sc[j] * scale : neg_inf;
    sc[j] = v;
    top = v > top ? v : top;
  }
  if (!std::isfinite(top)) top = 0.0f;  // as the reference: no finite maximum, shift by 0
  for (int64_t j = a; j < z; ++j) sc[j] = exp_nonpositive(sc[j] - top);
  double lanes[8] = {0, 0, 0, 0, 0, 0, 0, 0};
  int64_t j = a;
  for (; j + 8 <= z; j += 8) {
    for (int64_t l = 0; l < 8; ++l) lanes[l] += static_cast<double>(sc[j + l]);
  }
  for (; j < z; ++j) lanes[0] += static_cast<double>(sc[j]);
  const double total = ((lanes[0] + lanes[1]) + (lanes[2] + lanes[3])) + ((lanes[4] + lanes[5]) + (lanes[6] + lanes[7]));
  std::fill(o, o + a, 0.0f);
  if (total > 0.0) {
    const double inv = 1.0 / total;
    for (int64_t x = a; x < z; ++x) o[x] = static_cast<float>(static_cast<double>(sc[x]) * inv);
  } else {
    std::fill(o + a, o + z, 0.0f);
  }
  std::fill(o + z, o + t, 0.0f);
}

std::vector<Shape> attention_probs_shapes(const std::vector<Shape>& in, const Attrs&) {
  static const std::string op = "AttentionProbs";
  const Shape& q = in.at(0);
  const Shape& k = in.at(1);
  const Shape& mask = in.at(2);
  expect_rank(op, "q", q, 4);
  expect_rank(op, "k", k, 4);
  expect_rank(op, "mask", mask, 4);
  const int64_t b = q[0], h = q[1], s = q[2], d = q[3], t = k[2];
  if (k[0] != b || k[1] != h || k[3] != d) {
    fail(op, "input 'k' " + shape_text(k) + " must be [B, H, T, D] for q " + shape_text(q));
  }
  const int64_t mh = mask[1];
  if (mask[0] != b || (mh != 1 && mh != h) || mask[2] != s || mask[3] != t) {
    fail(op, "input 'mask' " + shape_text(mask) + " must be [B, 1 or H, S, T] for q " + shape_text(q) + " and k " +
                 shape_text(k));
  }
  return {{b, h, s, t}};
}

class AttentionProbsKernel : public Kernel {
 public:
  explicit AttentionProbsKernel(const Attrs& a) : scale_(a.get_float("scale")) {}

  void compute(Context& ctx) const override {
    const ConstTensor q = ctx.input(0), k = ctx.input(1), mask = ctx.input(2);
    const Shape out_shape = attention_probs_shapes({q.shape, k.shape, mask.shape}, Attrs{}).at(0);
    const int64_t b = q.dim(0), h = q.dim(1), s = q.dim(2), d = q.dim(3), t = k.dim(2);
    const int64_t mh = mask.dim(1);
    Tensor out = ctx.output(0, out_shape);
    if (out.size() == 0) return;
    const float scale = scale_ != 0.0f ? scale_ : static_cast<float>(1.0 / std::sqrt(static_cast<double>(d)));
    const float* qd = q.as<float>();
    const float* kd = k.as<float>();
    const auto* md = static_cast<const unsigned char*>(mask.data);
    float* od = out.as<float>();
    const int64_t t_pad = (t + kKeyTile - 1) / kKeyTile * kKeyTile;
    const int64_t blocks = (s + kRowsPerItem - 1) / kRowsPerItem;
    const double cost = static_cast<double>(std::min(s, kRowsPerItem) * t * (d + 4) + t * d / blocks);

    // Few query rows per head (decode): dots straight from the keys; else transpose the keys once per head.
    const bool direct = s < kRowTile;
    ctx.parallel_for(b * h * blocks, cost, [&](int64_t begin, int64_t end) {
      std::vector<float> kt(direct ? 0 : static_cast<size_t>(d * t_pad));
      std::vector<float> scores(static_cast<size_t>(kRowTile * t_pad));
      std::vector<float> qtile(direct ? 0 : static_cast<size_t>(kRowTile * d));
      int64_t transposed = -1;  // the (batch, head) whose keys kt holds
      for (int64_t item = begin; item < end; ++item) {
        const int64_t bh = item / blocks, block = item % blocks;
        const float* keys = kd + bh * t * d;
        if (!direct && bh != transposed) {
          for (int64_t t0 = 0; t0 < t_pad; t0 += kKeyTile) {  // key tiles [D][kKeyTile], zero-padded
            float* tile = kt.data() + t0 * d;
            for (int64_t j = 0; j < kKeyTile; ++j) {
              if (t0 + j < t) {
                const float* key = keys + (t0 + j) * d;
                for (int64_t x = 0; x < d; ++x) tile[x * kKeyTile + j] = key[x];
              } else {
                for (int64_t x = 0; x < d; ++x) tile[x * kKeyTile + j] = 0.0f;
              }
            }
          }
          transposed = bh;
        }
        const int64_t bi = bh / h, hi = bh % h;
        const unsigned char* mrows = md + (bi * mh + (mh == 1 ? 0 : hi)) * s * t;
        const int64_t s_end = std::min(s, (block + 1) * kRowsPerItem);
        for (int64_t s0 = block * kRowsPerItem; s0 < s_end; s0 += kRowTile) {
          const int64_t rows = std::min(kRowTile, s_end - s0);
          // visible span of each row and of the tile
          int64_t lo[kRowTile], hi_t[kRowTile];
          int64_t span_lo = t, span_hi = 0;
          for (int64_t r = 0; r < rows; ++r) {
            const unsigned char* m = mrows + (s0 + r) * t;
            int64_t a = 0, z = t;
            while (a < t && !m[a]) ++a;
            while (z > a && !m[z - 1]) --z;
            lo[r] = a;
            hi_t[r] = z;
            if (a < z) {
              span_lo = std::min(span_lo, a);
              span_hi = std::max(span_hi, z);
            }
          }
          const float* qrows = qd + (bh * s + s0) * d;
          if (span_lo < span_hi) {
            if (direct) {
              for (int64_t r = 0; r < rows; ++r) {
                if (lo[r] < hi_t[r]) direct_dots(qrows + r * d, d, keys, lo[r], hi_t[r], scores.data() + r * t_pad);
              }
            } else {
              std::copy(qrows, qrows + rows * d, qtile.begin());
              std::fill(qtile.begin() + rows * d, qtile.end(), 0.0f);
              tiled_dots(qtile.data(), rows, d, kt.data(), span_lo / kKeyTile * kKeyTile, span_hi, scores.data(), t_pad);
            }
          }
          for (int64_t r = 0; r < rows; ++r) {
            softmax_row(scores.data() + r * t_pad, mrows + (s0 + r) * t, lo[r], hi_t[r], t, scale,
                        od + (bh * s + s0 + r) * t);
          }
        }
      }
    });
  }

 private:
  float scale_;
};

}  // namespace

void register_attention_probs(std::vector<OpSpec>& ops) {
  OpSpec spec;
  spec.name = "AttentionProbs";
  spec.version = "1";
  spec.inputs = {"q", "k", "mask"};
  spec.outputs = {"probs"};
  spec.attrs = {float_attr("scale", 0.0f, true, 0.0)};
  spec.variants.push_back({{DType::kFloat32, DType::kFloat32, DType::kBool}, {DType::kFloat32}});
  spec.create = [](const Attrs& a) { return std::make_unique<AttentionProbsKernel>(a); };
  spec.shapes = attention_probs_shapes;
  ops.push_back(std::move(spec));
}

}  // namespace parekit
