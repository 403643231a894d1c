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

namespace parekit {
namespace {

constexpr int64_t kKeyTile = 16;    // keys per register tile
constexpr int64_t kRowTile = 4;     // query rows per register tile
constexpr int64_t kRowsPerItem = 16;  // query rows per parallel item

// exp(x) for x <= 0 (the shifted scores): range reduction by ln 2 and Cephes' expf polynomial, ~1 ulp;
// 0 below -87.5 (where the float64 reference's result is < 1e-38) and for -inf (masked keys).
inline float exp_nonpositive(float x) {
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
  float two_n;
  std::memcpy(&two_n, &bits, sizeof two_n);
  const float e = p * two_n;
  return x >= -87.5f ? e : (x != x ? x : 0.0f);
}

// scores[r][t - t0] = dot(q row r, key t) for rows < kRowTile (all computed; unused ones are zero rows)
// and keys t in [t0, t0 + kKeyTile), from the transposed keys kt [D, t_pad].
inline void tile_dots(const float* q, int64_t d, const float* kt, int64_t t_pad, int64_t t0,
                      float acc[kRowTile][kKeyTile]) {
  for (int64_t r = 0; r < kRowTile; ++r) {
    for (int64_t j = 0; j < kKeyTile; ++j) acc[r][j] = 0.0f;
  }
  for (int64_t x = 0; x < d; ++x) {
    const float* krow = kt + x * t_pad + t0;
    for (int64_t r = 0; r < kRowTile; ++r) {
      const float qv = q[r * d + x];
      for (int64_t j = 0; j < kKeyTile; ++j) acc[r][j] += qv * krow[j];
    }
  }
}

// The same for one query row (decode steps): 4 tiles of keys at a time.
inline void row_dots(const float* q, int64_t d, const float* kt, int64_t t_pad, int64_t t0, float acc[kKeyTile]) {
  for (int64_t j = 0; j < kKeyTile; ++j) acc[j] = 0.0f;
  for (int64_t x = 0; x < d; ++x) {
    const float* krow = kt + x * t_pad + t0;
    const float qv = q[x];
    for (int64_t j = 0; j < kKeyTile; ++j) acc[j] += qv * krow[j];
  }
}

class AttentionProbsKernel : public Kernel {
 public:
  explicit AttentionProbsKernel(const Attrs& a) : scale_(a.get_float("scale")) {}

  void compute(Context& ctx) const override {
    static const std::string op = "AttentionProbs";
    const ConstTensor q = ctx.input(0), k = ctx.input(1), mask = ctx.input(2);
    expect_rank(op, "q", q, 4);
    expect_rank(op, "k", k, 4);
    expect_rank(op, "mask", mask, 4);
    const int64_t b = q.dim(0), h = q.dim(1), s = q.dim(2), d = q.dim(3), t = k.dim(2);
    if (k.dim(0) != b || k.dim(1) != h || k.dim(3) != d) {
      fail(op, "input 'k' " + shape_text(k.shape) + " must be [B, H, T, D] for q " + shape_text(q.shape));
    }
    const int64_t mh = mask.dim(1);
    if (mask.dim(0) != b || (mh != 1 && mh != h) || mask.dim(2) != s || mask.dim(3) != t) {
      fail(op, "input 'mask' " + shape_text(mask.shape) + " must be [B, 1 or H, S, T] for q " + shape_text(q.shape) +
                   " and k " + shape_text(k.shape));
    }
    Tensor out = ctx.output(0, {b, h, s, t});
    if (out.size() == 0) return;
    const float scale = scale_ != 0.0f ? scale_ : static_cast<float>(1.0 / std::sqrt(static_cast<double>(d)));
    const float* qd = q.as<float>();
    const float* kd = k.as<float>();
    const auto* md = static_cast<const unsigned char*>(mask.data);
    float* od = out.as<float>();
    const int64_t t_pad = (t + kKeyTile - 1) / kKeyTile * kKeyTile;
    const int64_t blocks = (s + kRowsPerItem - 1) / kRowsPerItem;
    const double cost = static_cast<double>(std::min(s, kRowsPerItem) * t * (d + 4) + t * d / blocks);

    ctx.parallel_for(b * h * blocks, cost, [&](int64_t begin, int64_t end) {
      std::vector<float> kt(static_cast<size_t>(d * t_pad));
      std::vector<float> scores(static_cast<size_t>(kRowTile * t_pad));
      std::vector<float> qtile(static_cast<size_t>(kRowTile * d));
      int64_t transposed = -1;  // the (batch, head) whose keys kt holds
      for (int64_t item = begin; item < end; ++item) {
        const int64_t bh = item / blocks, block = item % blocks;
        if (bh != transposed) {
          const float* keys = kd + bh * t * d;
          for (int64_t x = 0; x < d; ++x) {
            float* dst = kt.data() + x * t_pad;
            for (int64_t j = 0; j < t; ++j) dst[j] = keys[j * d + x];
            std::fill(dst + t, dst + t_pad, 0.0f);
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
          const int64_t tile_lo = span_lo / kKeyTile * kKeyTile;
          const float* qrows = qd + (bh * s + s0) * d;
          if (span_lo < span_hi) {
            if (rows == 1) {
              float acc[kKeyTile];
              for (int64_t t0 = tile_lo; t0 < span_hi; t0 += kKeyTile) {
                row_dots(qrows, d, kt.data(), t_pad, t0, acc);
                std::memcpy(scores.data() + t0, acc, sizeof acc);
              }
            } else {
              std::fill(qtile.begin(), qtile.end(), 0.0f);
              std::copy(qrows, qrows + rows * d, qtile.begin());
              float acc[kRowTile][kKeyTile];
              for (int64_t t0 = tile_lo; t0 < span_hi; t0 += kKeyTile) {
                tile_dots(qtile.data(), d, kt.data(), t_pad, t0, acc);
                for (int64_t r = 0; r < rows; ++r) std::memcpy(scores.data() + r * t_pad + t0, acc[r], sizeof acc[r]);
              }
            }
          }
          for (int64_t r = 0; r < rows; ++r) {
            float* o = od + (bh * s + s0 + r) * t;
            const unsigned char* m = mrows + (s0 + r) * t;
            float* sc = scores.data() + r * t_pad;
            const int64_t a = lo[r], z = hi_t[r];
            if (a >= z) {  // no visible key: a zero row
              std::fill(o, o + t, 0.0f);
              continue;
            }
            const float neg_inf = -std::numeric_limits<float>::infinity();
            float top = neg_inf;
            for (int64_t j = a; j < z; ++j) {
              const float v = m[j] ? sc[j] * scale : neg_inf;
              sc[j] = v;
              top = v > top ? v : top;
            }
            if (!std::isfinite(top)) top = 0.0f;  // as the reference: no finite maximum, shift by 0
            double lanes[8] = {0, 0, 0, 0, 0, 0, 0, 0};
            int64_t j = a;
            for (; j + 8 <= z; j += 8) {
              for (int64_t l = 0; l < 8; ++l) {
                const float e = exp_nonpositive(sc[j + l] - top);
                sc[j + l] = e;
                lanes[l] += static_cast<double>(e);
              }
            }
            for (; j < z; ++j) {
              const float e = exp_nonpositive(sc[j] - top);
              sc[j] = e;
              lanes[0] += static_cast<double>(e);
            }
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
  ops.push_back(std::move(spec));
}

}  // namespace parekit
