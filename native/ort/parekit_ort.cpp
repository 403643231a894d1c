// libparekit_ort.so: the parekit kernels as an ONNX Runtime custom-op library (domain "parekit").
//
// ONNX Runtime calls RegisterCustomOps(session_options, api_base) when a session registers the library
// (Python: SessionOptions.register_custom_ops_library(path)). The API comes from that api_base pointer,
// so the library has no link-time dependency on a (symbol-versioned) libonnxruntime and works with the
// ORT that loads it, from the C API version of the headers it was compiled with down to version 17.
//
// Every op of native/kernels is registered once per dtype binding (TypeVariant): ORT merges the
// bindings of one name into one schema and picks the kernel whose types match the node. A registered
// kernel for parekit::X takes precedence over the model-local function X, so the same .onnx file runs
// with the library (kernels) or without it (function bodies).
#include <onnxruntime_c_api.h>

#include <algorithm>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "core.h"

#define PAREKIT_EXPORT extern "C" __attribute__((visibility("default")))

namespace {

using parekit::AttrValue;
using parekit::OpSpec;
using parekit::TypeVariant;

// Oldest C API this library can work with: KernelContext_ParallelFor and CreateKernelV2/KernelComputeV2.
constexpr uint32_t kMinApiVersion = 17;

struct OrtOp : OrtCustomOp {
  const OpSpec* spec{nullptr};
  const TypeVariant* variant{nullptr};
  const OrtApi* api{nullptr};
};

struct KernelState {
  const OrtApi* api{nullptr};
  const OpSpec* spec{nullptr};
  const TypeVariant* variant{nullptr};
  std::unique_ptr<parekit::Kernel> kernel;
};

OrtStatus* make_status(const OrtApi* api, OrtErrorCode code, const std::string& msg) {
  return api->CreateStatus(code, msg.c_str());
}

// Throws parekit::Error carrying ORT's message (and releases the status).
void check(const OrtApi* api, OrtStatus* status, const char* what) {
  if (status == nullptr) return;
  std::string msg = std::string(what) + ": " + api->GetErrorMessage(status);
  api->ReleaseStatus(status);
  throw parekit::Error(msg);
}

class OrtContext : public parekit::Context {
 public:
  OrtContext(const KernelState& state, OrtKernelContext* ctx) : s_(state), ctx_(ctx) {}

  // The inputs the node gives: omitted trailing optional inputs (OpSpec::optional_inputs) do not count.
  size_t num_inputs() const override {
    size_t n = 0;
    check(s_.api, s_.api->KernelContext_GetInputCount(ctx_, &n), "KernelContext_GetInputCount");
    const size_t required = s_.spec->inputs.size() - std::min(s_.spec->optional_inputs, s_.spec->inputs.size());
    while (n > required) {
      const OrtValue* value = nullptr;
      check(s_.api, s_.api->KernelContext_GetInput(ctx_, n - 1, &value), "KernelContext_GetInput");
      if (value != nullptr) break;
      --n;
    }
    return n;
  }

  parekit::ConstTensor input(size_t i) const override {
    const OrtValue* value = nullptr;
    check(s_.api, s_.api->KernelContext_GetInput(ctx_, i, &value), "KernelContext_GetInput");
    if (value == nullptr) parekit::fail(s_.spec->name, "input " + std::to_string(i) + " is missing");
    parekit::ConstTensor t;
    t.shape = shape_of(value);
    t.dtype = i < s_.variant->inputs.size() ? s_.variant->inputs[i] : parekit::DType::kFloat32;
    void* data = nullptr;
    check(s_.api, s_.api->GetTensorMutableData(const_cast<OrtValue*>(value), &data), "GetTensorMutableData");
    t.data = data;
    return t;
  }

  parekit::Tensor output(size_t i, const parekit::Shape& shape) override {
    for (int64_t d : shape) {
      if (d < 0) parekit::fail(s_.spec->name, "negative output dim in " + parekit::shape_text(shape));
    }
    OrtValue* value = nullptr;
    check(s_.api, s_.api->KernelContext_GetOutput(ctx_, i, shape.data(), shape.size(), &value),
          "KernelContext_GetOutput");
    parekit::Tensor t;
    t.shape = shape;
    t.dtype = s_.variant->outputs.at(i);
    void* data = nullptr;
    check(s_.api, s_.api->GetTensorMutableData(value, &data), "GetTensorMutableData");
    t.data = data;
    return t;
  }

  void parallel_for(int64_t n, double cost, const std::function<void(int64_t, int64_t)>& fn) const override {
    if (n <= 0) return;
    // ~64k element-touches per chunk: below that, the thread hand-off costs more than it saves.
    const double total = cost * static_cast<double>(n);
    int64_t chunks = static_cast<int64_t>(std::min<double>(static_cast<double>(n), total / 65536.0));
    if (chunks <= 1) {
      fn(0, n);
      return;
    }
    chunks = std::min<int64_t>(chunks, 256);
    struct Job {
      const std::function<void(int64_t, int64_t)>* fn;
      int64_t n, chunks;
      std::mutex mu;
      std::string error;
    } job{&fn, n, chunks, {}, {}};
    auto body = [](void* data, size_t index) {
      auto* j = static_cast<Job*>(data);
      const int64_t i = static_cast<int64_t>(index);
      try {
        (*j->fn)(i * j->n / j->chunks, (i + 1) * j->n / j->chunks);
      } catch (const std::exception& e) {
        std::lock_guard<std::mutex> lock(j->mu);
        if (j->error.empty()) j->error = e.what();
      }
    };
    check(s_.api, s_.api->KernelContext_ParallelFor(ctx_, body, static_cast<size_t>(chunks), 0, &job),
          "KernelContext_ParallelFor");
    if (!job.error.empty()) throw parekit::Error(job.error);
  }

