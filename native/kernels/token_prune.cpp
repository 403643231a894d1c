// parekit::TokenPrune: keep `protect` leading tokens plus the top-k free tokens by score (EViT/ATS),
// optionally appending the score-weighted mean of the pruned ones. Oracle: TokenPrune.reference.
//
// Per batch row: rank by partial selection (std::nth_element, score descending, ties to the lower index,
// padding last via the reference's -BIG), gather the kept rows with memcpy (a kept token is a singleton
// of weight 1, which the reference returns exactly), reduce the pruned rows into the fused token in
// double, and write the one-hot assignment.
#include <algorithm>
#include <cmath>
#include <numeric>

#include "token_common.h"
#include "token_prune_cuda.h"
#include "token_shape_rule.h"

namespace parekit {

// TokenPrune's K = protect + kept free tokens (float32 arithmetic, like pruned_count and the body).
// Declared in token_prune_cuda.h: the plugin's output shapes use it too.
int64_t token_prune_count(int64_t n, float keep, int64_t protect) {
  const int64_t p = std::min(protect, n);
  const int64_t free = n - p;
  const float scaled = static_cast<float>(free) * keep;  // separate statements: no FMA contraction
  const float wanted = scaled - 0.01f;
  int64_t k = static_cast<int64_t>(std::ceil(wanted));
  k = std::min(std::max(k, std::min<int64_t>(1, free)), free);
  return p + k;
}

namespace {

constexpr const char* kOp = "TokenPrune";

std::vector<Shape> token_prune_shapes(const std::vector<Shape>& in, const Attrs& a) {
  const Shape& tokens = in.at(0);
  const Shape& scores = in.at(1);
  const Shape& sizes = in.at(2);
  expect_rank(kOp, "tokens", tokens, 3);
  expect_rank(kOp, "scores", scores, 2);
  expect_rank(kOp, "sizes", sizes, 2);
  for (size_t axis = 0; axis < 2; ++axis) {
    tokens::expect_same_dim_shape(kOp, "scores", scores, axis, tokens[axis], "tokens", tokens);
    tokens::expect_same_dim_shape(kOp, "sizes", sizes, axis, tokens[axis], "tokens", tokens);
  }
  const int64_t b = tokens[0], n = tokens[1], c = tokens[2];
  const int64_t m = token_prune_count(n, a.get_float("keep"), a.get_int("protect")) + a.get_int("fuse");
  return {{b, m, c}, {b, m}, {b, n, m}};
}

class TokenPruneKernel : public Kernel {
 public:
  explicit TokenPruneKernel(const Attrs& a)
      : attrs_(a), keep_(a.get_float("keep")), protect_(a.get_int("protect")), fuse_(a.get_int("fuse")) {}

