// Pieces shared by the token-reduction kernels (TokenPrune, TokenMerge, TokenRestore); the C++ twin of
// parekit/ops/token_common.py's NumPy half (the references are the oracle).
//
// The references compute in float64 and cast back with NumPy's (and ml_dtypes') direct float64 -> T
// rounding, so these helpers do the same: values are read as double, group means accumulate in double in
// the reference's order (NumPy's pairwise sum for 1-D sums, row by row for the axis-0 sum), and results are
// rounded straight from double to the element type (no double rounding through float32 for fp16/bf16).
#pragma once

#include <cmath>
#include <cstdint>
#include <cstring>
#include <string>
#include <vector>

#include "core.h"

namespace parekit {
namespace tokens {

constexpr double kBig = 1.0e30;          // token_common.BIG
constexpr double kPadPenalty = 1.0e4;    // token_merge._PAD_PENALTY
constexpr double kNormFloor = 1.0e-12;   // TokenMerge's floor of the metric norm

// float64 -> float16 bits, round to nearest even directly from double (what NumPy's astype does).
inline uint16_t double_to_half_bits(double d) {
  const uint16_t sign = std::signbit(d) ? 0x8000u : 0u;
  const double a = std::fabs(d);
  if (std::isnan(d)) return static_cast<uint16_t>(sign | 0x7e00u);
  if (a < 6.103515625e-05) {  // below 2^-14: subnormal half; a * 2^24 is exact, round it to an integer
    return static_cast<uint16_t>(sign | static_cast<uint16_t>(std::nearbyint(std::ldexp(a, 24))));
  }
  int e = std::ilogb(a);
  if (e > 15) return static_cast<uint16_t>(sign | 0x7c00u);
  double r = std::nearbyint(std::ldexp(a, 10 - e));  // in [1024, 2048]
  if (r >= 2048.0) {
    r = 1024.0;
    ++e;
  }
  if (e > 15) return static_cast<uint16_t>(sign | 0x7c00u);
  return static_cast<uint16_t>(sign | static_cast<uint16_t>((e + 15) << 10) | static_cast<uint16_t>(r - 1024.0));
}

// float64 -> bfloat16 bits, round to nearest even directly from double (what ml_dtypes does).
inline uint16_t double_to_bf16_bits(double d) {
  const uint16_t sign = std::signbit(d) ? 0x8000u : 0u;
  const double a = std::fabs(d);
  if (std::isnan(d)) return static_cast<uint16_t>(sign | 0x7fc0u);
  if (a < 1.1754943508222875e-38) {  // below 2^-126: subnormal bf16 in steps of 2^-133
    return static_cast<uint16_t>(sign | static_cast<uint16_t>(std::nearbyint(std::ldexp(a, 133))));
  }
  int e = std::ilogb(a);
  if (e > 127) return static_cast<uint16_t>(sign | 0x7f80u);
  double r = std::nearbyint(std::ldexp(a, 7 - e));  // in [128, 256]
  if (r >= 256.0) {
    r = 128.0;
    ++e;
  }
  if (e > 127) return static_cast<uint16_t>(sign | 0x7f80u);
  return static_cast<uint16_t>(sign | static_cast<uint16_t>((e + 127) << 7) | static_cast<uint16_t>(r - 128.0));
}

// Element i of a float tensor as double.
inline double load(const void* data, DType t, int64_t i) {
  switch (t) {
    case DType::kFloat32: return static_cast<const float*>(data)[i];
    case DType::kFloat64: return static_cast<const double*>(data)[i];
    case DType::kFloat16: return half_to_float(static_cast<const uint16_t*>(data)[i]);
    case DType::kBFloat16: return bf16_to_float(static_cast<const uint16_t*>(data)[i]);
    default: return load_as_double(data, t, i);
  }
}

// Elements [first, first + count) of a float tensor as double, one dtype switch per row.
inline void load_row(const void* data, DType t, int64_t first, int64_t count, double* out) {
  switch (t) {
    case DType::kFloat32: {
      const float* p = static_cast<const float*>(data) + first;
      for (int64_t k = 0; k < count; ++k) out[k] = p[k];
      return;
    }
    case DType::kFloat64: {
      const double* p = static_cast<const double*>(data) + first;
      for (int64_t k = 0; k < count; ++k) out[k] = p[k];
      return;
    }
    default:
      for (int64_t k = 0; k < count; ++k) out[k] = load(data, t, first + k);
      return;
  }
}

// Stores v into element i, rounded directly from double to the element type.
inline void store(void* data, DType t, int64_t i, double v) {
  switch (t) {
    case DType::kFloat32: static_cast<float*>(data)[i] = static_cast<float>(v); return;
    case DType::kFloat64: static_cast<double*>(data)[i] = v; return;
    case DType::kFloat16: static_cast<uint16_t*>(data)[i] = double_to_half_bits(v); return;
    case DType::kBFloat16: static_cast<uint16_t*>(data)[i] = double_to_bf16_bits(v); return;
    default: store_from_double(data, t, i, v); return;
  }
}

// v as the element type would hold it (the value after a store and a load).
inline double round_to(DType t, double v) {
  switch (t) {
    case DType::kFloat32: return static_cast<double>(static_cast<float>(v));
    case DType::kFloat16: return half_to_float(double_to_half_bits(v));
    case DType::kBFloat16: return bf16_to_float(double_to_bf16_bits(v));
    default: return v;
  }
}

// "nonzero" as np.nonzero sees it (+-0 are zero, NaN is not).
inline bool nonzero(const void* data, DType t, int64_t i) { return load_truthy(data, t, i); }

// NumPy's pairwise summation of a contiguous float64 array (numpy/_core/src/umath/loops_utils.h), so
// that 1-D sums match the reference bit for bit.
inline double pairwise_sum(const double* a, int64_t n) {
  if (n < 8) {
    double res = 0.0;
    for (int64_t i = 0; i < n; ++i) res += a[i];
    return res;
  }
  if (n <= 128) {
    double r[8];
    for (int j = 0; j < 8; ++j) r[j] = a[j];
    int64_t i = 8;
    for (; i < n - (n % 8); i += 8) {
      for (int j = 0; j < 8; ++j) r[j] += a[i + j];
    }
    double res = ((r[0] + r[1]) + (r[2] + r[3])) + ((r[4] + r[5]) + (r[6] + r[7]));
    for (; i < n; ++i) res += a[i];
    return res;
  }
  int64_t n2 = n / 2;
  n2 -= n2 % 8;
  return pairwise_sum(a, n2) + pairwise_sum(a + n2, n - n2);
}

// Writes 1 into element i of a float tensor.
inline void store_one(void* data, DType t, int64_t i) { store(data, t, i, 1.0); }

// Zeroes `count` elements of `elem` bytes (0 bits are 0.0 in every float type).
inline void zero(void* data, int64_t count, size_t elem) {
  if (count > 0) std::memset(data, 0, static_cast<size_t>(count) * elem);
}

// Scratch for one group reduction (kept per worker, reused across groups).
struct GroupScratch {
  std::vector<double> weights, sizes, acc, row;
};

// One output token of token_common.reduce_reference: the weighted mean of the member rows of `tokens`
// ([N, C] of one batch, element type t) with the members' weights, and the summed sizes. Members are in
// increasing index order. A group whose weights sum to 0 takes the plain mean; an empty group gives 0.
// Accumulates in double like the reference (numerator row by row, denominators pairwise).
inline double reduce_group(const void* tokens, DType t, int64_t c, const int64_t* members, int64_t count,
                           const double* member_weights, const double* member_sizes, void* out,
                           int64_t out_row, GroupScratch& s) {
  if (count == 0) {
    zero(static_cast<unsigned char*>(out) + static_cast<size_t>(out_row * c) * dtype_size(t), c, dtype_size(t));
    return 0.0;
  }
  s.weights.assign(member_weights, member_weights + count);
  double den = pairwise_sum(s.weights.data(), count);
  if (den == 0.0) {
    s.weights.assign(static_cast<size_t>(count), 1.0);
    den = pairwise_sum(s.weights.data(), count);
  }
  s.acc.assign(static_cast<size_t>(c), 0.0);
  s.row.resize(static_cast<size_t>(c));
  for (int64_t k = 0; k < count; ++k) {
    const double w = s.weights[static_cast<size_t>(k)];
    load_row(tokens, t, members[k] * c, c, s.row.data());
    if (k == 0) {
      for (int64_t j = 0; j < c; ++j) s.acc[static_cast<size_t>(j)] = w * s.row[static_cast<size_t>(j)];
    } else {
      for (int64_t j = 0; j < c; ++j) s.acc[static_cast<size_t>(j)] += w * s.row[static_cast<size_t>(j)];
    }
  }
  for (int64_t j = 0; j < c; ++j) store(out, t, out_row * c + j, s.acc[static_cast<size_t>(j)] / den);
  s.sizes.assign(member_sizes, member_sizes + count);
  return pairwise_sum(s.sizes.data(), count);
}

// Copies row `from` of a [*, C] tensor into row `to` of another with the same element type.
inline void copy_row(const void* src, int64_t from, void* dst, int64_t to, int64_t c, size_t elem) {
  const size_t row = static_cast<size_t>(c) * elem;
  if (row == 0) return;  // empty tensors may have no storage
  std::memcpy(static_cast<unsigned char*>(dst) + static_cast<size_t>(to) * row,
              static_cast<const unsigned char*>(src) + static_cast<size_t>(from) * row, row);
}

// Shape checks at the API edge: `what` names the input, the message shows both shapes.
inline void expect_same_dim(const std::string& op, const char* name, const ConstTensor& t, size_t axis,
                            int64_t want, const char* ref_name, const Shape& ref_shape) {
  if (t.dim(axis) != want) {
    fail(op, std::string("input '") + name + "' has shape " + shape_text(t.shape) + ": dim " +
                 std::to_string(axis) + " must be " + std::to_string(want) + " to match '" + ref_name + "' " +
                 shape_text(ref_shape));
  }
}

inline void expect_float_input(const std::string& op, const char* name, const ConstTensor& t) {
  if (!is_float(t.dtype)) fail(op, std::string("input '") + name + "' must be a float tensor, got " + dtype_name(t.dtype));
}

// The float binding variants: every input and output of the same float type.
inline std::vector<TypeVariant> same_float_variants(size_t inputs, size_t outputs) {
  std::vector<TypeVariant> v;
  for (DType t : float_dtypes()) v.push_back({std::vector<DType>(inputs, t), std::vector<DType>(outputs, t)});
  return v;
}

}  // namespace tokens
}  // namespace parekit
