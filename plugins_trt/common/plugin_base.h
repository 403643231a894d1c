// The shared half of every parekit TensorRT plugin: an IPluginV3 (OneCore + OneBuild + OneRuntime)
// whose contract - name, version, namespace, fields, dtype bindings, shape rule - is the op's native
// OpSpec (native/kernels, itself checked against parekit/ops by tests/native). An op's plugin adds only
// what is its own: the symbolic output shapes (IExprBuilder), scratch size and the CUDA launch.
//
// Failures never cross the API: each entry point catches, logs one line through the logger TensorRT
// hands over (setLoggerFinder) and returns an error status (-1 / nullptr / false).
#pragma once

#include <NvInferRuntime.h>

#include <memory>
#include <string>
#include <vector>

#include "core.h"
#include "launch.h"

namespace parekit::trt {

// DType <-> nvinfer1::DataType (float64 has no TensorRT type).
bool to_trt(DType t, nvinfer1::DataType* out);
bool from_trt(nvinfer1::DataType t, DType* out);

void set_logger_finder(nvinfer1::ILoggerFinder* finder);
void log(nvinfer1::ILogger::Severity severity, const std::string& message);

// Test hook (not exported from the library): run enqueue's kernels on the host over host pointers.
bool& host_emulation();

// PluginFields -> validated attributes (names, types, ranges from the OpSpec; defaults filled in).
// Fields named plugin_* (the ONNX node's plugin_version / plugin_namespace) are ignored; others that the
// op does not declare are refused.
Attrs attrs_from_fields(const OpSpec& spec, const nvinfer1::PluginFieldCollection* fc);

Shape to_shape(const nvinfer1::Dims& d);

// What enqueue hands an op.
struct RunArgs {
  std::vector<Shape> in_shapes, out_shapes;
  std::vector<DType> in_types, out_types;
  const void* const* inputs{nullptr};
  void* const* outputs{nullptr};
  void* workspace{nullptr};
  Launch launch;
};

class PluginBase : public nvinfer1::IPluginV3,
                   public nvinfer1::IPluginV3OneCore,
                   public nvinfer1::IPluginV3OneBuild,
                   public nvinfer1::IPluginV3OneRuntime {
 public:
  PluginBase(const OpSpec& spec, Attrs attrs);
  PluginBase(const PluginBase& other);
  PluginBase& operator=(const PluginBase&) = delete;
  ~PluginBase() override = default;

  // IPluginV3
  nvinfer1::IPluginCapability* getCapabilityInterface(nvinfer1::PluginCapabilityType type) noexcept override;
  nvinfer1::IPluginV3* clone() noexcept override;

  // IPluginV3OneCore
  const char* getPluginName() const noexcept override;
  const char* getPluginVersion() const noexcept override;
  const char* getPluginNamespace() const noexcept override;

  // IPluginV3OneBuild
  int32_t configurePlugin(const nvinfer1::DynamicPluginTensorDesc* in, int32_t nbInputs,
                          const nvinfer1::DynamicPluginTensorDesc* out, int32_t nbOutputs) noexcept override;
  int32_t getOutputDataTypes(nvinfer1::DataType* outputTypes, int32_t nbOutputs, const nvinfer1::DataType* inputTypes,
                             int32_t nbInputs) const noexcept override;
  int32_t getOutputShapes(const nvinfer1::DimsExprs* inputs, int32_t nbInputs, const nvinfer1::DimsExprs* shapeInputs,
                          int32_t nbShapeInputs, nvinfer1::DimsExprs* outputs, int32_t nbOutputs,
                          nvinfer1::IExprBuilder& exprBuilder) noexcept override;
  bool supportsFormatCombination(int32_t pos, const nvinfer1::DynamicPluginTensorDesc* inOut, int32_t nbInputs,
                                 int32_t nbOutputs) noexcept override;
  int32_t getNbOutputs() const noexcept override;
  size_t getWorkspaceSize(const nvinfer1::DynamicPluginTensorDesc* inputs, int32_t nbInputs,
                          const nvinfer1::DynamicPluginTensorDesc* outputs, int32_t nbOutputs) const noexcept override;

  // IPluginV3OneRuntime
  int32_t onShapeChange(const nvinfer1::PluginTensorDesc* in, int32_t nbInputs, const nvinfer1::PluginTensorDesc* out,
                        int32_t nbOutputs) noexcept override;
  int32_t enqueue(const nvinfer1::PluginTensorDesc* inputDesc, const nvinfer1::PluginTensorDesc* outputDesc,
                  const void* const* inputs, void* const* outputs, void* workspace, cudaStream_t stream) noexcept override;
  nvinfer1::IPluginV3* attachToContext(nvinfer1::IPluginResourceContext* context) noexcept override;
  const nvinfer1::PluginFieldCollection* getFieldsToSerialize() noexcept override;

  const OpSpec& spec() const { return *spec_; }
  const Attrs& attrs() const { return attrs_; }

 protected:
  // A copy of the concrete plugin (clone, attachToContext).
  virtual std::unique_ptr<PluginBase> copy() const = 0;
  // outputs[i] from inputs (as many as the node gives); throw Error (via need_rank / fail) on what the
  // shape rule refuses. Called by getOutputShapes; where every input dim is a build-time constant the
  // result is also checked against OpSpec::shapes.
  virtual void output_exprs(const nvinfer1::DimsExprs* inputs, int32_t nbInputs, nvinfer1::DimsExprs* outputs,
                            nvinfer1::IExprBuilder& b) const = 0;
  // Scratch bytes enqueue needs for these (maximum) input shapes.
  virtual size_t workspace_bytes(const std::vector<Shape>& in_shapes, const std::vector<DType>& in_types) const;
  // Launches the op's kernels (shapes already checked by OpSpec::shapes); throws Error.
  virtual void run(const RunArgs& args) const = 0;

  // Helpers for output_exprs.
  void need_rank(const nvinfer1::DimsExprs& d, int32_t input, int32_t rank) const;
  static nvinfer1::DimsExprs dims(std::initializer_list<const nvinfer1::IDimensionExpr*> d);

 private:
  bool accepts_input_count(int32_t n) const;
  const OpSpec* spec_;
  Attrs attrs_;
  std::vector<TypeVariant> variants_;  // the OpSpec's variants TensorRT can bind (no float64)
  size_t inputs_given_{0};             // inputs of the node, from onShapeChange (enqueue gets no count)
  bool shaped_{false};
  // getFieldsToSerialize storage
  std::vector<nvinfer1::PluginField> fields_;
  std::vector<int32_t> ints_;
  std::vector<float> floats_;
  std::vector<std::string> strings_;
  nvinfer1::PluginFieldCollection fc_{};
};

using PluginFactory = std::unique_ptr<PluginBase> (*)(const OpSpec& spec, Attrs attrs);

class PluginCreator : public nvinfer1::IPluginCreatorV3One {
 public:
  PluginCreator(const OpSpec& spec, PluginFactory factory);
  nvinfer1::IPluginV3* createPlugin(const char* name, const nvinfer1::PluginFieldCollection* fc,
                                    nvinfer1::TensorRTPhase phase) noexcept override;
  const nvinfer1::PluginFieldCollection* getFieldNames() noexcept override;
  const char* getPluginName() const noexcept override;
  const char* getPluginVersion() const noexcept override;
  const char* getPluginNamespace() const noexcept override;

 private:
  const OpSpec* spec_;
  PluginFactory factory_;
  std::vector<nvinfer1::PluginField> fields_;
  nvinfer1::PluginFieldCollection fc_{};
};

// Every creator of the library (plugins.def order); built once. Ops whose OpSpec is missing are logged.
const std::vector<std::unique_ptr<PluginCreator>>& creators();

}  // namespace parekit::trt

// In <Op>Plugin.cpp: defines the factory plugin_library.cpp lists through plugins.def.
#define PAREKIT_PLUGIN_FACTORY(OP, CLASS)                                                          \
  namespace parekit::trt {                                                                          \
  std::unique_ptr<PluginBase> make_##OP##_plugin(const OpSpec& spec, Attrs attrs) {                \
    return std::make_unique<CLASS>(spec, std::move(attrs));                                         \
  }                                                                                                 \
  }
