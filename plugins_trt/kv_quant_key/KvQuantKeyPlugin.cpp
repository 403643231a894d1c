// parekit::KvQuantKey plugin (and the shared half of KvQuantValue): codes [B,H,Nq,D/p], scale, min,
// residual [B,H,R,D], new [B,H,S,D] -> the store with Nq + n tokens and residual_out [B,H,R+S-n,D],
// n = max(0, R + S - residual) / group * group.
#include "KvQuantKeyPlugin.h"

#include "kv_quant_cuda.h"

namespace parekit::trt {

using nvinfer1::DimensionOperation;

std::unique_ptr<PluginBase> KvQuantKeyPlugin::copy() const { return std::make_unique<KvQuantKeyPlugin>(*this); }

void KvQuantKeyPlugin::output_exprs(const nvinfer1::DimsExprs* in, int32_t, nvinfer1::DimsExprs* out,
                                    nvinfer1::IExprBuilder& b) const {
  for (int32_t i = 0; i < 5; ++i) need_rank(in[i], i, 4);
  const nvinfer1::DimsExprs &codes = in[0], &scale = in[1], &residual = in[3], &fresh = in[4];
  const auto* group = b.constant(attrs().get_int("group"));
  const auto* len = b.operation(DimensionOperation::kSUM, *residual.d[2], *fresh.d[2]);
  const auto* over = b.operation(DimensionOperation::kMAX, *b.constant(0),
                                 *b.operation(DimensionOperation::kSUB, *len, *b.constant(attrs().get_int("residual"))));
  const auto* groups = b.operation(DimensionOperation::kFLOOR_DIV, *over, *group);  // whole groups moved
  const auto* n = b.operation(DimensionOperation::kPROD, *groups, *group);
  const auto* bd = residual.d[0];
  const auto* hd = residual.d[1];
  const auto* dd = residual.d[3];
  const auto* tokens = b.operation(DimensionOperation::kSUM, *codes.d[2], *n);
  out[0] = dims({bd, hd, tokens, codes.d[3]});
  // Keys: scale rows Nq/group + n/group (scale.d[2] is Nq/group); values: Nq + n rows of D/group.
  out[1] = per_channel() ? dims({bd, hd, b.operation(DimensionOperation::kSUM, *scale.d[2], *groups), dd})
                         : dims({bd, hd, tokens, scale.d[3]});
  out[2] = out[1];
  out[3] = dims({bd, hd, b.operation(DimensionOperation::kSUB, *len, *n), dd});
}

void KvQuantKeyPlugin::run(const RunArgs& a) const {
  const Shape& res = a.in_shapes[3];
  KvQuantParams p;
  p.codes = static_cast<const int8_t*>(a.inputs[0]);
  p.scale = static_cast<const uint16_t*>(a.inputs[1]);
  p.min = static_cast<const uint16_t*>(a.inputs[2]);
  p.residual = static_cast<const float*>(a.inputs[3]);
  p.fresh = static_cast<const float*>(a.inputs[4]);
  p.codes_out = static_cast<int8_t*>(a.outputs[0]);
  p.scale_out = static_cast<uint16_t*>(a.outputs[1]);
  p.min_out = static_cast<uint16_t*>(a.outputs[2]);
  p.residual_out = static_cast<float*>(a.outputs[3]);
  p.rows = res[0] * res[1];
  p.nq = a.in_shapes[0][2];
  p.r = res[2];
  p.s = a.in_shapes[4][2];
  p.d = res[3];
  p.bits = attrs().get_int("bits");
  p.group = attrs().get_int("group");
  p.keep = attrs().get_int("residual");
  p.per_channel = per_channel();
  launch_kv_quant(p, a.launch);
}

}  // namespace parekit::trt

PAREKIT_PLUGIN_FACTORY(KvQuantKey, KvQuantKeyPlugin)
