// parekit native kernels: the types every kernel, the ONNX Runtime glue, the test runner and (later) the
// TensorRT plugins share. C++17, standard library only.
//
// A kernel sees its inputs and outputs through a Context (tensors with a dtype, a shape and a pointer)
// and its attributes through Attrs. It validates what it is given (ranks, dims, dtypes) and throws
// parekit::Error naming the op and what is wrong; the glue turns that into a runtime's error status.
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <functional>
#include <map>
#include <memory>
#include <stdexcept>
#include <string>
#include <vector>

namespace parekit {

// Element types, numbered like ONNX's TensorProto.DataType (and ONNX Runtime's ONNXTensorElementDataType).
enum class DType : int32_t {
  kFloat32 = 1,
  kUInt8 = 2,
  kInt8 = 3,
  kInt32 = 6,
  kInt64 = 7,
  kBool = 9,
  kFloat16 = 10,
  kFloat64 = 11,
  kBFloat16 = 16,
};

const char* dtype_name(DType t);
size_t dtype_size(DType t);
bool is_float(DType t);

class Error : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

using Shape = std::vector<int64_t>;

int64_t numel(const Shape& shape);
std::string shape_text(const Shape& shape);

struct ConstTensor {
  DType dtype{DType::kFloat32};
  Shape shape;
  const void* data{nullptr};

  int64_t size() const { return numel(shape); }
  int64_t dim(size_t i) const { return shape.at(i); }
  size_t rank() const { return shape.size(); }
  template <typename T>
  const T* as() const {
    return static_cast<const T*>(data);
  }
};

struct Tensor {
  DType dtype{DType::kFloat32};
  Shape shape;
  void* data{nullptr};

  int64_t size() const { return numel(shape); }
  template <typename T>
  T* as() const {
    return static_cast<T*>(data);
  }
};

// fp16 / bf16 <-> fp32, round to nearest even (what NumPy and ONNX Runtime do).
float half_to_float(uint16_t h);
uint16_t float_to_half(float f);
inline float bf16_to_float(uint16_t b) {
  uint32_t bits = static_cast<uint32_t>(b) << 16;
  float f;
  std::memcpy(&f, &bits, sizeof f);
  return f;
}
uint16_t float_to_bf16(float f);

// Reads element i of a tensor of any numeric dtype as double / writes a double into one.
double load_as_double(const void* data, DType t, int64_t i);
void store_from_double(void* data, DType t, int64_t i, double v);
// "nonzero" for masks of any dtype (bool, ints, floats).
bool load_truthy(const void* data, DType t, int64_t i);

// Attribute values, as ONNX carries them (ints are int64; TensorRT narrows them to int32 fields).
struct AttrValue {
  enum class Kind { kInt, kFloat, kString, kInts, kFloats } kind{Kind::kInt};
  int64_t i{0};
  float f{0.0f};
  std::string s;
  std::vector<int64_t> ints;
  std::vector<float> floats;
};

struct AttrDecl {
  std::string name;
  AttrValue::Kind kind;
  AttrValue default_value;  // every parekit attribute has a default (the Python OpDef's)
  bool has_min{false};
  double min{0};
  bool has_max{false};
  double max{0};
};

class Attrs {
 public:
  Attrs() = default;
  Attrs(std::string op, std::map<std::string, AttrValue> values)
      : op_(std::move(op)), values_(std::move(values)) {}
  int64_t get_int(const std::string& name) const;
  float get_float(const std::string& name) const;
  const std::string& get_string(const std::string& name) const;
  const std::map<std::string, AttrValue>& values() const { return values_; }

 private:
  const AttrValue& get(const std::string& name, AttrValue::Kind kind) const;
  std::string op_;
  std::map<std::string, AttrValue> values_;
};

// What a kernel runs in: inputs, output allocation, a parallel-for.
class Context {
 public:
  virtual ~Context() = default;
  virtual size_t num_inputs() const = 0;
  virtual ConstTensor input(size_t i) const = 0;
  // Allocates output i with this shape; its dtype is the one the node was bound with.
  virtual Tensor output(size_t i, const Shape& shape) = 0;
  // Calls fn(begin, end) over disjoint chunks covering [0, n), possibly on several threads.
  // `cost` is a rough per-item cost in elements touched: small jobs run inline.
  virtual void parallel_for(int64_t n, double cost, const std::function<void(int64_t, int64_t)>& fn) const;
};

class Kernel {
 public:
  virtual ~Kernel() = default;
  virtual void compute(Context& ctx) const = 0;
};

// One dtype binding of an op: the element type of every input, then of every output.
struct TypeVariant {
  std::vector<DType> inputs;
  std::vector<DType> outputs;
};

struct OpSpec {
  std::string name;          // == OpDef.op_type
  std::string version;       // == OpDef.plugin_version
  std::vector<std::string> inputs;
  std::vector<std::string> outputs;
  std::vector<AttrDecl> attrs;
  std::vector<TypeVariant> variants;
  // How many trailing inputs a node may leave out (0: every input is required). A kernel sees the inputs
  // the node gives (Context::num_inputs); variants still list a dtype for every input.
  size_t optional_inputs{0};
  // Builds the kernel once per node (attributes are validated before this is called).
  std::function<std::unique_ptr<Kernel>(const Attrs&)> create;
  // The shape rule: the output shapes for these input shapes (as many as the node gives), validating them
  // as the kernel does (same Error messages). The TensorRT plugins check shapes with it at build and run
  // time, and the test runner checks it against every vector. Every op sets it.
  std::function<std::vector<Shape>(const std::vector<Shape>&, const Attrs&)> shapes;
};

// Every op of the library, in a fixed order.
const std::vector<OpSpec>& all_ops();
const OpSpec* find_op(const std::string& name);

// Validates attribute values against the declarations (kind, range) and fills in defaults; throws Error.
Attrs resolve_attrs(const OpSpec& spec, const std::map<std::string, AttrValue>& given);

// A JSON description of every op (names, versions, I/O, attributes with defaults, dtype variants): the
// Python side checks it against the OpDefs.
std::string describe_ops_json();

// Helpers for kernels: checks that throw Error("<Op>: ...").
[[noreturn]] void fail(const std::string& op, const std::string& what);
void expect_rank(const std::string& op, const char* name, const ConstTensor& t, size_t rank);
void expect_rank(const std::string& op, const char* name, const Shape& shape, size_t rank);
void expect_dim(const std::string& op, const char* what, int64_t got, int64_t want);

// Convenience builders for OpSpec tables.
AttrDecl int_attr(const std::string& name, int64_t def, bool has_min = false, int64_t min = 0,
                  bool has_max = false, int64_t max = 0);
AttrDecl float_attr(const std::string& name, float def, bool has_min = false, double min = 0,
                    bool has_max = false, double max = 0);
AttrDecl string_attr(const std::string& name, const std::string& def);
const std::vector<DType>& float_dtypes();  // float16, bfloat16, float32, float64
const std::vector<DType>& mask_dtypes();   // the floats, bool, int32, int64

}  // namespace parekit
