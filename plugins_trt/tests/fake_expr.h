// A stand-in for TensorRT's IExprBuilder (which has no public constructor) for the plugin harness:
// dimension expressions that carry their value, either as build-time constants or "opaque" (isConstant()
// false, as TensorRT's symbolic dims are) so that a plugin's shape expressions are evaluated without
// the plugin being able to read the input dims.
#pragma once

#include <NvInferRuntime.h>

#include <deque>
#include <memory>
#include <stdexcept>

namespace parekit::test {

class FakeDimImpl final : public nvinfer1::apiv::VDimensionExpr {
 public:
  FakeDimImpl(int64_t v, bool c) : value(v), constant(c) {}
  bool isConstant() const override { return constant; }
  int64_t getConstantValue() const override {
    if (!constant) throw std::logic_error("getConstantValue() on a non-constant dimension");
    return value;
  }
  bool isSizeTensor() const override { return false; }
  int64_t value;
  bool constant;
};

class FakeDim final : public nvinfer1::IDimensionExpr {
 public:
  explicit FakeDim(FakeDimImpl* impl) : impl_(impl) { mImpl = impl; }
  const FakeDimImpl& impl() const { return *impl_; }

 private:
  FakeDimImpl* impl_;
};

class FakeBuilderImpl final : public nvinfer1::apiv::VExprBuilder {
 public:
  const nvinfer1::IDimensionExpr* make(int64_t v, bool constant) {
    impls_.push_back(std::make_unique<FakeDimImpl>(v, constant));
    dims_.push_back(std::make_unique<FakeDim>(impls_.back().get()));
    return dims_.back().get();
  }
  const nvinfer1::IDimensionExpr* constant(int64_t value) override { return make(value, true); }
  const nvinfer1::IDimensionExpr* operation(nvinfer1::DimensionOperation op, const nvinfer1::IDimensionExpr& first,
                                            const nvinfer1::IDimensionExpr& second) override {
    const auto& a = static_cast<const FakeDim&>(first).impl();
    const auto& b = static_cast<const FakeDim&>(second).impl();
    using Op = nvinfer1::DimensionOperation;
    int64_t v = 0;
    switch (op) {
      case Op::kSUM: v = a.value + b.value; break;
      case Op::kPROD: v = a.value * b.value; break;
      case Op::kMAX: v = a.value > b.value ? a.value : b.value; break;
      case Op::kMIN: v = a.value < b.value ? a.value : b.value; break;
      case Op::kSUB: v = a.value - b.value; break;
      case Op::kEQUAL: v = a.value == b.value; break;
      case Op::kLESS: v = a.value < b.value; break;
      case Op::kFLOOR_DIV:
        if (b.value == 0) return nullptr;
        v = a.value / b.value - ((a.value % b.value != 0) && ((a.value < 0) != (b.value < 0)));
        break;
      case Op::kCEIL_DIV:
        if (b.value == 0) return nullptr;
        v = -((-a.value) / b.value - (((-a.value) % b.value != 0) && ((-a.value < 0) != (b.value < 0))));
        break;
      default: return nullptr;
    }
    return make(v, a.constant && b.constant);
  }
  const nvinfer1::IDimensionExpr* declareSizeTensor(int32_t, const nvinfer1::IDimensionExpr&,
                                                    const nvinfer1::IDimensionExpr&) override {
    return nullptr;  // no parekit plugin has data-dependent output sizes
  }

 private:
  std::deque<std::unique_ptr<FakeDimImpl>> impls_;
  std::deque<std::unique_ptr<FakeDim>> dims_;
};

class FakeBuilder final : public nvinfer1::IExprBuilder {
 public:
  FakeBuilder() { mImpl = &impl_; }
  FakeBuilderImpl& impl() { return impl_; }

 private:
  FakeBuilderImpl impl_;
};

inline int64_t value_of(const nvinfer1::IDimensionExpr* e) { return static_cast<const FakeDim*>(e)->impl().value; }

}  // namespace parekit::test
