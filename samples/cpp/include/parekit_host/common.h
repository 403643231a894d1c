// Backend-independent pieces of the host: errors, element types, host tensors, .npy output.
#pragma once

#include <cstddef>
#include <cstdint>
#include <stdexcept>
#include <string>
#include <vector>

namespace parekit_host {

// Every failure the host reports: one line naming what and where (main() prints it and exits non-zero).
class Error : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

// Element types the host reads and writes, named as NumPy names them (what .npy and JSON carry).
enum class DType { kFloat32, kFloat16, kBFloat16, kFloat64, kInt8, kUInt8, kInt16, kInt32, kInt64, kBool, kOther };

const char* dtype_name(DType dtype);
std::size_t dtype_size(DType dtype);  // bytes per element; 0 for kOther

// A dense row-major tensor in host memory (the encoder's outputs, the API's feeds).
struct HostTensor {
  DType dtype = DType::kFloat32;
  std::vector<int64_t> shape;
  std::vector<unsigned char> bytes;

  int64_t numel() const;
  static HostTensor int64s(std::vector<int64_t> shape, const std::vector<int64_t>& values);
};

// Writes `tensor` as a NumPy .npy file (format 1.0, little-endian, C order); throws Error when it cannot.
void write_npy(const std::string& path, const HostTensor& tensor);

// Folds a message onto one line (ONNX Runtime and TensorRT messages may span several).
std::string one_line(const std::string& text);

// float16 / bfloat16 bits to float (logits of half-precision engines).
float half_to_float(uint16_t bits);
float bfloat16_to_float(uint16_t bits);

}  // namespace parekit_host
