#include "core.h"
#include "float16.h"

#include <algorithm>
#include <climits>
#include <cmath>
#include <sstream>

namespace parekit {

const char* dtype_name(DType t) {
  switch (t) {
    case DType::kFloat32: return "float32";
    case DType::kUInt8: return "uint8";
    case DType::kInt8: return "int8";
    case DType::kInt32: return "int32";
    case DType::kInt64: return "int64";
    case DType::kBool: return "bool";
    case DType::kFloat16: return "float16";
    case DType::kFloat64: return "float64";
    case DType::kBFloat16: return "bfloat16";
  }
  return "unknown";
}

size_t dtype_size(DType t) {
  switch (t) {
    case DType::kUInt8:
    case DType::kInt8:
    case DType::kBool: return 1;
    case DType::kFloat16:
    case DType::kBFloat16: return 2;
    case DType::kFloat32:
    case DType::kInt32: return 4;
    case DType::kInt64:
    case DType::kFloat64: return 8;
  }
  return 0;
}

bool is_float(DType t) {
  return t == DType::kFloat32 || t == DType::kFloat16 || t == DType::kBFloat16 || t == DType::kFloat64;
}

int64_t numel(const Shape& shape) {
  int64_t n = 1;
  for (int64_t d : shape) n *= d;
  return n;
}

std::string shape_text(const Shape& shape) {
  std::ostringstream out;
  out << '[';
  for (size_t i = 0; i < shape.size(); ++i) out << (i ? ", " : "") << shape[i];
  out << ']';
  return out.str();
}

float half_to_float(uint16_t h) { return fp16::half_to_float(h); }
uint16_t float_to_half(float f) { return fp16::float_to_half(f); }
uint16_t float_to_bf16(float f) { return fp16::float_to_bf16(f); }

double load_as_double(const void* data, DType t, int64_t i) {
  switch (t) {
    case DType::kFloat32: return static_cast<const float*>(data)[i];
    case DType::kFloat64: return static_cast<const double*>(data)[i];
    case DType::kFloat16: return half_to_float(static_cast<const uint16_t*>(data)[i]);
    case DType::kBFloat16: return bf16_to_float(static_cast<const uint16_t*>(data)[i]);
    case DType::kInt8: return static_cast<const int8_t*>(data)[i];
    case DType::kUInt8: return static_cast<const uint8_t*>(data)[i];
    case DType::kInt32: return static_cast<const int32_t*>(data)[i];
    case DType::kInt64: return static_cast<double>(static_cast<const int64_t*>(data)[i]);
    case DType::kBool: return static_cast<const uint8_t*>(data)[i] ? 1.0 : 0.0;
  }
  return 0.0;
}

void store_from_double(void* data, DType t, int64_t i, double v) {
  switch (t) {
    case DType::kFloat32: static_cast<float*>(data)[i] = static_cast<float>(v); return;
    case DType::kFloat64: static_cast<double*>(data)[i] = v; return;
    case DType::kFloat16: static_cast<uint16_t*>(data)[i] = float_to_half(static_cast<float>(v)); return;
    case DType::kBFloat16: static_cast<uint16_t*>(data)[i] = float_to_bf16(static_cast<float>(v)); return;
    case DType::kInt8: static_cast<int8_t*>(data)[i] = static_cast<int8_t>(v); return;
    case DType::kUInt8: static_cast<uint8_t*>(data)[i] = static_cast<uint8_t>(v); return;
    case DType::kInt32: static_cast<int32_t*>(data)[i] = static_cast<int32_t>(v); return;
    case DType::kInt64: static_cast<int64_t*>(data)[i] = static_cast<int64_t>(v); return;
    case DType::kBool: static_cast<uint8_t*>(data)[i] = v != 0.0 ? 1 : 0; return;
  }
}

bool load_truthy(const void* data, DType t, int64_t i) {
  switch (t) {
    case DType::kBool:
    case DType::kInt8:
    case DType::kUInt8: return static_cast<const uint8_t*>(data)[i] != 0;
    case DType::kInt32: return static_cast<const int32_t*>(data)[i] != 0;
    case DType::kInt64: return static_cast<const int64_t*>(data)[i] != 0;
    case DType::kFloat16:
    case DType::kBFloat16: return (static_cast<const uint16_t*>(data)[i] & 0x7fffu) != 0;  // +-0 are false
    case DType::kFloat32: return static_cast<const float*>(data)[i] != 0.0f;
    case DType::kFloat64: return static_cast<const double*>(data)[i] != 0.0;
  }
  return false;
}

const AttrValue& Attrs::get(const std::string& name, AttrValue::Kind kind) const {
  auto it = values_.find(name);
  if (it == values_.end()) fail(op_, "no attribute '" + name + "'");
  if (it->second.kind != kind) fail(op_, "attribute '" + name + "' has the wrong kind");
  return it->second;
}

int64_t Attrs::get_int(const std::string& name) const { return get(name, AttrValue::Kind::kInt).i; }
float Attrs::get_float(const std::string& name) const { return get(name, AttrValue::Kind::kFloat).f; }
const std::string& Attrs::get_string(const std::string& name) const {
  return get(name, AttrValue::Kind::kString).s;
}

void Context::parallel_for(int64_t n, double /*cost*/, const std::function<void(int64_t, int64_t)>& fn) const {
  if (n > 0) fn(0, n);
}

namespace {
std::vector<OpSpec> build_ops();
}

const std::vector<OpSpec>& all_ops() {
  static const std::vector<OpSpec> ops = build_ops();
  return ops;
}

const OpSpec* find_op(const std::string& name) {
  for (const OpSpec& spec : all_ops()) {
    if (spec.name == name) return &spec;
  }
  return nullptr;
}

Attrs resolve_attrs(const OpSpec& spec, const std::map<std::string, AttrValue>& given) {
  std::map<std::string, AttrValue> values;
  for (const AttrDecl& decl : spec.attrs) {
    auto it = given.find(decl.name);
    AttrValue v = it == given.end() ? decl.default_value : it->second;
    if (v.kind != decl.kind) fail(spec.name, "attribute '" + decl.name + "' has the wrong type");
    double x = v.kind == AttrValue::Kind::kInt ? static_cast<double>(v.i) : static_cast<double>(v.f);
    if (v.kind == AttrValue::Kind::kInt && (v.i < INT32_MIN || v.i > INT32_MAX)) {
      // TensorRT plugin fields are int32; the Python OpDef refuses the same values.
      fail(spec.name, "attribute '" + decl.name + "' = " + std::to_string(v.i) + " does not fit int32");
    }
    if (v.kind == AttrValue::Kind::kInt || v.kind == AttrValue::Kind::kFloat) {
      if (std::isnan(x) || (decl.has_min && x < decl.min) || (decl.has_max && x > decl.max)) {
        std::ostringstream msg;
        msg << "attribute '" << decl.name << "' = " << x << " is out of range";
        if (decl.has_min) msg << " (minimum " << decl.min << ")";
        if (decl.has_max) msg << " (maximum " << decl.max << ")";
        fail(spec.name, msg.str());
      }
    }
    values.emplace(decl.name, std::move(v));
  }
  return Attrs(spec.name, std::move(values));
}

namespace {
void json_string(std::ostringstream& out, const std::string& s) {
  out << '"';
  for (char c : s) {
    if (c == '"' || c == '\\') out << '\\';
    out << c;
  }
  out << '"';
}

const char* kind_name(AttrValue::Kind k) {
  switch (k) {
    case AttrValue::Kind::kInt: return "int";
    case AttrValue::Kind::kFloat: return "float";
    case AttrValue::Kind::kString: return "string";
    case AttrValue::Kind::kInts: return "ints";
    case AttrValue::Kind::kFloats: return "floats";
  }
  return "?";
}

void json_names(std::ostringstream& out, const std::vector<std::string>& names) {
  out << '[';
  for (size_t i = 0; i < names.size(); ++i) {
    if (i) out << ',';
    json_string(out, names[i]);
  }
  out << ']';
}

void json_dtypes(std::ostringstream& out, const std::vector<DType>& types) {
  out << '[';
  for (size_t i = 0; i < types.size(); ++i) out << (i ? "," : "") << '"' << dtype_name(types[i]) << '"';
  out << ']';
}
}  // namespace

std::string describe_ops_json() {
  std::ostringstream out;
  out.precision(9);
  out << "{\"ops\":[";
  bool first = true;
  for (const OpSpec& spec : all_ops()) {
    out << (first ? "" : ",") << "{\"name\":";
    first = false;
    json_string(out, spec.name);
    out << ",\"version\":";
    json_string(out, spec.version);
    out << ",\"inputs\":";
    json_names(out, spec.inputs);
    out << ",\"outputs\":";
    json_names(out, spec.outputs);
    out << ",\"attributes\":[";
    for (size_t i = 0; i < spec.attrs.size(); ++i) {
      const AttrDecl& a = spec.attrs[i];
      out << (i ? "," : "") << "{\"name\":";
      json_string(out, a.name);
      out << ",\"kind\":\"" << kind_name(a.kind) << "\",\"default\":";
      if (a.kind == AttrValue::Kind::kInt) out << a.default_value.i;
      else if (a.kind == AttrValue::Kind::kFloat) out << a.default_value.f;
      else if (a.kind == AttrValue::Kind::kString) json_string(out, a.default_value.s);
      else out << "null";
      out << '}';
    }
    out << "],\"optional_inputs\":" << spec.optional_inputs << ",\"variants\":[";
    for (size_t i = 0; i < spec.variants.size(); ++i) {
      out << (i ? "," : "") << "{\"inputs\":";
      json_dtypes(out, spec.variants[i].inputs);
      out << ",\"outputs\":";
      json_dtypes(out, spec.variants[i].outputs);
      out << '}';
    }
    out << "]}";
  }
  out << "]}";
  return out.str();
}

void fail(const std::string& op, const std::string& what) { throw Error("parekit::" + op + ": " + what); }

void expect_rank(const std::string& op, const char* name, const ConstTensor& t, size_t rank) {
  expect_rank(op, name, t.shape, rank);
}

void expect_rank(const std::string& op, const char* name, const Shape& shape, size_t rank) {
  if (shape.size() != rank) {
    fail(op, std::string("input '") + name + "' must have rank " + std::to_string(rank) + ", got shape " +
                 shape_text(shape));
  }
}

void expect_dim(const std::string& op, const char* what, int64_t got, int64_t want) {
  if (got != want) fail(op, std::string(what) + ": expected " + std::to_string(want) + ", got " + std::to_string(got));
}

AttrDecl int_attr(const std::string& name, int64_t def, bool has_min, int64_t min, bool has_max, int64_t max) {
  AttrDecl d;
  d.name = name;
  d.kind = AttrValue::Kind::kInt;
  d.default_value.kind = AttrValue::Kind::kInt;
  d.default_value.i = def;
  d.has_min = has_min;
  d.min = static_cast<double>(min);
  d.has_max = has_max;
  d.max = static_cast<double>(max);
  return d;
}

AttrDecl float_attr(const std::string& name, float def, bool has_min, double min, bool has_max, double max) {
  AttrDecl d;
  d.name = name;
  d.kind = AttrValue::Kind::kFloat;
  d.default_value.kind = AttrValue::Kind::kFloat;
  d.default_value.f = def;
  d.has_min = has_min;
  d.min = min;
  d.has_max = has_max;
  d.max = max;
  return d;
}

AttrDecl string_attr(const std::string& name, const std::string& def) {
  AttrDecl d;
  d.name = name;
  d.kind = AttrValue::Kind::kString;
  d.default_value.kind = AttrValue::Kind::kString;
  d.default_value.s = def;
  return d;
}

const std::vector<DType>& float_dtypes() {
  static const std::vector<DType> t{DType::kFloat16, DType::kBFloat16, DType::kFloat32, DType::kFloat64};
  return t;
}

const std::vector<DType>& mask_dtypes() {
  static const std::vector<DType> t{DType::kFloat16, DType::kBFloat16, DType::kFloat32, DType::kFloat64,
                                    DType::kBool,    DType::kInt32,    DType::kInt64};
  return t;
}

// The op table: every module listed in ops.def registers its ops here.
#define PAREKIT_OP_MODULE(name) void register_##name(std::vector<OpSpec>& ops);
#include "ops.def"
#undef PAREKIT_OP_MODULE

namespace {
std::vector<OpSpec> build_ops() {
  std::vector<OpSpec> ops;
#define PAREKIT_OP_MODULE(name) register_##name(ops);
#include "ops.def"
#undef PAREKIT_OP_MODULE
  return ops;
}
}  // namespace

}  // namespace parekit
