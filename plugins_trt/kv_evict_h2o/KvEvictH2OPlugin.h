// parekit::KvEvictH2O as a TensorRT plugin (contract: README.md beside this file).
#pragma once

#include "common/plugin_base.h"

namespace parekit::trt {

// Also the base of KvEvictSnapPlugin: the two policies share inputs, outputs, shapes and the launch.
class KvEvictH2OPlugin : public PluginBase {
 public:
  using PluginBase::PluginBase;

 protected:
  std::unique_ptr<PluginBase> copy() const override;
  void output_exprs(const nvinfer1::DimsExprs* in, int32_t nbInputs, nvinfer1::DimsExprs* out,
                    nvinfer1::IExprBuilder& b) const override;
  size_t workspace_bytes(const std::vector<Shape>& in_shapes, const std::vector<DType>& in_types) const override;
  void run(const RunArgs& args) const override;
  // SnapKV (window votes) instead of H2O (accumulated attention with decay).
  virtual bool snap() const { return false; }
};

}  // namespace parekit::trt
