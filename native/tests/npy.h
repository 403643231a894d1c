// Minimal .npy (format 1.0/2.0/3.0) reader for the kernel tests: little-endian, C order, the dtypes the
// parekit ops use. bfloat16 arrays are stored as uint16 bit patterns (NumPy has no bfloat16).
#pragma once

#include <string>
#include <vector>

#include "core.h"

namespace parekit::test {

struct Array {
  std::string descr;  // e.g. "<f4"
  Shape shape;
  std::vector<unsigned char> bytes;
};

// Throws parekit::Error naming the file on anything it cannot read.
Array read_npy(const std::string& path);

// The DType a descr stands for ("<u2" is read as bfloat16 only when the case says so).
DType dtype_of_descr(const std::string& descr, const std::string& path);

}  // namespace parekit::test
