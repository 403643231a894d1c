// parekit::KvDequantKey as a TensorRT plugin (contract: README.md beside this file). KvDequantValuePlugin
// derives from it: same inputs, output, fields and kernel; only the scale/min group layout differs.
#pragma once

#include "common/plugin_base.h"

namespace parekit::trt {

class KvDequantKeyPlugin : public PluginBase {
 public:
  using PluginBase::PluginBase;

 protected:
  virtual bool per_channel() const { return true; }
  std::unique_ptr<PluginBase> copy() const override;
  void output_exprs(const nvinfer1::DimsExprs* in, int32_t nbInputs, nvinfer1::DimsExprs* out,
                    nvinfer1::IExprBuilder& b) const override;
  void run(const RunArgs& args) const override;
};

}  // namespace parekit::trt
