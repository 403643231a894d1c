// parekit_plugin_tests: drives every TensorRT plugin of libparekit_trt_plugins through the interfaces
// TensorRT uses, on the vectors the NumPy reference wrote (tests/native/export_vectors.py; format:
// native/tests/kernel_tests.cpp), without TensorRT itself:
//
//   creator (by name/version/namespace) -> createPlugin(fields of the case + plugin_version/namespace)
//   -> getFieldsToSerialize -> createPlugin again (the engine-deserialization path; the copy is run)
//   -> getOutputDataTypes / supportsFormatCombination (every position) -> getOutputShapes on constant
//   dims (checked against OpSpec::shapes) and on opaque dims (the expressions, evaluated)
//   -> onShapeChange -> getWorkspaceSize -> enqueue -> outputs vs the reference (the case's tolerance).
//
//   parekit_plugin_tests [--device] [--exact-twin] [--op NAME] [--require-all] ROOT
//
// --exact-twin: also require the outputs to be bit-identical to the CPU twin's on the same inputs (NaNs
// equal whatever their bits) - stricter than the reference tolerances; a report, not a ctest.
// Without --device, enqueue runs the CUDA kernels' element code emulated on the host (launch.h), which is
// what machines without a GPU can check. With --device the buffers are cudaMalloc'd and the kernels run
// on the GPU. Refusal cases (expect_error) must be refused by createPlugin, getOutputShapes and
// onShapeChange (or createPlugin alone), with the kernel's message in the log.
#include <cuda_runtime_api.h>

#include <algorithm>
#include <cmath>
#include <functional>
#include <cstring>
#include <deque>
#include <iostream>
#include <set>
#include <string>
#include <vector>

#include "cases.h"
#include "common/plugin_base.h"
#include "fake_expr.h"

namespace fs = std::filesystem;
using namespace parekit;
using parekit::test::Case;
using parekit::test::Operand;

namespace {

class CaptureLogger final : public nvinfer1::ILogger {
 public:
  void log(Severity severity, const char* msg) noexcept override {
    if (severity <= Severity::kWARNING) text += std::string(msg) + "\n";
  }
  std::string text;
};

class Finder final : public nvinfer1::ILoggerFinder {
 public:
  explicit Finder(nvinfer1::ILogger* l) : logger_(l) {}
  nvinfer1::ILogger* findLogger() override { return logger_; }

