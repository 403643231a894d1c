#include "npy.h"

#include <fstream>
#include <iterator>

namespace parekit::test {

namespace {
[[noreturn]] void bad(const std::string& path, const std::string& what) { throw Error(path + ": " + what); }

std::string dict_value(const std::string& header, const std::string& key, const std::string& path) {
  const std::string quoted = "'" + key + "'";
  size_t at = header.find(quoted);
  if (at == std::string::npos) bad(path, "npy header has no " + quoted);
  at = header.find(':', at + quoted.size());
  if (at == std::string::npos) bad(path, "npy header is malformed");
  ++at;
  while (at < header.size() && header[at] == ' ') ++at;
  size_t end = at;
  if (header[at] == '\'') {
    end = header.find('\'', at + 1);
    if (end == std::string::npos) bad(path, "npy header is malformed");
    return header.substr(at + 1, end - at - 1);
  }
  if (header[at] == '(') {
    end = header.find(')', at);
    if (end == std::string::npos) bad(path, "npy header is malformed");
    return header.substr(at, end - at + 1);
  }
  end = header.find_first_of(",}", at);
  return header.substr(at, end - at);
}
}  // namespace

Array read_npy(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) bad(path, "cannot open");
  std::vector<unsigned char> raw((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  if (raw.size() < 10 || raw[0] != 0x93 || std::string(raw.begin() + 1, raw.begin() + 6) != "NUMPY") {
    bad(path, "not a .npy file");
  }
  const int major = raw[6];
  size_t header_len = 0, offset = 0;
  if (major == 1) {
    header_len = raw[8] | (static_cast<size_t>(raw[9]) << 8);
    offset = 10;
  } else if (major == 2 || major == 3) {
    if (raw.size() < 12) bad(path, "truncated .npy header");
    header_len = raw[8] | (static_cast<size_t>(raw[9]) << 8) | (static_cast<size_t>(raw[10]) << 16) |
                 (static_cast<size_t>(raw[11]) << 24);
    offset = 12;
  } else {
    bad(path, "unsupported .npy version " + std::to_string(major));
  }
  if (offset + header_len > raw.size()) bad(path, "truncated .npy header");
  const std::string header(raw.begin() + static_cast<long>(offset), raw.begin() + static_cast<long>(offset + header_len));
  Array a;
  a.descr = dict_value(header, "descr", path);
  if (dict_value(header, "fortran_order", path) != "False") bad(path, "Fortran-order arrays are not supported");
  const std::string shape = dict_value(header, "shape", path);
  size_t i = 1;
  while (i < shape.size()) {
    while (i < shape.size() && (shape[i] == ' ' || shape[i] == ',')) ++i;
    if (i >= shape.size() || shape[i] == ')') break;
    size_t j = i;
    while (j < shape.size() && shape[j] >= '0' && shape[j] <= '9') ++j;
    if (j == i) bad(path, "bad shape " + shape);
    a.shape.push_back(std::stoll(shape.substr(i, j - i)));
    i = j;
  }
  const DType t = dtype_of_descr(a.descr, path);
  const size_t want = static_cast<size_t>(numel(a.shape)) * dtype_size(t);
  const size_t data_at = offset + header_len;
  if (raw.size() - data_at != want) {
    bad(path, "holds " + std::to_string(raw.size() - data_at) + " data bytes, shape needs " + std::to_string(want));
  }
  a.bytes.assign(raw.begin() + static_cast<long>(data_at), raw.end());
  return a;
}

DType dtype_of_descr(const std::string& descr, const std::string& path) {
  if (descr == "<f4") return DType::kFloat32;
  if (descr == "<f8") return DType::kFloat64;
  if (descr == "<f2") return DType::kFloat16;
  if (descr == "<u2") return DType::kBFloat16;  // bit patterns; the case file names the real type
  if (descr == "|i1") return DType::kInt8;
  if (descr == "|u1") return DType::kUInt8;
  if (descr == "<i4") return DType::kInt32;
  if (descr == "<i8") return DType::kInt64;
  if (descr == "|b1") return DType::kBool;
  bad(path, "unsupported dtype " + descr);
}

}  // namespace parekit::test
