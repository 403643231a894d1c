// parekit_kernel_tests: runs every kernel on vectors written by the NumPy reference (OpDef.reference,
// exported by tests/native/export_vectors.py) and compares.
//
//   parekit_kernel_tests [--threads N] [--op NAME] [--require-all] ROOT
//
// ROOT holds case folders (any depth), each with a case.txt:
//   op <OpType>
//   attr <name> int|float|string <value>   (absent attributes take the op's default; a string runs to
//                                          the end of the line)
//   input <file.npy> <dtype>               (in order)
//   output <file.npy> <dtype>              (in order; expected values)
//   tolerance <rtol> <atol>                (floats: |got - want| <= atol + rtol * |want|; others exact)
//   expect_error <text>                    (instead of outputs: the kernel must refuse, saying <text>)
// Exit status 0 when every selected case passes; the output names each failing case and the first
// mismatch.
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <exception>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <map>
#include <set>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "core.h"
#include "cases.h"
#include "npy.h"

namespace fs = std::filesystem;
using namespace parekit;
using parekit::test::Case;
using parekit::test::Operand;

namespace {

class TestContext : public Context {
 public:
  TestContext(const Case& c, const TypeVariant& v, int threads) : case_(c), variant_(v), threads_(threads) {
    buffers_.resize(v.outputs.size());
    shapes_.resize(v.outputs.size());
    made_.assign(v.outputs.size(), false);
  }
  size_t num_inputs() const override { return case_.inputs.size(); }
  ConstTensor input(size_t i) const override {
    const Operand& o = case_.inputs.at(i);
    return ConstTensor{o.dtype, o.array.shape, o.array.bytes.empty() ? nullptr : o.array.bytes.data()};
  }
  Tensor output(size_t i, const Shape& shape) override {
    if (i >= made_.size()) throw Error("kernel asked for output " + std::to_string(i) + " of " + std::to_string(made_.size()));
    if (made_[i]) throw Error("kernel allocated output " + std::to_string(i) + " twice");
    for (int64_t d : shape) {
      if (d < 0) throw Error("kernel asked for a negative output dim " + shape_text(shape));
    }
    made_[i] = true;
    shapes_[i] = shape;
    // Filled with a pattern so that elements a kernel forgets to write are caught.
    buffers_[i].assign(static_cast<size_t>(numel(shape)) * dtype_size(variant_.outputs[i]), 0xA5);
    return Tensor{variant_.outputs[i], shape, buffers_[i].empty() ? nullptr : buffers_[i].data()};
  }
  void parallel_for(int64_t n, double, const std::function<void(int64_t, int64_t)>& fn) const override {
    // Always split (whatever the cost) so that the tests exercise the kernels' thread safety.
    const int64_t parts = std::min<int64_t>(n, threads_);
    if (parts <= 1) {
      if (n > 0) fn(0, n);
      return;
    }
    std::vector<std::thread> pool;
    std::vector<std::string> errors(static_cast<size_t>(parts));
    for (int64_t p = 0; p < parts; ++p) {
      pool.emplace_back([&, p] {
        try {
          fn(p * n / parts, (p + 1) * n / parts);
        } catch (const std::exception& e) {
          errors[static_cast<size_t>(p)] = e.what();
        }
      });
    }
    for (auto& t : pool) t.join();
    for (auto& e : errors) {
      if (!e.empty()) throw Error(e);
    }
  }
  const std::vector<unsigned char>& buffer(size_t i) const { return buffers_[i]; }
  const Shape& shape(size_t i) const { return shapes_[i]; }
  bool made(size_t i) const { return made_[i]; }

