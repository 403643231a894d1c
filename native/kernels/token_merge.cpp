// parekit::TokenMerge: ToMe bipartite soft matching. Oracle: TokenMerge.reference.
//
// Per batch row: normalize the free tokens' metric rows once (float64, like the reference), compute the
// cosine of every free A token (even positions) against every free B token (odd positions) as one
// [|A|, D] x [D, |B|] product, take the argmax per A row (real A tokens see padding B tokens at
// -PAD_PENALTY; similarities are rounded to the tokens' dtype first, as the reference does, so ties go to
// the lower index exactly as there), pick the r' best A tokens by partial selection (score descending,
// ties to the lower index; padding A tokens score BIG), then gather the survivors and scatter-add the
// merged ones into their partners (size-weighted mean in double; singletons are copied).
#include <algorithm>
#include <cmath>
#include <numeric>

#include "token_common.h"
#include "token_merge_cuda.h"

namespace parekit {
namespace {

constexpr const char* kOp = "TokenMerge";

// r' (merge_limit) is shared with the CUDA kernel: token_merge_limit in token_merge_cuda.h.
int64_t merge_limit(int64_t n, int64_t r, int64_t protect) { return token_merge_limit(n, r, protect); }

// tokens::expect_same_dim on shapes (the same message), for the shape rule.
void expect_same_dim(const char* name, const Shape& s, size_t axis, int64_t want, const Shape& ref) {
  if (s[axis] != want) {
    fail(kOp, std::string("input '") + name + "' has shape " + shape_text(s) + ": dim " + std::to_string(axis) +
                  " must be " + std::to_string(want) + " to match 'tokens' " + shape_text(ref));
  }
}

// The shape rule: tokens [B, N, C], metric [B, N, D], sizes [B, N] -> [B, M, C], [B, M], [B, N, M] with
// M = N - merge_limit(N, r, protect).
std::vector<Shape> token_merge_shapes(const std::vector<Shape>& in, const Attrs& a) {
  expect_rank(kOp, "tokens", in.at(0), 3);
  expect_rank(kOp, "metric", in.at(1), 3);
  expect_rank(kOp, "sizes", in.at(2), 2);
  const Shape &tokens = in[0], &metric = in[1], &sizes = in[2];
  for (size_t axis = 0; axis < 2; ++axis) {
    expect_same_dim("metric", metric, axis, tokens[axis], tokens);
    expect_same_dim("sizes", sizes, axis, tokens[axis], tokens);
  }
  const int64_t b = tokens[0], n = tokens[1], c = tokens[2];
  const int64_t m = n - merge_limit(n, a.get_int("r"), a.get_int("protect"));
  return {{b, m, c}, {b, m}, {b, n, m}};
}

class TokenMergeKernel : public Kernel {
 public:
  explicit TokenMergeKernel(const Attrs& a) : attrs_(a), r_(a.get_int("r")), protect_(a.get_int("protect")) {}

