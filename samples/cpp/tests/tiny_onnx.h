// A minimal ONNX protobuf writer for the tests: just enough of ModelProto to build tiny models in memory,
// so ctest needs neither Python nor a checked-in binary model.
#pragma once

#include <cstdint>
#include <string>
#include <utility>
#include <vector>

namespace tiny_onnx {

// Protobuf wire format: varints and length-delimited fields.
class Message {
 public:
  Message& varint(int field, uint64_t value) {
    key(field, 0);
    put_varint(value);
    return *this;
  }
  Message& bytes(int field, const std::string& value) {
    key(field, 2);
    put_varint(value.size());
    out_ += value;
    return *this;
  }
  Message& message(int field, const Message& value) { return bytes(field, value.out_); }
  const std::string& str() const { return out_; }

 private:
  void key(int field, int wire) { put_varint(static_cast<uint64_t>(field) << 3 | static_cast<uint64_t>(wire)); }
  void put_varint(uint64_t v) {
    while (v >= 0x80) {
      out_ += static_cast<char>((v & 0x7f) | 0x80);
      v >>= 7;
    }
    out_ += static_cast<char>(v);
  }
  std::string out_;
};

enum ElemType { kFloat = 1, kInt8 = 3, kInt64 = 7 };  // TensorProto.DataType

// A dim is a number (fixed) or a name (symbolic).
struct Dim {
  int64_t value = -1;
  std::string name;
  Dim(int64_t v) : value(v) {}             // NOLINT: implicit on purpose, {2, "seq"} reads well
  Dim(const char* n) : name(n) {}          // NOLINT
};

inline Message value_info(const std::string& name, ElemType type, const std::vector<Dim>& dims) {
  Message shape;
  for (const auto& d : dims) {
    Message dim;
    if (d.value >= 0) dim.varint(1, static_cast<uint64_t>(d.value));
    else dim.bytes(2, d.name);
    shape.message(1, dim);
  }
  Message tensor;
  tensor.varint(1, type).message(2, shape);
  Message tp;
  tp.message(1, tensor);
  Message vi;
  vi.bytes(1, name).message(2, tp);
  return vi;
}

inline Message int64_tensor(const std::string& name, const std::vector<int64_t>& dims,
    const std::vector<int64_t>& values) {
  Message t;
  for (int64_t d : dims) t.varint(1, static_cast<uint64_t>(d));
  t.varint(2, kInt64).bytes(8, name);
  t.bytes(9, std::string(reinterpret_cast<const char*>(values.data()), values.size() * sizeof(int64_t)));
  return t;
}

inline Message float_tensor(const std::string& name, const std::vector<int64_t>& dims,
    const std::vector<float>& values) {
  Message t;
  for (int64_t d : dims) t.varint(1, static_cast<uint64_t>(d));
  t.varint(2, kFloat).bytes(8, name);
  t.bytes(9, std::string(reinterpret_cast<const char*>(values.data()), values.size() * sizeof(float)));
  return t;
}

struct Attr {
  std::string name;
  int64_t value;
};

class Graph {
 public:
  Graph& node(const std::string& op, const std::vector<std::string>& in, const std::vector<std::string>& out,
              const std::vector<Attr>& attrs = {}) {
    Message n;
    for (const auto& i : in) n.bytes(1, i);
    for (const auto& o : out) n.bytes(2, o);
    n.bytes(3, out.front() + "_node").bytes(4, op);
    for (const auto& a : attrs) {
      Message attr;
      attr.bytes(1, a.name).varint(3, static_cast<uint64_t>(a.value)).varint(20, 2);  // AttributeProto.INT
      n.message(5, attr);
    }
    graph_.message(1, n);
    return *this;
  }
  Graph& initializer(const Message& tensor) {
    inits_.push_back(tensor);
    return *this;
  }
  Graph& input(const Message& vi) {
    inputs_.push_back(vi);
    return *this;
  }
  Graph& output(const Message& vi) {
    outputs_.push_back(vi);
    return *this;
  }
  // The serialized ModelProto (IR version 8, default-domain opset 18).
  std::string model() const {
    Message g = graph_;
    g.bytes(2, "tiny");
    for (const auto& t : inits_) g.message(5, t);
    for (const auto& i : inputs_) g.message(11, i);
    for (const auto& o : outputs_) g.message(12, o);
    Message opset;
    opset.bytes(1, "").varint(2, 18);
    Message m;
    m.varint(1, 8).bytes(2, "parekit-host-tests").message(7, g).message(8, opset);
    return m.str();
  }

 private:
  Message graph_;
  std::vector<Message> inits_, inputs_, outputs_;
};

}  // namespace tiny_onnx
