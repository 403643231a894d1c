// parekit::KvQuantAttention plugin: query [B, Hq, S, D] over a quantized store ++ float tail -> [B, Hq, S, D].
#include "KvQuantAttentionPlugin.h"

#include "kv_quant_attention_cuda.h"

namespace parekit::trt {

namespace {
// Input positions (the OpSpec's order).
enum : int32_t { kQuery, kKCodes, kKScale, kKMin, kKTail, kVCodes, kVScale, kVMin, kVTail, kMask, kInputs };
}  // namespace

std::unique_ptr<PluginBase> KvQuantAttentionPlugin::copy() const {
  return std::make_unique<KvQuantAttentionPlugin>(*this);
}

void KvQuantAttentionPlugin::output_exprs(const nvinfer1::DimsExprs* in, int32_t, nvinfer1::DimsExprs* out,
                                          nvinfer1::IExprBuilder&) const {
  // The context has the query's shape; the other inputs' agreement is the shape rule's (OpSpec::shapes).
  need_rank(in[kQuery], kQuery, 4);
  out[0] = in[kQuery];
}

size_t KvQuantAttentionPlugin::workspace_bytes(const std::vector<Shape>& in, const std::vector<DType>&) const {
  if (in.size() < static_cast<size_t>(kInputs) || in[kQuery].size() != 4 || in[kKCodes].size() != 4 ||
      in[kKTail].size() != 4)
    return 0;  // refused by the shape rule before any run
  const Shape& q = in[kQuery];
  return kv_quant_attention_workspace_bytes(q[0], q[1], q[2], q[3], in[kKCodes][2] + in[kKTail][2],
                                            attrs().get_int("group"));
}

void KvQuantAttentionPlugin::run(const RunArgs& a) const {
  const Shape &q = a.in_shapes[kQuery], &kt = a.in_shapes[kKTail], &mask = a.in_shapes[kMask];
  KvQuantAttentionParams p;
  p.query = static_cast<const float*>(a.inputs[kQuery]);
  p.k_codes = static_cast<const int8_t*>(a.inputs[kKCodes]);
  p.k_scale = static_cast<const uint16_t*>(a.inputs[kKScale]);
  p.k_min = static_cast<const uint16_t*>(a.inputs[kKMin]);
  p.k_tail = static_cast<const float*>(a.inputs[kKTail]);
  p.v_codes = static_cast<const int8_t*>(a.inputs[kVCodes]);
  p.v_scale = static_cast<const uint16_t*>(a.inputs[kVScale]);
  p.v_min = static_cast<const uint16_t*>(a.inputs[kVMin]);
  p.v_tail = static_cast<const float*>(a.inputs[kVTail]);
  p.mask = static_cast<const uint8_t*>(a.inputs[kMask]);  // kBOOL: one byte per element
  p.out = static_cast<float*>(a.outputs[0]);
  p.b = q[0];
  p.hq = q[1];
  p.s = q[2];
  p.d = q[3];
  p.hkv = kt[1];
  p.tf = kt[2];
  p.nq = a.in_shapes[kKCodes][2];
  for (size_t i = 0; i < 4; ++i) p.mask_dims[i] = mask[i];
  p.bits = attrs().get_int("bits");
  p.group = attrs().get_int("group");
  p.scale = attrs().get_float("scale");
  p.workspace = a.workspace;
  launch_kv_quant_attention(p, a.launch);
}

}  // namespace parekit::trt

PAREKIT_PLUGIN_FACTORY(KvQuantAttention, KvQuantAttentionPlugin)