 private:
  parekit::Shape shape_of(const OrtValue* value) const {
    OrtTensorTypeAndShapeInfo* info = nullptr;
    check(s_.api, s_.api->GetTensorTypeAndShape(value, &info), "GetTensorTypeAndShape");
    std::unique_ptr<OrtTensorTypeAndShapeInfo, void (*)(OrtTensorTypeAndShapeInfo*)> guard(
        info, s_.api->ReleaseTensorTypeAndShapeInfo);
    size_t rank = 0;
    check(s_.api, s_.api->GetDimensionsCount(info, &rank), "GetDimensionsCount");
    parekit::Shape shape(rank);
    check(s_.api, s_.api->GetDimensions(info, shape.data(), rank), "GetDimensions");
    return shape;
  }

  const KernelState& s_;
  OrtKernelContext* ctx_;
};

const OrtOp* as_op(const OrtCustomOp* op) { return static_cast<const OrtOp*>(op); }

// Reads one attribute from the node; absent -> nullopt-like false.
bool read_attr(const OrtApi* api, const OrtKernelInfo* info, const parekit::AttrDecl& decl, AttrValue& out) {
  OrtStatus* status = nullptr;
  out.kind = decl.kind;
  switch (decl.kind) {
    case AttrValue::Kind::kInt:
      status = api->KernelInfoGetAttribute_int64(info, decl.name.c_str(), &out.i);
      break;
    case AttrValue::Kind::kFloat:
      status = api->KernelInfoGetAttribute_float(info, decl.name.c_str(), &out.f);
      break;
    case AttrValue::Kind::kString: {
      size_t size = 0;  // first call: the size, terminating NUL included
      status = api->KernelInfoGetAttribute_string(info, decl.name.c_str(), nullptr, &size);
      if (status == nullptr && size > 0) {
        std::string text(size, '\0');
        status = api->KernelInfoGetAttribute_string(info, decl.name.c_str(), &text[0], &size);
        text.resize(size > 0 ? size - 1 : 0);
        out.s = std::move(text);
      }
      break;
    }
    default:
      return false;  // no parekit op has list attributes yet
  }
  if (status != nullptr) {
    api->ReleaseStatus(status);
    return false;
  }
  return true;
}

OrtStatus* ORT_API_CALL create_kernel(const OrtCustomOp* op, const OrtApi* api, const OrtKernelInfo* info,
                                      void** kernel) {
  const OrtOp* self = as_op(op);
  try {
    std::map<std::string, AttrValue> given;
    for (const parekit::AttrDecl& decl : self->spec->attrs) {
      AttrValue v;
      if (read_attr(api, info, decl, v)) given.emplace(decl.name, std::move(v));
    }
    auto state = std::make_unique<KernelState>();
    state->api = api;
    state->spec = self->spec;
    state->variant = self->variant;
    state->kernel = self->spec->create(parekit::resolve_attrs(*self->spec, given));
    *kernel = state.release();  // owned by ORT until destroy_kernel
    return nullptr;
  } catch (const std::exception& e) {
    return make_status(api, ORT_INVALID_ARGUMENT, e.what());
  }
}

OrtStatus* ORT_API_CALL compute_kernel(void* kernel, OrtKernelContext* context) {
  auto* state = static_cast<KernelState*>(kernel);
  try {
    OrtContext ctx(*state, context);
    state->kernel->compute(ctx);
    return nullptr;
  } catch (const parekit::Error& e) {
    return make_status(state->api, ORT_INVALID_ARGUMENT, e.what());
  } catch (const std::exception& e) {
    return make_status(state->api, ORT_RUNTIME_EXCEPTION, std::string("parekit::") + state->spec->name + ": " + e.what());
  }
}

void ORT_API_CALL destroy_kernel(void* kernel) { std::unique_ptr<KernelState> owned(static_cast<KernelState*>(kernel)); }

const char* ORT_API_CALL op_name(const OrtCustomOp* op) { return as_op(op)->spec->name.c_str(); }
const char* ORT_API_CALL op_provider(const OrtCustomOp*) { return nullptr; }  // CPU
ONNXTensorElementDataType ORT_API_CALL input_type(const OrtCustomOp* op, size_t i) {
  return static_cast<ONNXTensorElementDataType>(as_op(op)->variant->inputs.at(i));
}
size_t ORT_API_CALL input_count(const OrtCustomOp* op) { return as_op(op)->variant->inputs.size(); }
ONNXTensorElementDataType ORT_API_CALL output_type(const OrtCustomOp* op, size_t i) {
  return static_cast<ONNXTensorElementDataType>(as_op(op)->variant->outputs.at(i));
}
size_t ORT_API_CALL output_count(const OrtCustomOp* op) { return as_op(op)->variant->outputs.size(); }
OrtCustomOpInputOutputCharacteristic ORT_API_CALL required(const OrtCustomOp*, size_t) {
  return INPUT_OUTPUT_REQUIRED;
}
// Trailing inputs a node may omit (OpSpec::optional_inputs) are optional; the rest required.
OrtCustomOpInputOutputCharacteristic ORT_API_CALL input_characteristic(const OrtCustomOp* op, size_t i) {
  const OpSpec& spec = *as_op(op)->spec;
  const size_t required_count = spec.inputs.size() - std::min(spec.optional_inputs, spec.inputs.size());
  return i < required_count ? INPUT_OUTPUT_REQUIRED : INPUT_OUTPUT_OPTIONAL;
}
OrtMemType ORT_API_CALL input_memory(const OrtCustomOp*, size_t) { return OrtMemTypeDefault; }
int ORT_API_CALL one(const OrtCustomOp*) { return 1; }

// The OrtCustomOp tables live for the life of the process: ORT keeps pointers to them in every session
// and kernel registry it builds, and may outlive any holder we could tie them to.
struct Tables {
  uint32_t version{0};
  std::vector<std::unique_ptr<OrtOp>> ops;
};

Tables& tables_for(const OrtApi* api, uint32_t version) {
  static std::mutex mu;
  static std::vector<std::unique_ptr<Tables>> all;
  std::lock_guard<std::mutex> lock(mu);
  for (auto& t : all) {
    if (t->version == version) return *t;
  }
  auto t = std::make_unique<Tables>();
  t->version = version;
  for (const OpSpec& spec : parekit::all_ops()) {
    for (const TypeVariant& variant : spec.variants) {
      auto op = std::make_unique<OrtOp>();
      OrtCustomOp& base = *op;
      base = OrtCustomOp{};
      base.version = version;
      base.GetName = op_name;
      base.GetExecutionProviderType = op_provider;
      base.GetInputType = input_type;
      base.GetInputTypeCount = input_count;
      base.GetOutputType = output_type;
      base.GetOutputTypeCount = output_count;
      base.KernelDestroy = destroy_kernel;
      base.GetInputCharacteristic = input_characteristic;
      base.GetOutputCharacteristic = required;
      base.GetInputMemoryType = input_memory;
      base.GetVariadicInputMinArity = one;
      base.GetVariadicInputHomogeneity = one;
      base.GetVariadicOutputMinArity = one;
      base.GetVariadicOutputHomogeneity = one;
      base.CreateKernelV2 = create_kernel;
      base.KernelComputeV2 = compute_kernel;
      op->spec = &spec;
      op->variant = &variant;
      op->api = api;
      t->ops.push_back(std::move(op));
    }
  }
  all.push_back(std::move(t));
  return *all.back();
}

}  // namespace