  void compute(Context& ctx) const override {
    const ConstTensor tokens = ctx.input(0), metric = ctx.input(1), sizes = ctx.input(2);
    const std::vector<Shape> shapes = token_merge_shapes({tokens.shape, metric.shape, sizes.shape}, attrs_);
    const int64_t b = tokens.dim(0), n = tokens.dim(1), c = tokens.dim(2), d = metric.dim(2);
    const int64_t r = merge_limit(n, r_, protect_);
    const int64_t m = n - r;
    Tensor out = ctx.output(0, shapes[0]);
    Tensor out_sizes = ctx.output(1, shapes[1]);
    Tensor assign = ctx.output(2, shapes[2]);
    const DType tt = tokens.dtype, mt = metric.dtype, zt = sizes.dtype;
    const size_t elem = dtype_size(tt);
    // The free A (even) and B (odd) positions; the reference uses i >= protect (not min(protect, n)).
    std::vector<int64_t> a_set, b_set;
    for (int64_t i = std::min(protect_, n); i < n; ++i) (i % 2 == 0 ? a_set : b_set).push_back(i);
    const int64_t na = static_cast<int64_t>(a_set.size()), nb = static_cast<int64_t>(b_set.size());
    const double pad_sim = tokens::round_to(tt, -tokens::kPadPenalty);
    // Bound of the float32 screen's error on a cosine: (D + 8) units of 2^-23 covers the unit vectors'
    // rounding (2 * 2^-24) and the D-term float sum (D * 2^-24), with a factor 2 to spare.
    const double eps = static_cast<double>(d + 8) * std::ldexp(1.0, -23);

    const double cost = static_cast<double>((r > 0 ? na * nb * d + n * d : 0) + n * (c + m));
    ctx.parallel_for(b, cost, [&](int64_t begin, int64_t end) {
      std::vector<double> unit_a(static_cast<size_t>(na * d)), unit_bt(static_cast<size_t>(nb * d));
      std::vector<double> score(static_cast<size_t>(na));
      std::vector<float> simf(static_cast<size_t>(nb)), unit_af(static_cast<size_t>(na * d)),
          unit_btf(static_cast<size_t>(nb * d));
      std::vector<int64_t> partner(static_cast<size_t>(n)), order(static_cast<size_t>(na));
      std::vector<int64_t> target(static_cast<size_t>(n)), counts(static_cast<size_t>(m) + 1);
      std::vector<int64_t> members(static_cast<size_t>(n)), cursor(static_cast<size_t>(m));
      std::vector<double> weights(static_cast<size_t>(n)), sz(static_cast<size_t>(n));
      std::vector<char> real(static_cast<size_t>(n)), merged(static_cast<size_t>(n));
      std::vector<double> row_buf(static_cast<size_t>(d));
      tokens::GroupScratch scratch;
      for (int64_t bi = begin; bi < end; ++bi) {
        const int64_t row = bi * n;
        for (int64_t i = 0; i < n; ++i) {
          sz[static_cast<size_t>(i)] = tokens::load(sizes.data, zt, row + i);
          real[static_cast<size_t>(i)] = sz[static_cast<size_t>(i)] > 0.0;
        }
        std::fill(merged.begin(), merged.end(), char{0});
        if (r > 0) {
          match(metric.data, mt, row * d, d, a_set, b_set, unit_a, unit_bt, row_buf);
          std::transform(unit_a.begin(), unit_a.end(), unit_af.begin(), [](double v) { return static_cast<float>(v); });
          std::transform(unit_bt.begin(), unit_bt.end(), unit_btf.begin(), [](double v) { return static_cast<float>(v); });
          for (int64_t ai = 0; ai < na; ++ai) {
            const int64_t i = a_set[static_cast<size_t>(ai)];
            const bool ri = real[static_cast<size_t>(i)];
            // Screen in float32: simf[jj] ~ <unit_i, unit_j>, one B column per lane (vectorizes).
            std::fill(simf.begin(), simf.end(), 0.0f);
            const float* uf = unit_af.data() + ai * d;
            for (int64_t k = 0; k < d; ++k) {
              const float u = uf[k];
              const float* bt = unit_btf.data() + k * nb;
              for (int64_t jj = 0; jj < nb; ++jj) simf[static_cast<size_t>(jj)] += u * bt[jj];
            }
            // |simf - sim| <= eps (float rounding of the unit vectors and of the D-term sum; |sim| <= 1).
            // A B token can hold the rounded maximum R only if round(simf + eps) >= round(max simf - eps);
            // those candidates (usually one) are recomputed exactly in float64.
            bool any_nan = false, any_allowed = false, any_pad = false;
            float fmax = 0.0f;
            for (int64_t jj = 0; jj < nb; ++jj) {
              if (!(real[static_cast<size_t>(b_set[static_cast<size_t>(jj)])] || !ri)) {
                any_pad = true;
                continue;
              }
              const float f = simf[static_cast<size_t>(jj)];
              if (std::isnan(f)) any_nan = true;
              if (!any_allowed || f > fmax) fmax = f;
              any_allowed = true;
            }
            double floor_r = any_pad ? pad_sim : -HUGE_VAL;
            if (any_allowed && !any_nan) floor_r = std::max(floor_r, tokens::round_to(tt, static_cast<double>(fmax) - eps));
            if (any_nan) floor_r = -HUGE_VAL;  // NaN wins wherever it is: keep every entry
            // np.argmax over the similarities rounded to the tokens' dtype: first maximum, NaN wins.
            int64_t best_k = 0;
            double best = 0.0;
            bool first = true;
            for (int64_t jj = 0; jj < nb; ++jj) {
              const bool allowed = real[static_cast<size_t>(b_set[static_cast<size_t>(jj)])] || !ri;
              double v = pad_sim;
              if (allowed) {
                if (!any_nan && tokens::round_to(tt, static_cast<double>(simf[static_cast<size_t>(jj)]) + eps) < floor_r) {
                  continue;  // cannot reach the maximum
                }
                double s = 0.0;  // exact: the reference's float64 cosine (same order as a lane sum over d)
                const double* ua = unit_a.data() + ai * d;
                for (int64_t k = 0; k < d; ++k) s += ua[k] * unit_bt[static_cast<size_t>(k * nb + jj)];
                v = tokens::round_to(tt, s);
              } else if (v < floor_r) {
                continue;
              }
              if (first || std::isnan(v) || v > best) {
                best = v;
                best_k = jj;
                first = false;
                if (std::isnan(v)) break;
              }
            }
            partner[static_cast<size_t>(i)] = b_set[static_cast<size_t>(best_k)];
            score[static_cast<size_t>(ai)] = ri ? best : tokens::kBig;
          }
          // The r best A tokens: score descending, ties to the lower index (NaN scores last; the
          // reference's sort is undefined for them).
          std::iota(order.begin(), order.end(), int64_t{0});
          auto before = [&](int64_t x, int64_t y) {
            const double sx = score[static_cast<size_t>(x)], sy = score[static_cast<size_t>(y)];
            const bool nx = std::isnan(sx), ny = std::isnan(sy);
            if (nx || ny) return nx == ny ? x < y : ny;
            return sx > sy || (sx == sy && x < y);
          };
          if (r < na) std::nth_element(order.begin(), order.begin() + (r - 1), order.end(), before);
          for (int64_t k = 0; k < r; ++k) merged[static_cast<size_t>(a_set[static_cast<size_t>(order[static_cast<size_t>(k)])])] = 1;
        }
        // Survivors keep their order; a merged token goes to its partner (a B token, never merged).
        int64_t next = 0;
        for (int64_t i = 0; i < n; ++i) {
          if (!merged[static_cast<size_t>(i)]) target[static_cast<size_t>(i)] = next++;
        }
        for (int64_t i = 0; i < n; ++i) {
          if (merged[static_cast<size_t>(i)]) target[static_cast<size_t>(i)] = target[static_cast<size_t>(partner[static_cast<size_t>(i)])];
        }
        unsigned char* a = static_cast<unsigned char*>(assign.data) + static_cast<size_t>(row * m) * elem;
        tokens::zero(a, n * m, elem);
        for (int64_t i = 0; i < n; ++i) tokens::store_one(a, tt, i * m + target[static_cast<size_t>(i)]);
        // Groups as CSR lists in increasing index order (counting sort by target).
        std::fill(counts.begin(), counts.end(), int64_t{0});
        for (int64_t i = 0; i < n; ++i) ++counts[static_cast<size_t>(target[static_cast<size_t>(i)]) + 1];
        for (int64_t k = 0; k < m; ++k) counts[static_cast<size_t>(k) + 1] += counts[static_cast<size_t>(k)];
        std::copy(counts.begin(), counts.end() - 1, cursor.begin());
        for (int64_t i = 0; i < n; ++i) members[static_cast<size_t>(cursor[static_cast<size_t>(target[static_cast<size_t>(i)])]++)] = i;
        const void* batch_tokens = static_cast<const unsigned char*>(tokens.data) + static_cast<size_t>(row * c) * elem;
        void* batch_out = static_cast<unsigned char*>(out.data) + static_cast<size_t>(bi * m * c) * elem;
        for (int64_t k = 0; k < m; ++k) {
          const int64_t lo = counts[static_cast<size_t>(k)], cnt = counts[static_cast<size_t>(k) + 1] - lo;
          const int64_t first = members[static_cast<size_t>(lo)];
          const double w0 = sz[static_cast<size_t>(first)];
          // A singleton of finite weight is its token exactly: (w·x)/w in double is x for every dtype
          // narrower than float64 (and w = 0 takes the plain mean, x). float64 rounds like the reference.
          if (cnt == 1 && tt != DType::kFloat64 && std::isfinite(w0)) {
            tokens::copy_row(batch_tokens, first, batch_out, k, c, elem);
            tokens::store(out_sizes.data, zt, bi * m + k, w0);
            continue;
          }
          for (int64_t q = 0; q < cnt; ++q) weights[static_cast<size_t>(q)] = sz[static_cast<size_t>(members[static_cast<size_t>(lo + q)])];
          const double total = tokens::reduce_group(batch_tokens, tt, c, members.data() + lo, cnt, weights.data(),
                                                    weights.data(), batch_out, k, scratch);
          tokens::store(out_sizes.data, zt, bi * m + k, total);
        }
      }
    });
  }

