// See cases.h.
#include "cases.h"

#include <algorithm>
#include <cmath>
#include <fstream>
#include <iostream>
#include <sstream>

namespace fs = std::filesystem;

namespace parekit::test {

DType parse_dtype(const std::string& s) {
  static const std::map<std::string, DType> names{
      {"float32", DType::kFloat32}, {"float64", DType::kFloat64}, {"float16", DType::kFloat16},
      {"bfloat16", DType::kBFloat16}, {"int8", DType::kInt8},     {"uint8", DType::kUInt8},
      {"int32", DType::kInt32},     {"int64", DType::kInt64},     {"bool", DType::kBool}};
  auto it = names.find(s);
  if (it == names.end()) throw Error("unknown dtype '" + s + "'");
  return it->second;
}

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
      Operand o{parse_dtype(dtype), read_npy((dir / file).string())};
      const DType stored = dtype_of_descr(o.array.descr, file);
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

std::vector<fs::path> find_cases(const fs::path& root) {
  std::vector<fs::path> dirs;
  for (const auto& entry : fs::recursive_directory_iterator(root)) {
    if (entry.is_regular_file() && entry.path().filename() == "case.txt") dirs.push_back(entry.path().parent_path());
  }
  std::sort(dirs.begin(), dirs.end());
  return dirs;
}

std::string compare_outputs(const Case& c, const std::vector<const void*>& got_data, const std::vector<Shape>& got_shapes) {
  for (size_t i = 0; i < c.outputs.size(); ++i) {
    const Operand& want = c.outputs[i];
    if (i >= got_data.size() || (got_data[i] == nullptr && numel(want.array.shape) > 0))
      return "output " + std::to_string(i) + " was never allocated";
    if (got_shapes[i] != want.array.shape) {
      return "output " + std::to_string(i) + " has shape " + shape_text(got_shapes[i]) + ", expected " +
             shape_text(want.array.shape);
    }
    const int64_t n = numel(want.array.shape);
    const void* got = got_data[i];
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

const std::string kSkipCase = "\x01skip";

Tally run_cases(const fs::path& root, const std::string& only_op, const std::function<std::string(const Case&)>& check) {
  Tally t;
  for (const fs::path& dir : find_cases(root)) {
    Case c;
    try {
      c = read_case(dir);
    } catch (const std::exception& e) {
      std::cout << "FAIL " << dir.string() << ": " << e.what() << "\n";
      ++t.failed;
      continue;
    }
    if (!only_op.empty() && c.op != only_op) continue;
    t.seen.insert(c.op);
    std::string problem;
    try {
      problem = check(c);
    } catch (const std::exception& e) {
      problem = std::string("harness error: ") + e.what();
    }
    if (problem.empty()) {
      ++t.passed;
    } else if (problem == kSkipCase) {
      ++t.skipped;
    } else {
      ++t.failed;
      std::cout << "FAIL " << fs::relative(dir, root).string() << " (" << c.op << "): " << problem << "\n";
    }
  }
  if (!only_op.empty() && t.seen.empty()) {
    std::cout << "FAIL no case for op '" << only_op << "' under " << root.string() << "\n";
    ++t.failed;
  }
  return t;
}

}  // namespace parekit::test
