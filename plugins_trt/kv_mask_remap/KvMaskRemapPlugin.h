// parekit::KvMaskRemap as a TensorRT plugin (contract: README.md beside this file).
#pragma once

#include "common/plugin_base.h"

namespace parekit::trt {

class KvMaskRemapPlugin final : public PluginBase {
 public:
  using PluginBase::PluginBase;

 protected:
  std::unique_ptr<PluginBase> copy() const override;
  void output_exprs(const nvinfer1::DimsExprs* in, int32_t nbInputs, nvinfer1::DimsExprs* out,
                    nvinfer1::IExprBuilder& b) const override;
  void run(const RunArgs& args) const override;
};

}  // namespace parekit::trt
