// parekit::TokenPrune plugin: tokens [B, N, C], scores [B, N], sizes [B, N] ->
// tokens_out [B, M, C], sizes_out [B, M], assign [B, N, M], M = K(N) + fuse.
//
// K(N) is float32 arithmetic (ceil(float(free) * keep - 0.01f)), which IExprBuilder cannot express. For a
// build-time constant N the plugin computes it exactly; for a dynamic N it builds the integer expression
// ceil_div(free * A - S, 2^29) (keep and 0.01f in units of 2^-29), clamped like the rule, plus one
// correction term (free == v) * delta for each free count v <= kCheckedFree where that expression and
// the float32 rule differ (isolated values, e.g. keep 0.999 at free 990, 1990, ...). Beyond kCheckedFree
// the expression is not checked here; onShapeChange compares every runtime shape with the rule and refuses
// a mismatch rather than run on a wrong M.
#include "TokenPrunePlugin.h"

#include <cmath>

#include "token_prune_cuda.h"

namespace parekit::trt {
namespace {

using nvinfer1::DimensionOperation;
using nvinfer1::IDimensionExpr;

constexpr int64_t kCheckedFree = 65536;
constexpr int64_t kMaxCorrections = 4096;
constexpr int kScaleBits = 29;  // 0.01f = 5368709 * 2^-29 exactly

struct Linear {
  int64_t a, s;  // K ~ ceil((free * a - s) / 2^kScaleBits)
  int64_t eval(int64_t free) const {
    const int64_t num = free * a - s;
    const int64_t d = int64_t{1} << kScaleBits;
    const int64_t q = num >= 0 ? (num + d - 1) / d : -((-num) / d);  // ceil division
    const int64_t lo = std::min<int64_t>(1, free);
    return std::min(std::max(q, lo), free);
  }
};

Linear linear_rule(float keep) {
  return {static_cast<int64_t>(std::floor(std::ldexp(static_cast<double>(keep), kScaleBits))),
          static_cast<int64_t>(std::ldexp(static_cast<double>(0.01f), kScaleBits))};
}

}  // namespace

std::unique_ptr<PluginBase> TokenPrunePlugin::copy() const { return std::make_unique<TokenPrunePlugin>(*this); }

void TokenPrunePlugin::output_exprs(const nvinfer1::DimsExprs* in, int32_t, nvinfer1::DimsExprs* out,
                                    nvinfer1::IExprBuilder& b) const {
  need_rank(in[0], 0, 3);
  need_rank(in[1], 1, 2);
  need_rank(in[2], 2, 2);
  const float keep = attrs().get_float("keep");
  const int64_t protect = attrs().get_int("protect"), fuse = attrs().get_int("fuse");
  const IDimensionExpr* n = in[0].d[1];
  const IDimensionExpr* m = nullptr;
  if (n->isConstant()) {
    m = b.constant(token_prune_count(n->getConstantValue(), keep, protect) + fuse);
  } else {
    auto op = [&](DimensionOperation o, const IDimensionExpr* x, const IDimensionExpr* y) { return b.operation(o, *x, *y); };
    const Linear rule = linear_rule(keep);
    const IDimensionExpr* p = op(DimensionOperation::kMIN, n, b.constant(protect));
    const IDimensionExpr* free = op(DimensionOperation::kSUB, n, p);
    const IDimensionExpr* num = op(DimensionOperation::kSUB, op(DimensionOperation::kPROD, free, b.constant(rule.a)),
                                   b.constant(rule.s));
    const IDimensionExpr* k = op(DimensionOperation::kCEIL_DIV, num, b.constant(int64_t{1} << kScaleBits));
    k = op(DimensionOperation::kMAX, k, op(DimensionOperation::kMIN, free, b.constant(1)));
    k = op(DimensionOperation::kMIN, k, free);
    int64_t corrections = 0;
    for (int64_t f = 0; f <= kCheckedFree; ++f) {
      const int64_t delta = token_prune_count(f, keep, 0) - rule.eval(f);
      if (delta == 0) continue;
      if (++corrections > kMaxCorrections) {
        fail(spec().name, "keep=" + std::to_string(keep) + " needs a build-time constant token count N");
      }
      const IDimensionExpr* hit = op(DimensionOperation::kEQUAL, free, b.constant(f));
      k = op(DimensionOperation::kSUM, k, op(DimensionOperation::kPROD, hit, b.constant(delta)));
    }
    m = op(DimensionOperation::kSUM, op(DimensionOperation::kSUM, p, k), b.constant(fuse));
  }
  out[0] = dims({in[0].d[0], m, in[0].d[2]});
  out[1] = dims({in[0].d[0], m});
  out[2] = dims({in[0].d[0], n, m});
}

size_t TokenPrunePlugin::workspace_bytes(const std::vector<Shape>& s, const std::vector<DType>&) const {
  return token_prune_workspace(s.at(0).at(0), s.at(0).at(1));
}

void TokenPrunePlugin::run(const RunArgs& a) const {
  const Shape& t = a.in_shapes[0];
  TokenPruneParams p;
  p.tokens = a.inputs[0];
  p.scores = a.inputs[1];
  p.sizes = a.inputs[2];
  p.tokens_out = a.outputs[0];
  p.sizes_out = a.outputs[1];
  p.assign = a.outputs[2];
  p.workspace = a.workspace;
  p.b = t[0];
  p.n = t[1];
  p.c = t[2];
  p.tokens_type = a.in_types[0];
  p.scores_type = a.in_types[1];
  p.sizes_type = a.in_types[2];
  p.keep = attrs().get_float("keep");
  p.protect = attrs().get_int("protect");
  p.fuse = attrs().get_int("fuse");
  launch_token_prune(p, a.launch);
}

}  // namespace parekit::trt

PAREKIT_PLUGIN_FACTORY(TokenPrune, TokenPrunePlugin)
