// parekit::TokenRestore: bring reduced tokens back to full length. Oracle: TokenRestore.reference.
//
// The reference gives row n the reduced token of the first nonzero entry of assign[n] (copied, whatever
// its value), and base[n] where the row is all zero. That is a gather: one scan of the row for its first
// nonzero, one memcpy of a [C] row. For the one-hot rows the reducing ops write (a single 1) this equals
// the documented assign @ reduced + (1 - rowsum(assign)) * base exactly; for other rows the two forms
// differ, and the kernel follows the reference.
#include "token_common.h"
#include "token_shape_rule.h"

namespace parekit {
namespace {

constexpr const char* kOp = "TokenRestore";

std::vector<Shape> token_restore_shapes(const std::vector<Shape>& in, const Attrs&) {
  const Shape& reduced = in.at(0);
  const Shape& assign = in.at(1);
  const Shape& base = in.at(2);
  expect_rank(kOp, "reduced", reduced, 3);
  expect_rank(kOp, "assign", assign, 3);
  expect_rank(kOp, "base", base, 3);
  tokens::expect_same_dim_shape(kOp, "reduced", reduced, 0, base[0], "base", base);
  tokens::expect_same_dim_shape(kOp, "reduced", reduced, 2, base[2], "base", base);
  tokens::expect_same_dim_shape(kOp, "assign", assign, 0, base[0], "base", base);
  tokens::expect_same_dim_shape(kOp, "assign", assign, 1, base[1], "base", base);
  tokens::expect_same_dim_shape(kOp, "assign", assign, 2, reduced[1], "reduced", reduced);
  return {base};
}

class TokenRestoreKernel : public Kernel {
 public:
  void compute(Context& ctx) const override {
    const ConstTensor reduced = ctx.input(0), assign = ctx.input(1), base = ctx.input(2);
    token_restore_shapes({reduced.shape, assign.shape, base.shape}, Attrs{});
    const int64_t b = base.dim(0), n = base.dim(1), c = base.dim(2), m = reduced.dim(1);
    Tensor out = ctx.output(0, {b, n, c});
    const DType at = assign.dtype;
    const size_t elem = dtype_size(base.dtype);
    ctx.parallel_for(b * n, static_cast<double>(m + c), [&](int64_t begin, int64_t end) {
      for (int64_t row = begin; row < end; ++row) {
        const int64_t bi = row / n;
        int64_t hit = -1;
        for (int64_t k = 0; k < m; ++k) {
          if (tokens::nonzero(assign.data, at, row * m + k)) {
            hit = k;
            break;
          }
        }
        if (hit >= 0) {
          tokens::copy_row(reduced.data, bi * m + hit, out.data, row, c, elem);
        } else {
          tokens::copy_row(base.data, row, out.data, row, c, elem);
        }
      }
    });
  }
};

}  // namespace

void register_token_restore(std::vector<OpSpec>& ops) {
  OpSpec spec;
  spec.name = "TokenRestore";
  spec.version = "1";
  spec.inputs = {"reduced", "assign", "base"};
  spec.outputs = {"tokens_out"};
  // The body (MatMul, Mul, Add) needs one float type for all three inputs.
  spec.variants = tokens::same_float_variants(3, 1);
  spec.create = [](const Attrs&) { return std::make_unique<TokenRestoreKernel>(); };
  spec.shapes = token_restore_shapes;
  ops.push_back(std::move(spec));
}

}  // namespace parekit
