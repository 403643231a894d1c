// parekit::TokenMerge plugin: tokens [B, N, C], metric [B, N, D], sizes [B, N]
//   -> tokens_out [B, M, C], sizes_out [B, M], assign [B, N, M],  M = N - r',
//   r' = max(0, min(r, ceil(N/2) - ceil(P/2), floor(N/2) - floor(P/2))),  P = min(protect, N).
#include "TokenMergePlugin.h"

#include "token_merge_cuda.h"

namespace parekit::trt {

using nvinfer1::DimensionOperation;
using nvinfer1::IDimensionExpr;

std::unique_ptr<PluginBase> TokenMergePlugin::copy() const { return std::make_unique<TokenMergePlugin>(*this); }

void TokenMergePlugin::output_exprs(const nvinfer1::DimsExprs* in, int32_t, nvinfer1::DimsExprs* out,
                                    nvinfer1::IExprBuilder& b) const {
  need_rank(in[0], 0, 3);
  need_rank(in[1], 1, 3);
  need_rank(in[2], 2, 2);
  // token_merge_limit as expressions (N >= 0, so FLOOR_DIV is the C++ division there).
  auto op = [&](DimensionOperation o, const IDimensionExpr* x, const IDimensionExpr* y) { return b.operation(o, *x, *y); };
  const IDimensionExpr *one = b.constant(1), *two = b.constant(2);
  const IDimensionExpr* n = in[0].d[1];
  const IDimensionExpr* p = op(DimensionOperation::kMIN, b.constant(attrs().get_int("protect")), n);
  auto half = [&](const IDimensionExpr* x) { return op(DimensionOperation::kFLOOR_DIV, x, two); };
  const IDimensionExpr* free_a = op(DimensionOperation::kSUB, half(op(DimensionOperation::kSUM, n, one)),
                                    half(op(DimensionOperation::kSUM, p, one)));
  const IDimensionExpr* free_b = op(DimensionOperation::kSUB, half(n), half(p));
  const IDimensionExpr* r = op(DimensionOperation::kMIN, b.constant(attrs().get_int("r")),
                               op(DimensionOperation::kMIN, free_a, free_b));
  r = op(DimensionOperation::kMAX, r, b.constant(0));
  const IDimensionExpr* m = op(DimensionOperation::kSUB, n, r);
  out[0] = dims({in[0].d[0], m, in[0].d[2]});
  out[1] = dims({in[0].d[0], m});
  out[2] = dims({in[0].d[0], n, m});
}

size_t TokenMergePlugin::workspace_bytes(const std::vector<Shape>& in, const std::vector<DType>&) const {
  return token_merge_workspace_bytes(in.at(0).at(0), in[0].at(1), in.at(1).at(2), attrs().get_int("r"),
                                     attrs().get_int("protect"));
}

void TokenMergePlugin::run(const RunArgs& a) const {
  const Shape &tokens = a.in_shapes.at(0), &metric = a.in_shapes.at(1);
  TokenMergeParams p;
  p.tokens = a.inputs[0];
  p.metric = a.inputs[1];
  p.sizes = a.inputs[2];
  p.tokens_out = a.outputs[0];
  p.sizes_out = a.outputs[1];
  p.assign = a.outputs[2];
  p.workspace = a.workspace;
  p.b = tokens[0];
  p.n = tokens[1];
  p.c = tokens[2];
  p.d = metric[2];
  p.tokens_type = a.in_types.at(0);
  p.metric_type = a.in_types.at(1);
  p.r = attrs().get_int("r");
  p.protect = attrs().get_int("protect");
  launch_token_merge(p, a.launch);
}

}  // namespace parekit::trt

PAREKIT_PLUGIN_FACTORY(TokenMerge, TokenMergePlugin)