// Called by ONNX Runtime when a session registers this library.
PAREKIT_EXPORT OrtStatus* ORT_API_CALL RegisterCustomOps(OrtSessionOptions* options, const OrtApiBase* api_base) {
  if (api_base == nullptr) return nullptr;
  const OrtApi* api = nullptr;
  uint32_t version = ORT_API_VERSION;
  for (; version >= kMinApiVersion; --version) {
    api = api_base->GetApi(version);
    if (api != nullptr) break;
  }
  if (api == nullptr) {
    // Every C API version starts with CreateStatus, so version 1 can still report the problem.
    const OrtApi* oldest = api_base->GetApi(1);
    std::string msg = std::string("parekit: libparekit_ort needs ONNX Runtime C API >= ") +
                      std::to_string(kMinApiVersion) + " (ONNX Runtime 1." + std::to_string(kMinApiVersion) +
                      "); this ONNX Runtime is " + api_base->GetVersionString();
    return oldest != nullptr ? oldest->CreateStatus(ORT_FAIL, msg.c_str()) : nullptr;
  }
  try {
    Tables& tables = tables_for(api, version);
    OrtCustomOpDomain* domain = nullptr;
    if (OrtStatus* s = api->CreateCustomOpDomain("parekit", &domain)) return s;
    for (auto& op : tables.ops) {
      if (OrtStatus* s = api->CustomOpDomain_Add(domain, op.get())) return s;
    }
    // The session options keep the domain pointer; ORT does not take ownership, so it is never released.
    return api->AddCustomOpDomain(options, domain);
  } catch (const std::exception& e) {
    return make_status(api, ORT_FAIL, std::string("parekit: cannot register the custom ops: ") + e.what());
  }
}

// A JSON description of every op and dtype binding the library holds (for `parekit native` and tests).
PAREKIT_EXPORT const char* ParekitDescribeOps() {
  static const std::string json = parekit::describe_ops_json();
  return json.c_str();
}

// The ONNX Runtime C API version the library was compiled against.
PAREKIT_EXPORT int ParekitOrtApiVersion() { return ORT_API_VERSION; }
