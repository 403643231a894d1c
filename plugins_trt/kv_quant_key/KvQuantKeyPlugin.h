// parekit::KvQuantKey as a TensorRT plugin (contract: README.md beside this file). KvQuantValuePlugin
// derives from it: the two ops share inputs, outputs, fields and kernel, and differ only in the group
// layout of scale/min (per_channel()).
#pragma once

#include "common/plugin_base.h"

namespace parekit::trt {

class KvQuantKeyPlugin : public PluginBase {
 public:
  using PluginBase::PluginBase;

 protected:
  // Keys: scale/min per (group of tokens, channel); values: per (token, group of channels).
  virtual bool per_channel() const { return true; }
  std::unique_ptr<PluginBase> copy() const override;
  void output_exprs(const nvinfer1::DimsExprs* in, int32_t nbInputs, nvinfer1::DimsExprs* out,
                    nvinfer1::IExprBuilder& b) const override;
  void run(const RunArgs& args) const override;
};

}  // namespace parekit::trt
