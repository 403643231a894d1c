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
#include "npy.h"

namespace fs = std::filesystem;
using namespace parekit;

namespace {

DType parse_dtype(const std::string& s) {
  static const std::map<std::string, DType> names{
      {"float32", DType::kFloat32}, {"float64", DType::kFloat64}, {"float16", DType::kFloat16},
      {"bfloat16", DType::kBFloat16}, {"int8", DType::kInt8},     {"uint8", DType::kUInt8},
      {"int32", DType::kInt32},     {"int64", DType::kInt64},     {"bool", DType::kBool}};
  auto it = names.find(s);
  if (it == names.end()) throw Error("unknown dtype '" + s + "'");
  return it->second;
}

struct Operand {
  DType dtype;
  test::Array array;
};

struct Case {
  fs::path dir;
  std::string op;
  std::map<std::string, AttrValue> attrs;
  std::vector<Operand> inputs, outputs;
  double rtol{0}, atol{0};
  bool expect_error{false};
  std::string error_text;
};

Case read_case(const fs::path& dir) {
  Case c;
  c.dir = dir;
  std::ifstream in(dir / "case.txt");
  if (!in) throw Error((dir / "case.txt").string() + ": cannot open");
  std::string line;
  while (std::getline(in, line)) {
    std::istringstream words(line);
    std::string key;
    if (!(words >> key)) continue;
    if (key == "op") {
      words >> c.op;
    } else if (key == "attr") {
      std::string name, kind, value;
      words >> name >> kind >> value;
      AttrValue v;
      if (kind == "int") {
        v.kind = AttrValue::Kind::kInt;
        v.i = std::stoll(value);
      } else if (kind == "float") {
        v.kind = AttrValue::Kind::kFloat;
        v.f = std::stof(value);
      } else if (kind == "string") {
        std::string rest;
        std::getline(words, rest);
        v.kind = AttrValue::Kind::kString;
        v.s = value + rest;
      } else {
        throw Error((dir / "case.txt").string() + ": attribute kind '" + kind + "' is not supported");
      }
      c.attrs[name] = v;
    } else if (key == "input" || key == "output") {
      std::string file, dtype;
      words >> file >> dtype;
      Operand o{parse_dtype(dtype), test::read_npy((dir / file).string())};
      const DType stored = test::dtype_of_descr(o.array.descr, file);
      const bool bf16_bits = o.dtype == DType::kBFloat16 && o.array.descr == "<u2";
      if (stored != o.dtype && !bf16_bits) throw Error((dir / file).string() + ": dtype does not match case.txt");
      (key == "input" ? c.inputs : c.outputs).push_back(std::move(o));
    } else if (key == "tolerance") {
      words >> c.rtol >> c.atol;
    } else if (key == "expect_error") {
      c.expect_error = true;
      std::getline(words >> std::ws, c.error_text);
    } else {
      throw Error((dir / "case.txt").string() + ": unknown line '" + key + "'");
    }
  }
  if (c.op.empty()) throw Error((dir / "case.txt").string() + ": no 'op' line");
  return c;
}

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
  for (size_t i = 0; i < c.outputs.size(); ++i) {
    const Operand& want = c.outputs[i];
    if (!ctx.made(i)) return "output " + std::to_string(i) + " was never allocated";
    if (ctx.shape(i) != want.array.shape) {
      return "output " + std::to_string(i) + " has shape " + shape_text(ctx.shape(i)) + ", expected " +
             shape_text(want.array.shape);
    }
    const int64_t n = numel(want.array.shape);
    const void* got = ctx.buffer(i).data();
    const void* exp = want.array.bytes.data();
    double worst = 0;
    int64_t bad_at = -1;
    for (int64_t k = 0; k < n; ++k) {
      const double g = load_as_double(got, want.dtype, k);
      const double e = load_as_double(exp, want.dtype, k);
      bool ok;
      if (is_float(want.dtype)) {
        if (std::isnan(e) || std::isnan(g)) ok = std::isnan(e) && std::isnan(g);
        else if (std::isinf(e) || std::isinf(g)) ok = g == e;
        else ok = std::fabs(g - e) <= c.atol + c.rtol * std::fabs(e);
        if (!std::isnan(e) && !std::isnan(g) && !std::isinf(e) && !std::isinf(g)) worst = std::max(worst, std::fabs(g - e));
      } else {
        ok = g == e;
      }
      if (!ok && bad_at < 0) bad_at = k;
    }
    if (bad_at >= 0) {
      std::ostringstream msg;
      msg.precision(9);
      msg << "output " << i << " differs at flat index " << bad_at << ": got "
          << load_as_double(got, want.dtype, bad_at) << ", expected " << load_as_double(exp, want.dtype, bad_at)
          << " (max |diff| " << worst << ", rtol " << c.rtol << ", atol " << c.atol << ")";
      return msg.str();
    }
  }
  return "";
}

// Empty string = pass.
std::string run_case(const Case& c, int threads) {
  const OpSpec* spec = find_op(c.op);
  if (spec == nullptr) return "the library has no op '" + c.op + "'";
  const TypeVariant* variant = c.expect_error ? pick_variant_by_inputs(*spec, c) : pick_variant(*spec, c);
  if (variant == nullptr) return "no dtype binding of " + c.op + " matches the case's dtypes";
  try {
    const Attrs attrs = resolve_attrs(*spec, c.attrs);
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
  std::vector<fs::path> dirs;
  for (const auto& entry : fs::recursive_directory_iterator(root)) {
    if (entry.is_regular_file() && entry.path().filename() == "case.txt") dirs.push_back(entry.path().parent_path());
  }
  std::sort(dirs.begin(), dirs.end());
  int passed = 0, failed = 0;
  std::set<std::string> seen;
  for (const fs::path& dir : dirs) {
    Case c;
    try {
      c = read_case(dir);
    } catch (const std::exception& e) {
      std::cout << "FAIL " << dir.string() << ": " << e.what() << "\n";
      ++failed;
      continue;
    }
    if (!only_op.empty() && c.op != only_op) continue;
    seen.insert(c.op);
    const std::string problem = run_case(c, threads);
    if (problem.empty()) {
      ++passed;
    } else {
      ++failed;
      std::cout << "FAIL " << fs::relative(dir, root).string() << " (" << c.op << "): " << problem << "\n";
    }
  }
  if (!only_op.empty() && seen.empty()) {
    std::cout << "FAIL no case for op '" << only_op << "' under " << root << "\n";
    ++failed;
  }
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