 private:
  const Case& case_;
  const TypeVariant& variant_;
  int threads_;
  std::vector<std::vector<unsigned char>> buffers_;
  std::vector<Shape> shapes_;
  std::vector<bool> made_;
};

// Whether a case gives as many inputs as a binding takes, up to its op's omittable trailing ones.
bool input_count_fits(const OpSpec& spec, const TypeVariant& v, const Case& c) {
  return c.inputs.size() <= v.inputs.size() && c.inputs.size() + spec.optional_inputs >= v.inputs.size();
}

const TypeVariant* pick_variant(const OpSpec& spec, const Case& c) {
  for (const TypeVariant& v : spec.variants) {
    if (!input_count_fits(spec, v, c) || v.outputs.size() != c.outputs.size()) continue;
    bool ok = true;
    for (size_t i = 0; i < c.inputs.size() && ok; ++i) ok = v.inputs[i] == c.inputs[i].dtype;
    for (size_t i = 0; i < v.outputs.size() && ok; ++i) ok = v.outputs[i] == c.outputs[i].dtype;
    if (ok) return &v;
  }
  return nullptr;
}

// For expect_error cases only the inputs are given; match on them.
const TypeVariant* pick_variant_by_inputs(const OpSpec& spec, const Case& c) {
  for (const TypeVariant& v : spec.variants) {
    if (!input_count_fits(spec, v, c)) continue;
    bool ok = true;
    for (size_t i = 0; i < c.inputs.size() && ok; ++i) ok = v.inputs[i] == c.inputs[i].dtype;
    if (ok) return &v;
  }
  return nullptr;
}

std::string compare(const Case& c, const TestContext& ctx) {
  std::vector<const void*> data;
  std::vector<Shape> shapes;
  for (size_t i = 0; i < c.outputs.size(); ++i) {
    if (!ctx.made(i)) return "output " + std::to_string(i) + " was never allocated";
    data.push_back(ctx.buffer(i).data());
    shapes.push_back(ctx.shape(i));
  }
  return compare_outputs(c, data, shapes);
}

// Empty string = pass.
std::string run_case(const Case& c, int threads) {
  const OpSpec* spec = find_op(c.op);
  if (spec == nullptr) return "the library has no op '" + c.op + "'";
  const TypeVariant* variant = c.expect_error ? pick_variant_by_inputs(*spec, c) : pick_variant(*spec, c);
  if (variant == nullptr) return "no dtype binding of " + c.op + " matches the case's dtypes";
  if (!spec->shapes) return "op " + c.op + " has no shape rule (OpSpec::shapes)";
  try {
    const Attrs attrs = resolve_attrs(*spec, c.attrs);
    // The shape rule (what the TensorRT plugins use) must agree with the kernel: same outputs, same refusals.
    std::vector<Shape> in_shapes;
    for (const Operand& o : c.inputs) in_shapes.push_back(o.array.shape);
    const std::vector<Shape> rule = spec->shapes(in_shapes, attrs);
    if (c.expect_error) return "expected an error containing '" + c.error_text + "', the shape rule accepted the inputs";
    if (rule.size() != c.outputs.size()) return "the shape rule gives " + std::to_string(rule.size()) + " outputs";
    for (size_t i = 0; i < rule.size(); ++i) {
      if (rule[i] != c.outputs[i].array.shape) {
        return "the shape rule gives output " + std::to_string(i) + " shape " + shape_text(rule[i]) + ", expected " +
               shape_text(c.outputs[i].array.shape);
      }
    }
    auto kernel = spec->create(attrs);
    TestContext ctx(c, *variant, threads);
    kernel->compute(ctx);
    if (c.expect_error) return "expected an error containing '" + c.error_text + "', the kernel accepted the inputs";
    return compare(c, ctx);
  } catch (const Error& e) {
    if (c.expect_error) {
      const std::string what = e.what();
      if (what.find(c.error_text) != std::string::npos) return "";
      return "error '" + what + "' does not contain '" + c.error_text + "'";
    }
    return std::string("kernel failed: ") + e.what();
  }
}

}  // namespace

int main(int argc, char** argv) {
  int threads = 3;
  std::string only_op;
  bool require_all = false;
  std::string root;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    if (a == "--threads" && i + 1 < argc) threads = std::max(1, std::atoi(argv[++i]));
    else if (a == "--op" && i + 1 < argc) only_op = argv[++i];
    else if (a == "--require-all") require_all = true;
    else if (a == "--describe") {
      std::cout << describe_ops_json() << "\n";
      return 0;
    } else if (!a.empty() && a[0] != '-' && root.empty()) root = a;
    else {
      std::cerr << "usage: parekit_kernel_tests [--threads N] [--op NAME] [--require-all] ROOT | --describe\n";
      return 2;
    }
  }
  if (root.empty() || !fs::is_directory(root)) {
    std::cerr << "parekit_kernel_tests: no vector folder '" << root
              << "' (export one with: python -m tests.native.export_vectors DIR)\n";
    return 2;
  }
  test::Tally tally = test::run_cases(root, only_op, [&](const Case& c) { return run_case(c, threads); });
  int passed = tally.passed, failed = tally.failed;
  const std::set<std::string>& seen = tally.seen;
  if (require_all) {
    for (const OpSpec& spec : all_ops()) {
      if (!seen.count(spec.name)) {
        std::cout << "FAIL op " << spec.name << " has no test vectors\n";
        ++failed;
      }
    }
  }
  std::cout << passed << " passed, " << failed << " failed\n";
  return failed == 0 ? 0 : 1;
}