 private:
  nvinfer1::ILogger* logger_;
};

CaptureLogger g_log;

struct Fields {
  std::vector<nvinfer1::PluginField> fields;
  std::deque<int32_t> ints;
  std::deque<float> floats;
  std::deque<std::string> strings;
  nvinfer1::PluginFieldCollection fc{};
};

void make_fields(const Case& c, const OpSpec& spec, Fields& f) {
  for (const auto& [name, v] : c.attrs) {
    if (v.kind == AttrValue::Kind::kInt) {
      f.ints.push_back(static_cast<int32_t>(v.i));
      f.fields.emplace_back(name.c_str(), &f.ints.back(), nvinfer1::PluginFieldType::kINT32, 1);
    } else if (v.kind == AttrValue::Kind::kFloat) {
      f.floats.push_back(v.f);
      f.fields.emplace_back(name.c_str(), &f.floats.back(), nvinfer1::PluginFieldType::kFLOAT32, 1);
    } else {
      f.strings.push_back(v.s);
      f.fields.emplace_back(name.c_str(), f.strings.back().c_str(), nvinfer1::PluginFieldType::kCHAR,
                            static_cast<int32_t>(f.strings.back().size()));
    }
  }
  // What TensorRT's ONNX parser also passes: the node's plugin identity attributes.
  f.strings.push_back(spec.version);
  f.fields.emplace_back("plugin_version", f.strings.back().c_str(), nvinfer1::PluginFieldType::kCHAR,
                        static_cast<int32_t>(f.strings.back().size()));
  f.strings.push_back("parekit");
  f.fields.emplace_back("plugin_namespace", f.strings.back().c_str(), nvinfer1::PluginFieldType::kCHAR,
                        static_cast<int32_t>(f.strings.back().size()));
  f.fc.nbFields = static_cast<int32_t>(f.fields.size());
  f.fc.fields = f.fields.data();
}

nvinfer1::Dims to_dims(const Shape& s) {
  nvinfer1::Dims d;
  d.nbDims = static_cast<int32_t>(s.size());
  for (size_t i = 0; i < s.size(); ++i) d.d[i] = s[i];
  return d;
}

nvinfer1::DataType trt_type(DType t) {
  nvinfer1::DataType out;
  if (!trt::to_trt(t, &out)) throw Error(std::string("no TensorRT type for ") + dtype_name(t));
  return out;
}

struct PluginPtr {
  nvinfer1::IPluginV3* p{nullptr};
  ~PluginPtr() { delete p; }  // TensorRT's ownership rule: whoever calls createPlugin deletes the plugin
};

// Buffers on the host (emulation) or on the device.
class Buffer {
 public:
  Buffer(size_t bytes, bool device) : device_(device), bytes_(bytes) {
    if (device_) {
      if (cudaMalloc(&dev_, std::max<size_t>(bytes, 1)) != cudaSuccess) throw Error("cudaMalloc failed");
    } else {
      host_.resize(std::max<size_t>(bytes, 1));
    }
  }
  ~Buffer() {
    if (device_ && dev_ != nullptr) cudaFree(dev_);
  }
  Buffer(const Buffer&) = delete;
  Buffer& operator=(const Buffer&) = delete;
  void* data() { return device_ ? dev_ : host_.data(); }
  void upload(const std::vector<unsigned char>& bytes) {
    if (bytes.empty()) return;
    if (device_) {
      if (cudaMemcpy(dev_, bytes.data(), bytes.size(), cudaMemcpyHostToDevice) != cudaSuccess) throw Error("cudaMemcpy failed");
    } else {
      std::memcpy(host_.data(), bytes.data(), bytes.size());
    }
  }
  void fill(unsigned char v) {
    if (device_) {
      if (cudaMemset(dev_, v, std::max<size_t>(bytes_, 1)) != cudaSuccess) throw Error("cudaMemset failed");
    } else {
      std::fill(host_.begin(), host_.end(), v);
    }
  }
  std::vector<unsigned char> download() const {
    std::vector<unsigned char> out(bytes_);
    if (bytes_ == 0) return out;
    if (device_) {
      if (cudaMemcpy(out.data(), dev_, bytes_, cudaMemcpyDeviceToHost) != cudaSuccess) throw Error("cudaMemcpy failed");
    } else {
      std::memcpy(out.data(), host_.data(), bytes_);
    }
    return out;
  }

 private:
  bool device_;
  size_t bytes_;
  void* dev_{nullptr};
  std::vector<unsigned char> host_;
};

// The CPU twin run on the same case (for --exact-twin): single-threaded Context over the case's inputs.
class TwinContext final : public Context {
 public:
  TwinContext(const Case& c, std::vector<DType> out_types) : case_(c), types_(std::move(out_types)), bufs_(types_.size()) {}
  size_t num_inputs() const override { return case_.inputs.size(); }
  ConstTensor input(size_t i) const override {
    const Operand& o = case_.inputs.at(i);
    return ConstTensor{o.dtype, o.array.shape, o.array.bytes.empty() ? nullptr : o.array.bytes.data()};
  }
  Tensor output(size_t i, const Shape& shape) override {
    bufs_.at(i).assign(static_cast<size_t>(numel(shape)) * dtype_size(types_[i]), 0xA5);
    return Tensor{types_[i], shape, bufs_[i].empty() ? nullptr : bufs_[i].data()};
  }
  void parallel_for(int64_t n, double, const std::function<void(int64_t, int64_t)>& fn) const override {
    if (n > 0) fn(0, n);
  }
  const std::vector<unsigned char>& buffer(size_t i) const { return bufs_[i]; }