  void compute(Context& ctx) const override {
    const ConstTensor tokens = ctx.input(0), scores = ctx.input(1), sizes = ctx.input(2);
    token_prune_shapes({tokens.shape, scores.shape, sizes.shape}, attrs_);
    const int64_t b = tokens.dim(0), n = tokens.dim(1), c = tokens.dim(2);
    const int64_t count = token_prune_count(n, keep_, protect_);
    const int64_t p = std::min(protect_, n);
    const int64_t m = count + fuse_;
    Tensor out = ctx.output(0, {b, m, c});
    Tensor out_sizes = ctx.output(1, {b, m});
    Tensor assign = ctx.output(2, {b, n, m});
    const DType tt = tokens.dtype, st = scores.dtype, zt = sizes.dtype;
    const size_t elem = dtype_size(tt);
    // np.where(sizes > 0, scores, -BIG) keeps the scores' dtype: -BIG rounds in it (float16: -inf).
    const double pad = tokens::round_to(st, -tokens::kBig);

    ctx.parallel_for(b, static_cast<double>(n * (c + m) + count * c), [&](int64_t begin, int64_t end) {
      std::vector<double> s(static_cast<size_t>(n));
      std::vector<int64_t> order(static_cast<size_t>(n));
      std::vector<char> kept(static_cast<size_t>(n));
      std::vector<int64_t> pruned;
      std::vector<double> pruned_w, pruned_s;
      tokens::GroupScratch scratch;
      for (int64_t bi = begin; bi < end; ++bi) {
        const int64_t row = bi * n;
        // Selection scores: protected tokens first (BIG), padding last (-BIG), as the reference.
        for (int64_t i = 0; i < n; ++i) {
          const double size = tokens::load(sizes.data, zt, row + i);
          s[static_cast<size_t>(i)] = i < p ? tokens::kBig : size > 0.0 ? tokens::load(scores.data, st, row + i) : pad;
        }
        std::iota(order.begin(), order.end(), int64_t{0});
        // Stable descending order with NaN last (what argsort(-s, kind="stable") does).
        auto before = [&](int64_t x, int64_t y) {
          const double sx = s[static_cast<size_t>(x)], sy = s[static_cast<size_t>(y)];
          const bool nx = std::isnan(sx), ny = std::isnan(sy);
          if (nx || ny) return nx == ny ? x < y : ny;
          return sx > sy || (sx == sy && x < y);
        };
        if (count > 0 && count < n) std::nth_element(order.begin(), order.begin() + (count - 1), order.end(), before);
        std::fill(kept.begin(), kept.end(), char{0});
        for (int64_t k = 0; k < count; ++k) kept[static_cast<size_t>(order[static_cast<size_t>(k)])] = 1;

        unsigned char* a = static_cast<unsigned char*>(assign.data) + static_cast<size_t>(row * m) * elem;
        tokens::zero(a, n * m, elem);
        pruned.clear();
        pruned_w.clear();
        pruned_s.clear();
        int64_t next = 0;
        for (int64_t i = 0; i < n; ++i) {
          if (kept[static_cast<size_t>(i)]) {
            tokens::copy_row(tokens.data, row + i, out.data, bi * m + next, c, elem);
            tokens::store(out_sizes.data, zt, bi * m + next, tokens::load(sizes.data, zt, row + i));
            tokens::store_one(a, tt, i * m + next);
            ++next;
          } else {
            pruned.push_back(i);
            const double sc = tokens::load(scores.data, st, row + i);
            pruned_w.push_back(sc < 0.0 ? 0.0 : sc);  // np.maximum(scores, 0): NaN stays NaN
            pruned_s.push_back(tokens::load(sizes.data, zt, row + i));
            if (fuse_) tokens::store_one(a, tt, i * m + count);
          }
        }
        if (fuse_) {
          const void* batch_tokens = static_cast<const unsigned char*>(tokens.data) + static_cast<size_t>(row * c) * elem;
          void* batch_out = static_cast<unsigned char*>(out.data) + static_cast<size_t>(bi * m * c) * elem;
          const double total = tokens::reduce_group(batch_tokens, tt, c, pruned.data(), static_cast<int64_t>(pruned.size()),
                                                    pruned_w.data(), pruned_s.data(), batch_out, count, scratch);
          tokens::store(out_sizes.data, zt, bi * m + count, total);
        }
      }
    });
  }

 private:
  Attrs attrs_;
  float keep_;
  int64_t protect_, fuse_;
};

}  // namespace

void register_token_prune(std::vector<OpSpec>& ops) {
  OpSpec spec;
  spec.name = "TokenPrune";
  spec.version = "1";
  spec.inputs = {"tokens", "scores", "sizes"};
  spec.outputs = {"tokens_out", "sizes_out", "assign"};
  spec.attrs = {float_attr("keep", 0.5f, true, 0.0, true, 1.0), int_attr("protect", 1, true, 0),
                int_attr("fuse", 0, true, 0, true, 1)};
  // The body needs one float type for all three inputs (Where/Mul mix them), so the kernel binds the same.
  spec.variants = tokens::same_float_variants(3, 3);
  spec.create = [](const Attrs& a) { return std::make_unique<TokenPruneKernel>(a); };
  spec.shapes = token_prune_shapes;
  ops.push_back(std::move(spec));
}

}  // namespace parekit
