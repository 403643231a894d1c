// parekit::KvDequantKey plugin (and the shared half of KvDequantValue): codes [B,H,Nq,D/p], scale, min,
// residual [B,H,R,D] -> cache [B,H,Nq+R,D] float32.
#include "KvDequantKeyPlugin.h"

#include "kv_dequant_cuda.h"

namespace parekit::trt {

std::unique_ptr<PluginBase> KvDequantKeyPlugin::copy() const { return std::make_unique<KvDequantKeyPlugin>(*this); }

void KvDequantKeyPlugin::output_exprs(const nvinfer1::DimsExprs* in, int32_t, nvinfer1::DimsExprs* out,
                                      nvinfer1::IExprBuilder& b) const {
  for (int32_t i = 0; i < 4; ++i) need_rank(in[i], i, 4);
  const nvinfer1::DimsExprs &codes = in[0], &residual = in[3];
  const auto* t = b.operation(nvinfer1::DimensionOperation::kSUM, *codes.d[2], *residual.d[2]);
  out[0] = dims({residual.d[0], residual.d[1], t, residual.d[3]});
}

void KvDequantKeyPlugin::run(const RunArgs& a) const {
  const Shape& res = a.in_shapes[3];
  KvDequantParams p;
  p.codes = static_cast<const int8_t*>(a.inputs[0]);
  p.scale = static_cast<const uint16_t*>(a.inputs[1]);
  p.min = static_cast<const uint16_t*>(a.inputs[2]);
  p.residual = static_cast<const float*>(a.inputs[3]);
  p.cache = static_cast<float*>(a.outputs[0]);
  p.rows = res[0] * res[1];
  p.nq = a.in_shapes[0][2];
  p.r = res[2];
  p.d = res[3];
  p.bits = attrs().get_int("bits");
  p.group = attrs().get_int("group");
  p.per_channel = per_channel();
  launch_kv_dequant(p, a.launch);
}

}  // namespace parekit::trt

PAREKIT_PLUGIN_FACTORY(KvDequantKey, KvDequantKeyPlugin)