 private:
  const Case& case_;
  std::vector<DType> types_;
  std::vector<std::vector<unsigned char>> bufs_;
};

// Byte equality of two outputs, where a NaN equals any NaN (sign and payload are hardware's).
bool same_bits(const std::vector<unsigned char>& a, const std::vector<unsigned char>& b, DType t) {
  if (a.size() != b.size()) return false;
  if (!is_float(t)) return a == b;
  const int64_t n = static_cast<int64_t>(a.size() / dtype_size(t));
  for (int64_t k = 0; k < n; ++k) {
    const double x = load_as_double(a.data(), t, k), y = load_as_double(b.data(), t, k);
    if (std::isnan(x) && std::isnan(y)) continue;
    const size_t e = dtype_size(t);
    if (std::memcmp(a.data() + static_cast<size_t>(k) * e, b.data() + static_cast<size_t>(k) * e, e) != 0) return false;
  }
  return true;
}

bool g_exact_twin = false;

std::string logged() {
  std::string s = g_log.text;
  g_log.text.clear();
  return s;
}

std::string refusal_check(const Case& c, const std::string& stage, const std::string& log) {
  if (log.find(c.error_text) != std::string::npos) return "";
  return stage + " refused, but the log does not contain '" + c.error_text + "': " + log;
}

// Empty string = pass.
std::string run_case(const Case& c, bool device) {
  const OpSpec* spec = find_op(c.op);
  trt::PluginCreator* creator = nullptr;
  for (const auto& cr : trt::creators()) {
    if (c.op == cr->getPluginName()) creator = cr.get();
  }
  if (spec == nullptr || creator == nullptr) return "the plugin library has no creator for '" + c.op + "'";
  if (std::string(creator->getPluginVersion()) != spec->version || std::string(creator->getPluginNamespace()) != "parekit")
    return "creator identity differs from the OpSpec";
  Fields fields;
  make_fields(c, *spec, fields);
  logged();
  PluginPtr built{creator->createPlugin(c.op.c_str(), &fields.fc, nvinfer1::TensorRTPhase::kBUILD)};
  if (built.p == nullptr) {
    const std::string log = logged();
    if (c.expect_error) return refusal_check(c, "createPlugin", log);
    return "createPlugin failed: " + log;
  }
  // The engine-deserialization path: a second plugin from the serialized fields; that one runs.
  auto* built_rt = static_cast<nvinfer1::IPluginV3OneRuntime*>(built.p->getCapabilityInterface(nvinfer1::PluginCapabilityType::kRUNTIME));
  const nvinfer1::PluginFieldCollection* saved = built_rt->getFieldsToSerialize();
  if (saved == nullptr) return "getFieldsToSerialize failed: " + logged();
  PluginPtr plugin{creator->createPlugin(c.op.c_str(), saved, nvinfer1::TensorRTPhase::kRUNTIME)};
  if (plugin.p == nullptr) return "createPlugin from the serialized fields failed: " + logged();
  PluginPtr cloned{plugin.p->clone()};
  if (cloned.p == nullptr) return "clone failed: " + logged();

  auto* core = static_cast<nvinfer1::IPluginV3OneCore*>(plugin.p->getCapabilityInterface(nvinfer1::PluginCapabilityType::kCORE));
  auto* build = static_cast<nvinfer1::IPluginV3OneBuild*>(plugin.p->getCapabilityInterface(nvinfer1::PluginCapabilityType::kBUILD));
  auto* rt = static_cast<nvinfer1::IPluginV3OneRuntime*>(cloned.p->getCapabilityInterface(nvinfer1::PluginCapabilityType::kRUNTIME));
  if (c.op != core->getPluginName() || spec->version != core->getPluginVersion() ||
      std::string(core->getPluginNamespace()) != "parekit")
    return "plugin identity differs from the OpSpec";

  const auto n_in = static_cast<int32_t>(c.inputs.size());
  const int32_t n_out = build->getNbOutputs();
  if (n_out != static_cast<int32_t>(spec->outputs.size())) return "getNbOutputs differs from the OpSpec";

  // Shapes on build-time constants, then on opaque dims.
  test::FakeBuilder fb_const, fb_opaque;
  std::vector<nvinfer1::DimsExprs> in_const(c.inputs.size()), in_opaque(c.inputs.size());
  for (size_t i = 0; i < c.inputs.size(); ++i) {
    const Shape& s = c.inputs[i].array.shape;
    in_const[i].nbDims = in_opaque[i].nbDims = static_cast<int32_t>(s.size());
    for (size_t k = 0; k < s.size(); ++k) {
      in_const[i].d[k] = fb_const.impl().make(s[k], true);
      in_opaque[i].d[k] = fb_opaque.impl().make(s[k], false);
    }
  }
  std::vector<nvinfer1::DimsExprs> out_const(static_cast<size_t>(n_out)), out_opaque(static_cast<size_t>(n_out));
  const int32_t rc_const = build->getOutputShapes(in_const.data(), n_in, nullptr, 0, out_const.data(), n_out, fb_const);
  const std::string log_const = logged();

  std::vector<nvinfer1::PluginTensorDesc> in_desc(c.inputs.size());
  for (size_t i = 0; i < c.inputs.size(); ++i) {
    in_desc[i].dims = to_dims(c.inputs[i].array.shape);
    in_desc[i].type = trt_type(c.inputs[i].dtype);
    in_desc[i].format = nvinfer1::TensorFormat::kLINEAR;
    in_desc[i].scale = 1.0f;
  }
  if (c.expect_error) {
    if (rc_const == 0) return "getOutputShapes accepted shapes the kernel refuses";
    std::string problem = refusal_check(c, "getOutputShapes", log_const);
    if (!problem.empty()) return problem;
    std::vector<nvinfer1::PluginTensorDesc> out_desc(static_cast<size_t>(n_out), in_desc.at(0));
    if (rt->onShapeChange(in_desc.data(), n_in, out_desc.data(), n_out) == 0) return "onShapeChange accepted shapes the kernel refuses";
    return refusal_check(c, "onShapeChange", logged());
  }
  if (rc_const != 0) return "getOutputShapes failed: " + log_const;
  if (build->getOutputShapes(in_opaque.data(), n_in, nullptr, 0, out_opaque.data(), n_out, fb_opaque) != 0)
    return "getOutputShapes on opaque dims failed: " + logged();
  for (size_t o = 0; o < c.outputs.size(); ++o) {
    Shape got_const, got_opaque;
    for (int32_t k = 0; k < out_const[o].nbDims; ++k) got_const.push_back(test::value_of(out_const[o].d[k]));
    for (int32_t k = 0; k < out_opaque[o].nbDims; ++k) got_opaque.push_back(test::value_of(out_opaque[o].d[k]));
    if (got_const != c.outputs[o].array.shape || got_opaque != c.outputs[o].array.shape) {
      return "getOutputShapes gives output " + std::to_string(o) + " " + shape_text(got_const) + " / " +
             shape_text(got_opaque) + " (constant / opaque dims), expected " + shape_text(c.outputs[o].array.shape);
    }
  }

  // Types and formats.
  std::vector<nvinfer1::DataType> in_types, out_types(static_cast<size_t>(n_out));
  for (const Operand& o : c.inputs) in_types.push_back(trt_type(o.dtype));
  if (build->getOutputDataTypes(out_types.data(), n_out, in_types.data(), n_in) != 0)
    return "getOutputDataTypes failed: " + logged();
  for (size_t o = 0; o < c.outputs.size(); ++o) {
    if (out_types[o] != trt_type(c.outputs[o].dtype)) return "getOutputDataTypes gives a different output " + std::to_string(o) + " type";
  }
  std::vector<nvinfer1::DynamicPluginTensorDesc> dyn(c.inputs.size() + c.outputs.size());
  std::vector<nvinfer1::PluginTensorDesc> out_desc(c.outputs.size());
  for (size_t o = 0; o < c.outputs.size(); ++o) {
    out_desc[o].dims = to_dims(c.outputs[o].array.shape);
    out_desc[o].type = trt_type(c.outputs[o].dtype);
    out_desc[o].format = nvinfer1::TensorFormat::kLINEAR;
    out_desc[o].scale = 1.0f;
  }
  for (size_t k = 0; k < dyn.size(); ++k) {
    dyn[k].desc = k < in_desc.size() ? in_desc[k] : out_desc[k - in_desc.size()];
    dyn[k].min = dyn[k].opt = dyn[k].max = dyn[k].desc.dims;
  }
  for (int32_t pos = 0; pos < n_in + n_out; ++pos) {
    if (!build->supportsFormatCombination(pos, dyn.data(), n_in, n_out))
      return "supportsFormatCombination refuses position " + std::to_string(pos) + " of the case's types";
  }
  {
    auto wrong = dyn;
    wrong[0].desc.format = nvinfer1::TensorFormat::kCHW32;
    if (build->supportsFormatCombination(0, wrong.data(), n_in, n_out)) return "supportsFormatCombination accepts kCHW32";
  }
  if (build->configurePlugin(dyn.data(), n_in, dyn.data() + n_in, n_out) != 0) return "configurePlugin failed: " + logged();
  const size_t ws = build->getWorkspaceSize(dyn.data(), n_in, dyn.data() + n_in, n_out);
  if (rt->onShapeChange(in_desc.data(), n_in, out_desc.data(), n_out) != 0) return "onShapeChange failed: " + logged();

  // enqueue
  std::vector<std::unique_ptr<Buffer>> ins, outs;
  std::vector<const void*> in_ptrs;
  std::vector<void*> out_ptrs;
  for (const Operand& o : c.inputs) {
    ins.push_back(std::make_unique<Buffer>(o.array.bytes.size(), device));
    ins.back()->upload(o.array.bytes);
    in_ptrs.push_back(ins.back()->data());
  }
  for (const Operand& o : c.outputs) {
    outs.push_back(std::make_unique<Buffer>(static_cast<size_t>(numel(o.array.shape)) * dtype_size(o.dtype), device));
    outs.back()->fill(0xA5);  // elements a kernel forgets to write are caught
    out_ptrs.push_back(outs.back()->data());
  }
  Buffer workspace(ws, device);
  workspace.fill(0x5A);
  cudaStream_t stream = nullptr;
  if (device && cudaStreamCreate(&stream) != cudaSuccess) return "cudaStreamCreate failed";
  const int32_t rc = rt->enqueue(in_desc.data(), out_desc.data(), in_ptrs.data(), out_ptrs.data(), workspace.data(), stream);
  if (device) {
    const cudaError_t sync = cudaStreamSynchronize(stream);
    cudaStreamDestroy(stream);
    if (sync != cudaSuccess) return std::string("the kernels failed: ") + cudaGetErrorString(sync);
  }
  if (rc != 0) return "enqueue failed: " + logged();
  std::vector<std::vector<unsigned char>> got;
  std::vector<const void*> got_ptrs;
  std::vector<Shape> got_shapes;
  for (size_t o = 0; o < outs.size(); ++o) {
    got.push_back(outs[o]->download());
    got_shapes.push_back(c.outputs[o].array.shape);
  }
  for (const auto& g : got) got_ptrs.push_back(g.data());
  std::string problem = test::compare_outputs(c, got_ptrs, got_shapes);
  if (!problem.empty() || !g_exact_twin) return problem;
  std::vector<DType> types;
  for (const Operand& o : c.outputs) types.push_back(o.dtype);
  TwinContext twin(c, types);
  spec->create(resolve_attrs(*spec, c.attrs))->compute(twin);
  for (size_t o = 0; o < got.size(); ++o) {
    if (!same_bits(got[o], twin.buffer(o), types[o])) return "output " + std::to_string(o) + " is not bit-identical to the CPU twin's";
  }
  return "";
}

}  // namespace

