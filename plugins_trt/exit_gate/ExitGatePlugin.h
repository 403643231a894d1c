// parekit::ExitGate as a TensorRT plugin (contract: README.md beside this file).
#pragma once

#include "common/plugin_base.h"
#include "exit_gate_cuda.h"

namespace parekit::trt {

class ExitGatePlugin final : public PluginBase {
 public:
  // Parses `signal` once: an unknown signal is refused by createPlugin with the kernel's message.
  ExitGatePlugin(const OpSpec& spec, Attrs attrs);

 protected:
  std::unique_ptr<PluginBase> copy() const override;
  void output_exprs(const nvinfer1::DimsExprs* in, int32_t nbInputs, nvinfer1::DimsExprs* out,
                    nvinfer1::IExprBuilder& b) const override;
  void run(const RunArgs& args) const override;

 private:
  ExitSignal signal_;
};

}  // namespace parekit::trt
