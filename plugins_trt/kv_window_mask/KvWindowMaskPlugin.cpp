// parekit::KvWindowMask plugin: attention_mask [B, T] -> [B, min(T, sink + window)].
#include "KvWindowMaskPlugin.h"

#include "keep_window_cuda.h"

namespace parekit::trt {

std::unique_ptr<PluginBase> KvWindowMaskPlugin::copy() const { return std::make_unique<KvWindowMaskPlugin>(*this); }

void KvWindowMaskPlugin::output_exprs(const nvinfer1::DimsExprs* in, int32_t, nvinfer1::DimsExprs* out,
                                      nvinfer1::IExprBuilder& b) const {
  need_rank(in[0], 0, 2);
  const int64_t keep = attrs().get_int("sink") + attrs().get_int("window");
  out[0] = dims({in[0].d[0], b.operation(nvinfer1::DimensionOperation::kMIN, *in[0].d[1], *b.constant(keep))});
}

void KvWindowMaskPlugin::run(const RunArgs& a) const {
  const Shape& s = a.in_shapes[0];
  KeepWindowParams p;
  p.src = a.inputs[0];
  p.dst = a.outputs[0];
  p.outer = s[0];
  p.t = s[1];
  p.inner = 1;
  p.elem_size = dtype_size(a.in_types[0]);
  p.sink = attrs().get_int("sink");
  p.window = attrs().get_int("window");
  launch_keep_window(p, a.launch);
}

}  // namespace parekit::trt

PAREKIT_PLUGIN_FACTORY(KvWindowMask, KvWindowMaskPlugin)
