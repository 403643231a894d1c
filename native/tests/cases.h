// Test cases written by tests/native/export_vectors.py (format: kernel_tests.cpp), shared by the kernel
// runner and the TensorRT plugin harness (plugins_trt/tests).
#pragma once

#include <filesystem>
#include <functional>
#include <map>
#include <set>
#include <string>
#include <vector>

#include "core.h"
#include "npy.h"

namespace parekit::test {

struct Operand {
  DType dtype;
  Array array;
};

struct Case {
  std::filesystem::path dir;
  std::string op;
  std::map<std::string, AttrValue> attrs;
  std::vector<Operand> inputs, outputs;
  double rtol{0}, atol{0};
  bool expect_error{false};
  std::string error_text;
};

DType parse_dtype(const std::string& s);
// Throws parekit::Error naming the file on anything malformed.
Case read_case(const std::filesystem::path& dir);
// Every case folder (holding case.txt) under root, sorted.
std::vector<std::filesystem::path> find_cases(const std::filesystem::path& root);
// Empty string when every output matches (shape, then values within the case's tolerance; exact for
// non-float dtypes); else what differs first. got_data[i] points at output i's elements.
std::string compare_outputs(const Case& c, const std::vector<const void*>& got_data,
                            const std::vector<Shape>& got_shapes);

// What check() returns for a case it does not apply to (counted as skipped).
extern const std::string kSkipCase;

struct Tally {
  int passed{0}, failed{0}, skipped{0};
  std::set<std::string> seen;  // op types with at least one case
};

// Reads every case under root (only op `only_op` when not empty), runs check on it (empty string: pass,
// kSkipCase: skipped, else what failed; exceptions are failures) and prints a FAIL line per failure,
// including an unreadable case.txt and an `only_op` without cases.
Tally run_cases(const std::filesystem::path& root, const std::string& only_op,
                const std::function<std::string(const Case&)>& check);

}  // namespace parekit::test