int main(int argc, char** argv) {
  bool device = false, require_all = false;
  std::string only_op, root;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    if (a == "--device") device = true;
    else if (a == "--exact-twin") g_exact_twin = true;
    else if (a == "--op" && i + 1 < argc) only_op = argv[++i];
    else if (a == "--require-all") require_all = true;
    else if (!a.empty() && a[0] != '-' && root.empty()) root = a;
    else {
      std::cerr << "usage: parekit_plugin_tests [--device] [--exact-twin] [--op NAME] [--require-all] ROOT\n";
      return 2;
    }
  }
  if (root.empty() || !fs::is_directory(root)) {
    std::cerr << "parekit_plugin_tests: no vector folder '" << root
              << "' (export one with: python -m tests.native.export_vectors DIR)\n";
    return 2;
  }
  Finder finder(&g_log);
  trt::set_logger_finder(&finder);
  trt::host_emulation() = !device;
  test::Tally tally = test::run_cases(root, only_op, [&](const Case& c) -> std::string {
    nvinfer1::DataType unused;
    for (const Operand& o : c.inputs) {
      if (!trt::to_trt(o.dtype, &unused)) return test::kSkipCase;  // float64: TensorRT has no such type
    }
    for (const Operand& o : c.outputs) {
      if (!trt::to_trt(o.dtype, &unused)) return test::kSkipCase;  // (the CPU twin covers it)
    }
    return run_case(c, device);
  });
  int passed = tally.passed, failed = tally.failed;
  const int skipped = tally.skipped;
  const std::set<std::string>& seen = tally.seen;
  if (require_all) {
    for (const OpSpec& spec : all_ops()) {
      bool has_plugin = false;
      for (const auto& cr : trt::creators()) has_plugin = has_plugin || spec.name == cr->getPluginName();
      if (!has_plugin) {
        std::cout << "FAIL op " << spec.name << " has no plugin\n";
        ++failed;
      } else if (!seen.count(spec.name)) {
        std::cout << "FAIL op " << spec.name << " has no test vectors\n";
        ++failed;
      }
    }
  }
  std::cout << passed << " passed, " << failed << " failed, " << skipped << " skipped (float64) (" << (device ? "device" : "host emulation") << ")\n";
  return failed == 0 ? 0 : 1;
}
