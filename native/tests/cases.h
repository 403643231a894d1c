// Test cases written by tests/native/export_vectors.py (format: kernel_tests.cpp), shared by the kernel
// runner and the TensorRT plugin harness (plugins_trt/tests).
#pragma once

#include <filesystem>
#include <map>
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

}  // namespace parekit::test
