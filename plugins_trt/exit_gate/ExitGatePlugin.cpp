// parekit::ExitGate plugin: x [..., V] (+ prev [..., V] for signal=cosine) -> score float32 [...],
// take bool [...].
#include "ExitGatePlugin.h"

namespace parekit::trt {

ExitGatePlugin::ExitGatePlugin(const OpSpec& spec, Attrs attrs)
    : PluginBase(spec, std::move(attrs)), signal_(exit_signal_from_name(this->attrs().get_string("signal"))) {}

std::unique_ptr<PluginBase> ExitGatePlugin::copy() const { return std::make_unique<ExitGatePlugin>(*this); }

void ExitGatePlugin::output_exprs(const nvinfer1::DimsExprs* in, int32_t nbInputs, nvinfer1::DimsExprs* out,
                                  nvinfer1::IExprBuilder&) const {
  // What can be decided on symbolic dims is refused here with the shape rule's messages; V >= 1 and
  // prev's shape are checked on the concrete shapes (getOutputShapes on constants, onShapeChange).
  const bool has_prev = nbInputs > 1;
  if (signal_ == ExitSignal::kCosine && !has_prev) {
    fail(spec().name, "signal=cosine needs input 'prev' (the previous exit's output)");
  }
  if (signal_ != ExitSignal::kCosine && has_prev) fail(spec().name, "input 'prev' is only read by signal=cosine");
  if (in[0].nbDims < 2) {
    fail(spec().name, "input 'x' must have rank >= 2 [..., V], got rank " + std::to_string(in[0].nbDims));
  }
  if (has_prev && in[1].nbDims != in[0].nbDims) {
    fail(spec().name, "input 'prev' must have the shape of 'x', got rank " + std::to_string(in[1].nbDims) +
                          " for rank " + std::to_string(in[0].nbDims));
  }
  // score and take: x's dims without the last axis.
  for (int32_t o = 0; o < 2; ++o) {
    out[o].nbDims = in[0].nbDims - 1;
    for (int32_t k = 0; k < out[o].nbDims; ++k) out[o].d[k] = in[0].d[k];
  }
}

void ExitGatePlugin::run(const RunArgs& a) const {
  const Shape& s = a.in_shapes.at(0);
  ExitGateParams p;
  p.x = a.inputs[0];
  p.prev = a.in_shapes.size() > 1 ? a.inputs[1] : nullptr;
  p.score = static_cast<float*>(a.outputs[0]);
  p.take = static_cast<bool*>(a.outputs[1]);
  p.v = s.back();
  p.rows = numel(Shape(s.begin(), s.end() - 1));
  p.dtype = a.in_types.at(0);
  p.signal = signal_;
  p.threshold = attrs().get_float("threshold");
  launch_exit_gate(p, a.launch);
}

}  // namespace parekit::trt

PAREKIT_PLUGIN_FACTORY(ExitGate, ExitGatePlugin)
