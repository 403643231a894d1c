// parekit::KvEvictH2O plugin, H2O (heavy hitters: accumulated attention with decay): key/value [B, Hkv, T, D], score [B, Hkv, P],
// probs [B, Hq, S, T], mask [B, T] -> key_out/value_out [B, Hkv, K, D], score_out [B, Hkv, K],
// K = min(T, budget).
#include "KvEvictH2OPlugin.h"

#include "kv_evict_cuda.h"

namespace parekit::trt {

std::unique_ptr<PluginBase> KvEvictH2OPlugin::copy() const { return std::make_unique<KvEvictH2OPlugin>(*this); }

void KvEvictH2OPlugin::output_exprs(const nvinfer1::DimsExprs* in, int32_t, nvinfer1::DimsExprs* out,
                                 nvinfer1::IExprBuilder& b) const {
  need_rank(in[0], 0, 4);
  need_rank(in[1], 1, 4);
  need_rank(in[2], 2, 3);
  need_rank(in[3], 3, 4);
  need_rank(in[4], 4, 2);
  const auto* k = b.operation(nvinfer1::DimensionOperation::kMIN, *in[0].d[2], *b.constant(attrs().get_int("budget")));
  out[0] = dims({in[0].d[0], in[0].d[1], k, in[0].d[3]});
  out[1] = dims({in[0].d[0], in[0].d[1], k, in[0].d[3]});
  out[2] = dims({in[0].d[0], in[0].d[1], k});
}

size_t KvEvictH2OPlugin::workspace_bytes(const std::vector<Shape>& in, const std::vector<DType>&) const {
  if (in.empty() || in[0].size() != 4) return 0;
  // P = 0 bounds every P <= T of the shapes these maxima admit
  return kv_evict_workspace_bytes(in[0][0], in[0][1], in[0][2], 0, attrs().get_int("budget"));
}

void KvEvictH2OPlugin::run(const RunArgs& a) const {
  const Shape& key = a.in_shapes[0];
  KvEvictParams p;
  p.snap = snap();
  p.key = static_cast<const float*>(a.inputs[0]);
  p.value = static_cast<const float*>(a.inputs[1]);
  p.score = static_cast<const float*>(a.inputs[2]);
  p.probs = static_cast<const float*>(a.inputs[3]);
  p.mask = a.inputs[4];
  p.mask_dtype = a.in_types[4];
  p.key_out = static_cast<float*>(a.outputs[0]);
  p.value_out = static_cast<float*>(a.outputs[1]);
  p.score_out = static_cast<float*>(a.outputs[2]);
  p.workspace = a.workspace;
  p.b = key[0];
  p.hkv = key[1];
  p.t = key[2];
  p.d = key[3];
  p.p = a.in_shapes[2][2];
  p.hq = a.in_shapes[3][1];
  p.budget = attrs().get_int("budget");
  p.sink = attrs().get_int("sink");
  p.recent = attrs().get_int("recent");
  if (!p.snap) p.decay = attrs().get_float("decay");  // KvEvictSnap has no decay
  launch_kv_evict(p, a.launch);
}

}  // namespace parekit::trt

PAREKIT_PLUGIN_FACTORY(KvEvictH2O, KvEvictH2OPlugin)
