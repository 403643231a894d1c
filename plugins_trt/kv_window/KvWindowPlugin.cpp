// parekit::KvWindow plugin: cache [B, H, T, D] -> [B, H, min(T, sink + window), D].
#include "KvWindowPlugin.h"

#include "keep_window_cuda.h"

namespace parekit::trt {

std::unique_ptr<PluginBase> KvWindowPlugin::copy() const { return std::make_unique<KvWindowPlugin>(*this); }

void KvWindowPlugin::output_exprs(const nvinfer1::DimsExprs* in, int32_t, nvinfer1::DimsExprs* out,
                                  nvinfer1::IExprBuilder& b) const {
  need_rank(in[0], 0, 4);
  const int64_t keep = attrs().get_int("sink") + attrs().get_int("window");
  const auto* t = b.operation(nvinfer1::DimensionOperation::kMIN, *in[0].d[2], *b.constant(keep));
  out[0] = dims({in[0].d[0], in[0].d[1], t, in[0].d[3]});
}

void KvWindowPlugin::run(const RunArgs& a) const {
  const Shape& s = a.in_shapes[0];
  KeepWindowParams p;
  p.src = a.inputs[0];
  p.dst = a.outputs[0];
  p.outer = s[0] * s[1];
  p.t = s[2];
  p.inner = s[3];
  p.elem_size = dtype_size(a.in_types[0]);
  p.sink = attrs().get_int("sink");
  p.window = attrs().get_int("window");
  launch_keep_window(p, a.launch);
}

}  // namespace parekit::trt

PAREKIT_PLUGIN_FACTORY(KvWindow, KvWindowPlugin)
