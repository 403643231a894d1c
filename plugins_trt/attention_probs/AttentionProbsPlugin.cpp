// parekit::AttentionProbs plugin: q [B, H, S, D], k [B, H, T, D], mask bool [B, 1|H, S, T] -> probs [B, H, S, T].
#include "AttentionProbsPlugin.h"

#include "attention_probs_cuda.h"

namespace parekit::trt {

std::unique_ptr<PluginBase> AttentionProbsPlugin::copy() const {
  return std::make_unique<AttentionProbsPlugin>(*this);
}

void AttentionProbsPlugin::output_exprs(const nvinfer1::DimsExprs* in, int32_t, nvinfer1::DimsExprs* out,
                                        nvinfer1::IExprBuilder&) const {
  need_rank(in[0], 0, 4);
  need_rank(in[1], 1, 4);
  need_rank(in[2], 2, 4);
  out[0] = dims({in[0].d[0], in[0].d[1], in[0].d[2], in[1].d[2]});
}

void AttentionProbsPlugin::run(const RunArgs& a) const {
  const Shape& q = a.in_shapes[0];
  AttentionProbsParams p;
  p.q = static_cast<const float*>(a.inputs[0]);
  p.k = static_cast<const float*>(a.inputs[1]);
  p.mask = static_cast<const uint8_t*>(a.inputs[2]);
  p.out = static_cast<float*>(a.outputs[0]);
  p.b = q[0];
  p.h = q[1];
  p.s = q[2];
  p.d = q[3];
  p.t = a.in_shapes[1][2];
  p.mh = a.in_shapes[2][1];
  p.scale = attrs().get_float("scale");
  launch_attention_probs(p, a.launch);
}

}  // namespace parekit::trt

PAREKIT_PLUGIN_FACTORY(AttentionProbs, AttentionProbsPlugin)
