// See plugin_base.h.
#include "plugin_base.h"

#include <atomic>
#include <cstring>
#include <exception>
#include <utility>

namespace parekit::trt {

using nvinfer1::DataType;
using nvinfer1::DimsExprs;
using nvinfer1::IDimensionExpr;
using nvinfer1::ILogger;
using nvinfer1::PluginField;
using nvinfer1::PluginFieldType;

namespace {

constexpr const char* kNamespace = "parekit";
std::atomic<nvinfer1::ILoggerFinder*> g_finder{nullptr};

struct TypePair {
  DType ours;
  DataType theirs;
};
constexpr TypePair kTypes[] = {
    {DType::kFloat32, DataType::kFLOAT}, {DType::kFloat16, DataType::kHALF}, {DType::kBFloat16, DataType::kBF16},
    {DType::kInt8, DataType::kINT8},     {DType::kUInt8, DataType::kUINT8},  {DType::kInt32, DataType::kINT32},
    {DType::kInt64, DataType::kINT64},   {DType::kBool, DataType::kBOOL},
};

const char* trt_type_name(DataType t) {
  DType d;
  return from_trt(t, &d) ? dtype_name(d) : "an unsupported TensorRT type";
}

bool variant_has_float64(const TypeVariant& v) {
  for (DType t : v.inputs) if (t == DType::kFloat64) return true;
  for (DType t : v.outputs) if (t == DType::kFloat64) return true;
  return false;
}

std::string where(const OpSpec& spec, const char* entry) { return "parekit::" + spec.name + " plugin, " + entry + ": "; }

// Runs f; on an exception logs it (once, one line) and returns false.
template <typename F>
bool guarded(const OpSpec& spec, const char* entry, F&& f) noexcept {
  try {
    f();
    return true;
  } catch (const std::exception& e) {
    log(ILogger::Severity::kERROR, where(spec, entry) + e.what());
  } catch (...) {
    log(ILogger::Severity::kERROR, where(spec, entry) + "unknown error");
  }
  return false;
}

bool all_constant(const DimsExprs* d, int32_t n) {
  for (int32_t i = 0; i < n; ++i) {
    for (int32_t k = 0; k < d[i].nbDims; ++k) {
      if (d[i].d[k] == nullptr || !d[i].d[k]->isConstant()) return false;
    }
  }
  return true;
}

bool known(const nvinfer1::Dims& d) {
  if (d.nbDims < 0) return false;
  for (int32_t k = 0; k < d.nbDims; ++k) if (d.d[k] < 0) return false;
  return true;
}

std::vector<PluginField> declared_fields(const OpSpec& spec) {
  std::vector<PluginField> out;
  for (const AttrDecl& a : spec.attrs) {
    PluginFieldType t = PluginFieldType::kINT32;
    if (a.kind == AttrValue::Kind::kFloat) t = PluginFieldType::kFLOAT32;
    else if (a.kind == AttrValue::Kind::kString) t = PluginFieldType::kCHAR;
    else if (a.kind != AttrValue::Kind::kInt) throw Error(spec.name + ": attribute '" + a.name + "' has no plugin field type");
    out.emplace_back(a.name.c_str(), nullptr, t, 1);
  }
  return out;
}

}  // namespace

bool to_trt(DType t, DataType* out) {
  for (const TypePair& p : kTypes) {
    if (p.ours == t) {
      *out = p.theirs;
      return true;
    }
  }
  return false;
}

bool from_trt(DataType t, DType* out) {
  for (const TypePair& p : kTypes) {
    if (p.theirs == t) {
      *out = p.ours;
      return true;
    }
  }
  return false;
}

void set_logger_finder(nvinfer1::ILoggerFinder* finder) { g_finder.store(finder); }

void log(ILogger::Severity severity, const std::string& message) {
  nvinfer1::ILoggerFinder* finder = g_finder.load();
  ILogger* logger = finder != nullptr ? finder->findLogger() : nullptr;
  if (logger != nullptr) logger->log(severity, message.c_str());
}

bool& host_emulation() {
  static bool on = false;
  return on;
}

Shape to_shape(const nvinfer1::Dims& d) {
  if (d.nbDims < 0 || d.nbDims > nvinfer1::Dims::MAX_DIMS) throw Error("bad tensor rank " + std::to_string(d.nbDims));
  return Shape(d.d, d.d + d.nbDims);
}

Attrs attrs_from_fields(const OpSpec& spec, const nvinfer1::PluginFieldCollection* fc) {
  std::map<std::string, AttrValue> given;
  const int32_t n = fc != nullptr ? fc->nbFields : 0;
  if (n < 0 || (n > 0 && fc->fields == nullptr)) throw Error(spec.name + ": malformed PluginFieldCollection");
  for (int32_t i = 0; i < n; ++i) {
    const PluginField& f = fc->fields[i];
    if (f.name == nullptr) throw Error(spec.name + ": a plugin field has no name");
    const std::string name = f.name;
    if (name.rfind("plugin_", 0) == 0) continue;  // plugin_version / plugin_namespace of the ONNX node
    const AttrDecl* decl = nullptr;
    for (const AttrDecl& a : spec.attrs) if (a.name == name) decl = &a;
    if (decl == nullptr) throw Error(spec.name + ": unknown plugin field '" + name + "'");
    if (f.data == nullptr) throw Error(spec.name + ": plugin field '" + name + "' has no data");
    AttrValue v;
    v.kind = decl->kind;
    const std::string bad = spec.name + ": plugin field '" + name + "' ";
    if (decl->kind == AttrValue::Kind::kString) {
      if (f.type != PluginFieldType::kCHAR || f.length < 0) throw Error(bad + "must be kCHAR");
      const char* s = static_cast<const char*>(f.data);
      size_t len = static_cast<size_t>(f.length);
      while (len > 0 && s[len - 1] == '\0') --len;
      v.s.assign(s, len);
    } else {
      if (f.length != 1) throw Error(bad + "must hold one value, got " + std::to_string(f.length));
      if (decl->kind == AttrValue::Kind::kInt) {
        switch (f.type) {
          case PluginFieldType::kINT32: v.i = *static_cast<const int32_t*>(f.data); break;
          case PluginFieldType::kINT64: v.i = *static_cast<const int64_t*>(f.data); break;
          case PluginFieldType::kINT16: v.i = *static_cast<const int16_t*>(f.data); break;
          case PluginFieldType::kINT8: v.i = *static_cast<const int8_t*>(f.data); break;
          default: throw Error(bad + "must be an integer (kINT32)");
        }
      } else {
        switch (f.type) {
          case PluginFieldType::kFLOAT32: v.f = *static_cast<const float*>(f.data); break;
          case PluginFieldType::kFLOAT64: v.f = static_cast<float>(*static_cast<const double*>(f.data)); break;
          default: throw Error(bad + "must be a float (kFLOAT32)");
        }
      }
    }
    given[name] = v;
  }
  Attrs attrs = resolve_attrs(spec, given);
  for (const AttrDecl& a : spec.attrs) {
    if (a.kind == AttrValue::Kind::kInt) {
      const int64_t i = attrs.get_int(a.name);
      if (i < INT32_MIN || i > INT32_MAX) throw Error(spec.name + ": attribute '" + a.name + "' does not fit int32");
    }
  }
  return attrs;
}

// -- PluginBase --------------------------------------------------------------------------------------

PluginBase::PluginBase(const OpSpec& spec, Attrs attrs) : spec_(&spec), attrs_(std::move(attrs)) {
  for (const TypeVariant& v : spec.variants) {
    if (!variant_has_float64(v)) variants_.push_back(v);
  }
}

PluginBase::PluginBase(const PluginBase& other)
    : nvinfer1::IPluginV3(other),
      nvinfer1::IPluginV3OneCore(other),
      nvinfer1::IPluginV3OneBuild(other),
      nvinfer1::IPluginV3OneRuntime(other),
      spec_(other.spec_),
      attrs_(other.attrs_),
      variants_(other.variants_),
      inputs_given_(other.inputs_given_),
      shaped_(other.shaped_) {}

nvinfer1::IPluginCapability* PluginBase::getCapabilityInterface(nvinfer1::PluginCapabilityType type) noexcept {
  switch (type) {
    case nvinfer1::PluginCapabilityType::kBUILD: return static_cast<nvinfer1::IPluginV3OneBuild*>(this);
    case nvinfer1::PluginCapabilityType::kRUNTIME: return static_cast<nvinfer1::IPluginV3OneRuntime*>(this);
    case nvinfer1::PluginCapabilityType::kCORE: return static_cast<nvinfer1::IPluginV3OneCore*>(this);
  }
  return nullptr;
}

nvinfer1::IPluginV3* PluginBase::clone() noexcept {
  nvinfer1::IPluginV3* out = nullptr;
  guarded(*spec_, "clone", [&] { out = copy().release(); });  // TensorRT owns (and deletes) the clone
  return out;
}

const char* PluginBase::getPluginName() const noexcept { return spec_->name.c_str(); }
const char* PluginBase::getPluginVersion() const noexcept { return spec_->version.c_str(); }
const char* PluginBase::getPluginNamespace() const noexcept { return kNamespace; }

bool PluginBase::accepts_input_count(int32_t n) const {
  const auto total = static_cast<int32_t>(spec_->inputs.size());
  return n <= total && n >= total - static_cast<int32_t>(spec_->optional_inputs);
}

int32_t PluginBase::getNbOutputs() const noexcept { return static_cast<int32_t>(spec_->outputs.size()); }

int32_t PluginBase::configurePlugin(const nvinfer1::DynamicPluginTensorDesc* in, int32_t nbInputs,
                                    const nvinfer1::DynamicPluginTensorDesc* out, int32_t nbOutputs) noexcept {
  const bool ok = guarded(*spec_, "configurePlugin", [&] {
    if (!accepts_input_count(nbInputs) || nbOutputs != getNbOutputs()) fail(spec_->name, "wrong number of inputs or outputs");
    std::vector<Shape> shapes;
    for (int32_t i = 0; i < nbInputs; ++i) {
      if (!known(in[i].desc.dims)) return;  // dynamic: checked by onShapeChange at run time
      shapes.push_back(to_shape(in[i].desc.dims));
    }
    (void)out;
    spec_->shapes(shapes, attrs_);
  });
  return ok ? 0 : -1;
}

int32_t PluginBase::getOutputDataTypes(DataType* outputTypes, int32_t nbOutputs, const DataType* inputTypes,
                                       int32_t nbInputs) const noexcept {
  const bool ok = guarded(*spec_, "getOutputDataTypes", [&] {
    if (!accepts_input_count(nbInputs) || nbOutputs != getNbOutputs()) fail(spec_->name, "wrong number of inputs or outputs");
    for (const TypeVariant& v : variants_) {
      bool match = true;
      for (int32_t i = 0; i < nbInputs && match; ++i) {
        DataType t;
        match = to_trt(v.inputs[static_cast<size_t>(i)], &t) && t == inputTypes[i];
      }
      if (!match) continue;
      for (int32_t o = 0; o < nbOutputs; ++o) to_trt(v.outputs[static_cast<size_t>(o)], &outputTypes[o]);
      return;
    }
    std::string got;
    for (int32_t i = 0; i < nbInputs; ++i) got += std::string(i ? ", " : "") + trt_type_name(inputTypes[i]);
    fail(spec_->name, "no dtype binding for inputs (" + got + ")");
  });
  return ok ? 0 : -1;
}

int32_t PluginBase::getOutputShapes(const DimsExprs* inputs, int32_t nbInputs, const DimsExprs*, int32_t,
                                    DimsExprs* outputs, int32_t nbOutputs, nvinfer1::IExprBuilder& b) noexcept {
  const bool ok = guarded(*spec_, "getOutputShapes", [&] {
    if (!accepts_input_count(nbInputs) || nbOutputs != getNbOutputs()) fail(spec_->name, "wrong number of inputs or outputs");
    if (!all_constant(inputs, nbInputs)) {
      output_exprs(inputs, nbInputs, outputs, b);
      return;
    }
    // Build-time constant shapes: the rule must accept them (its refusals name the problem as the kernel
    // does), and the expressions must agree with it.
    std::vector<Shape> shapes;
    for (int32_t i = 0; i < nbInputs; ++i) {
      Shape s;
      for (int32_t k = 0; k < inputs[i].nbDims; ++k) s.push_back(inputs[i].d[k]->getConstantValue());
      shapes.push_back(s);
    }
    const std::vector<Shape> want = spec_->shapes(shapes, attrs_);
    output_exprs(inputs, nbInputs, outputs, b);
    for (int32_t o = 0; o < nbOutputs; ++o) {
      Shape got;
      for (int32_t k = 0; k < outputs[o].nbDims; ++k) {
        if (outputs[o].d[k] == nullptr || !outputs[o].d[k]->isConstant()) fail(spec_->name, "internal: non-constant output dim");
        got.push_back(outputs[o].d[k]->getConstantValue());
      }
      if (got != want.at(static_cast<size_t>(o))) {
        fail(spec_->name, "internal: output " + std::to_string(o) + " expression " + shape_text(got) +
                              " disagrees with the shape rule " + shape_text(want[static_cast<size_t>(o)]));
      }
    }
  });
  return ok ? 0 : -1;
}

bool PluginBase::supportsFormatCombination(int32_t pos, const nvinfer1::DynamicPluginTensorDesc* inOut,
                                           int32_t nbInputs, int32_t nbOutputs) noexcept {
  if (pos < 0 || pos >= nbInputs + nbOutputs || !accepts_input_count(nbInputs) || nbOutputs != getNbOutputs()) return false;
  if (inOut[pos].desc.format != nvinfer1::TensorFormat::kLINEAR) return false;
  for (const TypeVariant& v : variants_) {
    bool match = true;
    for (int32_t k = 0; k <= pos && match; ++k) {
      const DType want = k < nbInputs ? v.inputs[static_cast<size_t>(k)] : v.outputs[static_cast<size_t>(k - nbInputs)];
      DataType t;
      match = to_trt(want, &t) && t == inOut[k].desc.type;
    }
    if (match) return true;
  }
  return false;
}

size_t PluginBase::workspace_bytes(const std::vector<Shape>&, const std::vector<DType>&) const { return 0; }

size_t PluginBase::getWorkspaceSize(const nvinfer1::DynamicPluginTensorDesc* inputs, int32_t nbInputs,
                                    const nvinfer1::DynamicPluginTensorDesc*, int32_t) const noexcept {
  size_t bytes = 0;
  guarded(*spec_, "getWorkspaceSize", [&] {
    std::vector<Shape> shapes;
    std::vector<DType> types;
    for (int32_t i = 0; i < nbInputs; ++i) {
      shapes.push_back(to_shape(inputs[i].max));
      DType t;
      if (!from_trt(inputs[i].desc.type, &t)) fail(spec_->name, "unsupported input type");
      types.push_back(t);
    }
    bytes = workspace_bytes(shapes, types);
  });
  return bytes;
}

int32_t PluginBase::onShapeChange(const nvinfer1::PluginTensorDesc* in, int32_t nbInputs,
                                  const nvinfer1::PluginTensorDesc* out, int32_t nbOutputs) noexcept {
  const bool ok = guarded(*spec_, "onShapeChange", [&] {
    if (!accepts_input_count(nbInputs) || nbOutputs != getNbOutputs()) fail(spec_->name, "wrong number of inputs or outputs");
    std::vector<Shape> shapes;
    for (int32_t i = 0; i < nbInputs; ++i) shapes.push_back(to_shape(in[i].dims));
    const std::vector<Shape> want = spec_->shapes(shapes, attrs_);
    for (int32_t o = 0; o < nbOutputs; ++o) {
      if (to_shape(out[o].dims) != want.at(static_cast<size_t>(o))) {
        fail(spec_->name, "output " + std::to_string(o) + " has shape " + shape_text(to_shape(out[o].dims)) +
                              ", the shape rule gives " + shape_text(want[static_cast<size_t>(o)]));
      }
    }
    inputs_given_ = static_cast<size_t>(nbInputs);
    shaped_ = true;
  });
  return ok ? 0 : -1;
}

int32_t PluginBase::enqueue(const nvinfer1::PluginTensorDesc* inputDesc, const nvinfer1::PluginTensorDesc* outputDesc,
                            const void* const* inputs, void* const* outputs, void* workspace,
                            cudaStream_t stream) noexcept {
  const bool ok = guarded(*spec_, "enqueue", [&] {
    RunArgs args;
    const auto n_out = static_cast<size_t>(getNbOutputs());
    // TensorRT passes as many input descs as the node has inputs; count them through onShapeChange's rule.
    if (!shaped_) fail(spec_->name, "enqueue before onShapeChange");
    const size_t n_in = inputs_given_;
    for (size_t i = 0; i < n_in; ++i) {
      args.in_shapes.push_back(to_shape(inputDesc[i].dims));
      DType t;
      if (!from_trt(inputDesc[i].type, &t)) fail(spec_->name, "unsupported input type");
      args.in_types.push_back(t);
    }
    for (size_t o = 0; o < n_out; ++o) {
      args.out_shapes.push_back(to_shape(outputDesc[o].dims));
      DType t;
      if (!from_trt(outputDesc[o].type, &t)) fail(spec_->name, "unsupported output type");
      args.out_types.push_back(t);
    }
    args.inputs = inputs;
    args.outputs = outputs;
    args.workspace = workspace;
    args.launch = Launch{stream, host_emulation()};
    run(args);
  });
  return ok ? 0 : -1;
}

nvinfer1::IPluginV3* PluginBase::attachToContext(nvinfer1::IPluginResourceContext*) noexcept { return clone(); }

const nvinfer1::PluginFieldCollection* PluginBase::getFieldsToSerialize() noexcept {
  const bool ok = guarded(*spec_, "getFieldsToSerialize", [&] {
    fields_.clear();
    ints_.clear();
    floats_.clear();
    strings_.clear();
    ints_.reserve(spec_->attrs.size());
    floats_.reserve(spec_->attrs.size());
    strings_.reserve(spec_->attrs.size());
    for (const AttrDecl& a : spec_->attrs) {
      if (a.kind == AttrValue::Kind::kInt) {
        ints_.push_back(static_cast<int32_t>(attrs_.get_int(a.name)));
        fields_.emplace_back(a.name.c_str(), &ints_.back(), PluginFieldType::kINT32, 1);
      } else if (a.kind == AttrValue::Kind::kFloat) {
        floats_.push_back(attrs_.get_float(a.name));
        fields_.emplace_back(a.name.c_str(), &floats_.back(), PluginFieldType::kFLOAT32, 1);
      } else {
        strings_.push_back(attrs_.get_string(a.name));
        fields_.emplace_back(a.name.c_str(), strings_.back().c_str(), PluginFieldType::kCHAR,
                             static_cast<int32_t>(strings_.back().size()));
      }
    }
    fc_.nbFields = static_cast<int32_t>(fields_.size());
    fc_.fields = fields_.data();
  });
  return ok ? &fc_ : nullptr;
}

void PluginBase::need_rank(const DimsExprs& d, int32_t input, int32_t rank) const {
  if (d.nbDims != rank) {
    fail(spec_->name, "input '" + spec_->inputs.at(static_cast<size_t>(input)) + "' must have rank " +
                          std::to_string(rank) + ", got rank " + std::to_string(d.nbDims));
  }
}

DimsExprs PluginBase::dims(std::initializer_list<const IDimensionExpr*> d) {
  DimsExprs out;
  out.nbDims = 0;
  for (const IDimensionExpr* e : d) {
    if (e == nullptr) throw Error("null dimension expression");
    out.d[out.nbDims++] = e;
  }
  return out;
}

// -- PluginCreator -----------------------------------------------------------------------------------

PluginCreator::PluginCreator(const OpSpec& spec, PluginFactory factory)
    : spec_(&spec), factory_(factory), fields_(declared_fields(spec)) {
  fc_.nbFields = static_cast<int32_t>(fields_.size());
  fc_.fields = fields_.data();
}

nvinfer1::IPluginV3* PluginCreator::createPlugin(const char*, const nvinfer1::PluginFieldCollection* fc,
                                                 nvinfer1::TensorRTPhase) noexcept {
  nvinfer1::IPluginV3* out = nullptr;
  guarded(*spec_, "createPlugin", [&] { out = factory_(*spec_, attrs_from_fields(*spec_, fc)).release(); });
  return out;
}

const nvinfer1::PluginFieldCollection* PluginCreator::getFieldNames() noexcept { return &fc_; }
const char* PluginCreator::getPluginName() const noexcept { return spec_->name.c_str(); }
const char* PluginCreator::getPluginVersion() const noexcept { return spec_->version.c_str(); }
const char* PluginCreator::getPluginNamespace() const noexcept { return kNamespace; }

}  // namespace parekit::trt
