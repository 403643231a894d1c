// parekit::TokenRestore plugin: reduced [B, M, C], assign [B, N, M], base [B, N, C] -> [B, N, C].
#include "TokenRestorePlugin.h"

#include "token_restore_cuda.h"

namespace parekit::trt {

std::unique_ptr<PluginBase> TokenRestorePlugin::copy() const { return std::make_unique<TokenRestorePlugin>(*this); }

void TokenRestorePlugin::output_exprs(const nvinfer1::DimsExprs* in, int32_t, nvinfer1::DimsExprs* out,
                                      nvinfer1::IExprBuilder&) const {
  need_rank(in[0], 0, 3);
  need_rank(in[1], 1, 3);
  need_rank(in[2], 2, 3);
  out[0] = dims({in[2].d[0], in[2].d[1], in[2].d[2]});
}

size_t TokenRestorePlugin::workspace_bytes(const std::vector<Shape>& s, const std::vector<DType>&) const {
  return token_restore_workspace(s.at(2).at(0), s.at(2).at(1));
}

void TokenRestorePlugin::run(const RunArgs& a) const {
  const Shape& base = a.in_shapes[2];
  TokenRestoreParams p;
  p.reduced = a.inputs[0];
  p.assign = a.inputs[1];
  p.base = a.inputs[2];
  p.out = a.outputs[0];
  p.workspace = a.workspace;
  p.b = base[0];
  p.n = base[1];
  p.c = base[2];
  p.m = a.in_shapes[0][1];
  p.assign_type = a.in_types[1];
  p.elem_size = dtype_size(a.in_types[2]);
  if (a.in_types[0] != a.in_types[2]) fail(spec().name, "'reduced' and 'base' must have the same type");
  launch_token_restore(p, a.launch);
}

}  // namespace parekit::trt

PAREKIT_PLUGIN_FACTORY(TokenRestore, TokenRestorePlugin)