 private:
  // Unit metric rows of one batch: A rows as [|A|, D], B rows transposed as [D, |B|] (float64).
  static void match(const void* metric, DType mt, int64_t base, int64_t d, const std::vector<int64_t>& a_set,
                    const std::vector<int64_t>& b_set, std::vector<double>& unit_a, std::vector<double>& unit_bt,
                    std::vector<double>& row_buf) {
    const int64_t nb = static_cast<int64_t>(b_set.size());
    auto unit_row = [&](int64_t i) {
      tokens::load_row(metric, mt, base + i * d, d, row_buf.data());
      double acc[4] = {0.0, 0.0, 0.0, 0.0};  // four chains: the sum is latency-bound otherwise
      int64_t k = 0;
      for (; k + 4 <= d; k += 4) {
        for (int q = 0; q < 4; ++q) acc[q] += row_buf[static_cast<size_t>(k + q)] * row_buf[static_cast<size_t>(k + q)];
      }
      for (; k < d; ++k) acc[0] += row_buf[static_cast<size_t>(k)] * row_buf[static_cast<size_t>(k)];
      const double ss = (acc[0] + acc[1]) + (acc[2] + acc[3]);
      const double norm = std::max(std::sqrt(ss), tokens::kNormFloor);
      for (int64_t q = 0; q < d; ++q) row_buf[static_cast<size_t>(q)] /= norm;
    };
    for (size_t ai = 0; ai < a_set.size(); ++ai) {
      unit_row(a_set[ai]);
      std::copy(row_buf.begin(), row_buf.end(), unit_a.begin() + static_cast<std::ptrdiff_t>(ai) * d);
    }
    for (int64_t jj = 0; jj < nb; ++jj) {
      unit_row(b_set[static_cast<size_t>(jj)]);
      for (int64_t k = 0; k < d; ++k) unit_bt[static_cast<size_t>(k * nb + jj)] = row_buf[static_cast<size_t>(k)];
    }
  }

  Attrs attrs_;
  int64_t r_, protect_;
};

}  // namespace

void register_token_merge(std::vector<OpSpec>& ops) {
  OpSpec spec;
  spec.name = "TokenMerge";
  spec.version = "1";
  spec.inputs = {"tokens", "metric", "sizes"};
  spec.outputs = {"tokens_out", "sizes_out", "assign"};
  spec.attrs = {int_attr("r", 8, true, 0), int_attr("protect", 1, true, 0)};
  // tokens and sizes share one float type (the body mixes them); the metric may be any float type (the
  // body only casts its similarities to the tokens' type).
  for (DType t : float_dtypes()) {
    for (DType mt : float_dtypes()) spec.variants.push_back({{t, mt, t}, {t, t, t}});
  }
  spec.create = [](const Attrs& a) { return std::make_unique<TokenMergeKernel>(a); };
  spec.shapes = token_merge_shapes;
  ops.push_back(std::move(spec));
}

}  // namespace parekit
