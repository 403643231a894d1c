// parekit::KvMaskRemap plugin: attention_mask [B, N], past [B, H, P, D], input_ids [B, S] -> [B, P + S].
#include "KvMaskRemapPlugin.h"

#include "kv_slot_mask_cuda.h"

namespace parekit::trt {

std::unique_ptr<PluginBase> KvMaskRemapPlugin::copy() const { return std::make_unique<KvMaskRemapPlugin>(*this); }

void KvMaskRemapPlugin::output_exprs(const nvinfer1::DimsExprs* in, int32_t, nvinfer1::DimsExprs* out,
                                     nvinfer1::IExprBuilder& b) const {
  need_rank(in[0], 0, 2);
  need_rank(in[1], 1, 4);
  need_rank(in[2], 2, 2);
  const auto* width = b.operation(nvinfer1::DimensionOperation::kSUM, *in[1].d[2], *in[2].d[1]);
  out[0] = dims({in[0].d[0], width});
}

void KvMaskRemapPlugin::run(const RunArgs& a) const {
  KvMaskRemapParams p;
  p.mask = a.inputs[0];
  p.out = a.outputs[0];
  p.dtype = a.in_types[0];
  p.b = a.in_shapes[0][0];
  p.n = a.in_shapes[0][1];
  p.p = a.in_shapes[1][2];
  p.s = a.in_shapes[2][1];
  launch_kv_mask_remap(p, a.launch);
}

}  // namespace parekit::trt

PAREKIT_PLUGIN_FACTORY(KvMaskRemap, KvMaskRemapPlugin)
