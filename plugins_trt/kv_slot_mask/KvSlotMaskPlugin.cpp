// parekit::KvSlotMask plugin: attn_mask bool [B, 1|Hkv*group, S, T], score [B, Hkv, P] -> bool [B, Hkv*group, S, T].
#include "KvSlotMaskPlugin.h"

#include "kv_slot_mask_cuda.h"

namespace parekit::trt {

std::unique_ptr<PluginBase> KvSlotMaskPlugin::copy() const { return std::make_unique<KvSlotMaskPlugin>(*this); }

void KvSlotMaskPlugin::output_exprs(const nvinfer1::DimsExprs* in, int32_t, nvinfer1::DimsExprs* out,
                                    nvinfer1::IExprBuilder& b) const {
  need_rank(in[0], 0, 4);
  need_rank(in[1], 1, 3);
  const auto* hq = b.operation(nvinfer1::DimensionOperation::kPROD, *in[1].d[1], *b.constant(attrs().get_int("group")));
  out[0] = dims({in[1].d[0], hq, in[0].d[2], in[0].d[3]});
}

void KvSlotMaskPlugin::run(const RunArgs& a) const {
  const Shape& m = a.in_shapes[0];
  const Shape& sc = a.in_shapes[1];
  KvSlotMaskParams p;
  p.mask = static_cast<const uint8_t*>(a.inputs[0]);
  p.score = static_cast<const float*>(a.inputs[1]);
  p.out = static_cast<uint8_t*>(a.outputs[0]);
  p.b = sc[0];
  p.hkv = sc[1];
  p.p = sc[2];
  p.group = attrs().get_int("group");
  p.mh = m[1];
  p.s = m[2];
  p.t = m[3];
  launch_kv_slot_mask(p, a.launch);
}

}  // namespace parekit::trt

PAREKIT_PLUGIN_FACTORY(KvSlotMask, KvSlotMaskPlugin)
