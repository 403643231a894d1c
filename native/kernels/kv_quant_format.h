// The packed KIVI-style cache format shared by KvQuantKey/Value, KvDequantKey/Value (and the fused
// attention over a quantized cache): the C++ twin of parekit/ops/kv_quant_format.py.
//
// * `bits`-bit unsigned codes, p = 8 / bits (1 or 2) per byte along the channel axis: the D channels are
//   cut into p contiguous blocks of D / p and byte j holds code j of block k in digit k (block 0 lowest);
//   bytes are stored as int8 `byte - 128`;
// * keys: one float16 scale/min per (group of `group` tokens, channel): [B, H, Nq/group, D];
//   values: one per (token, group of `group` channels): [B, H, Nq, D/group];
// * quantization of a group x (float32 arithmetic, as the NumPy reference):
//   mn = min x, scale = (max x - mn) / (2^bits - 1), both rounded to float16 first;
//   code = clip(round_half_even((x - mn16) / (scale16 > 0 ? scale16 : 1)), 0, 2^bits - 1);
// * dequantization: x = float(code) * scale + min in float32, the product rounded before the sum (no
//   fused multiply-add: the reference and ONNX Runtime's Mul + Add round twice).
#pragma once

#include <cstdint>
#include <string>

#include "core.h"

// x86-64 with GCC: the hot loops of the kv-quant kernels are compiled for AVX-512, AVX2 and the baseline
// and picked at load time (function multiversioning, as attention_probs.cpp). The arithmetic is the same
// plain float32 mul and add in every version (the kernels are built with -ffp-contract=off, so no clone
// contracts them into FMAs): results do not depend on the CPU. Other compilers/targets get one version.
#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
#define PAREKIT_KVQ_HOT __attribute__((target_clones("arch=x86-64-v4", "arch=x86-64-v3", "default")))
#else
#define PAREKIT_KVQ_HOT
#endif
// Small helpers called from those loops: always inlined, so each clone gets its own vector code.
#if defined(__GNUC__)
#define PAREKIT_KVQ_INLINE inline __attribute__((always_inline))
#else
#define PAREKIT_KVQ_INLINE inline
#endif

namespace parekit {
namespace kvq {

constexpr int kCodeOffset = 128;

inline int64_t codes_per_byte(int64_t bits) { return 8 / bits; }

// Unsigned byte 0..255 of a stored int8 (`byte - 128`): the same as adding 128.
PAREKIT_KVQ_INLINE uint32_t stored_to_byte(int8_t v) { return static_cast<uint32_t>(static_cast<uint8_t>(v)) ^ 0x80u; }
inline int8_t byte_to_stored(int32_t byte) { return static_cast<int8_t>(byte - kCodeOffset); }

// Round half to even for 0 <= v <= 2^22 (what np.round does): adding 2^23 leaves no fraction bits, so
// the float addition itself rounds to the nearest integer, ties to even (default rounding mode).
inline float round_half_even_small(float v) {
  // (Needs IEEE float semantics: the kernels are never built with -ffast-math.)
  const float magic = 8388608.0f;  // 2^23
  const float t = v + magic;
  return t - magic;
}

// Quantizes one value already shifted and divided: clip to [0, levels], then round half to even. Clipping
// first is the same as rounding first (levels is an integer) and keeps the magic-number rounding exact.
inline int32_t code_of(float v, float levels) {
  float c = v > 0.0f ? v : 0.0f;  // NaN -> 0 (the reference's code is undefined there)
  c = c < levels ? c : levels;
  return static_cast<int32_t>(round_half_even_small(c));
}

// The float16-rounded (scale, min) of a group with float32 extremes mn, mx; returns the float32 values the
// codes are computed with and stores the float16 bits.
struct GroupParams {
  uint16_t scale16, min16;
  float scale, min, divisor;  // divisor: scale, or 1 where scale <= 0
};

inline GroupParams group_params(float mn, float mx, float levels) {
  GroupParams g{};
  const float range = mx - mn;
  g.scale16 = float_to_half(range / levels);
  g.min16 = float_to_half(mn);
  g.scale = half_to_float(g.scale16);
  g.min = half_to_float(g.min16);
  g.divisor = g.scale > 0.0f ? g.scale : 1.0f;
  return g;
}

// Unpacks one token's packed codes (D / p bytes) into D float codes. (Separate low-digit and high-digit
// loops over restrict pointers: one loop storing both halves does not vectorize.)
PAREKIT_KVQ_INLINE void unpack_row(const int8_t* __restrict packed, int64_t d, int64_t bits, float* __restrict codes) {
  if (bits == 4) {
    const int64_t half = d / 2;
    float* __restrict high = codes + half;
    for (int64_t j = 0; j < half; ++j) codes[j] = static_cast<float>(static_cast<int32_t>(stored_to_byte(packed[j]) & 15u));
    for (int64_t j = 0; j < half; ++j) high[j] = static_cast<float>(static_cast<int32_t>(stored_to_byte(packed[j]) >> 4));
  } else {
    const uint32_t mask = (1u << bits) - 1u;  // byte % 2^bits (bits < 8 only for foreign bytes)
    for (int64_t j = 0; j < d; ++j) codes[j] = static_cast<float>(static_cast<int32_t>(stored_to_byte(packed[j]) & mask));
  }
}

// Packs D integer codes (0 .. 2^bits - 1) of one token into D / p bytes.
inline void pack_row(const int32_t* codes, int64_t d, int64_t bits, int8_t* packed) {
  if (bits == 4) {
    const int64_t half = d / 2;
    for (int64_t j = 0; j < half; ++j) packed[j] = byte_to_stored(codes[j] | (codes[j + half] << 4));
  } else {
    for (int64_t j = 0; j < d; ++j) packed[j] = byte_to_stored(codes[j]);
  }
}

// x = code * scale + min, product rounded first (separate statements: no contraction into an FMA).
PAREKIT_KVQ_INLINE float dequant_value(float code, float scale, float mn) {
  const float prod = code * scale;
  return prod + mn;
}

// Checks a quantized store (codes, scale, min) against batch b, heads h and channels d, and returns Nq.
// Keys (per_channel): scale/min [b, h, Nq/group, d]; values: [b, h, Nq, d/group]. `prefix` goes in front
// of the input names in messages ("k_" for an op whose inputs are k_codes, k_scale, k_min).
inline int64_t check_store(const std::string& op, const ConstTensor& codes, const ConstTensor& scale,
                           const ConstTensor& mn, int64_t b, int64_t h, int64_t d, int64_t bits, int64_t group,
                           bool per_channel, const std::string& prefix = "") {
  const std::string codes_name = prefix + "codes", scale_name = prefix + "scale", min_name = prefix + "min";
  expect_rank(op, codes_name.c_str(), codes, 4);
  expect_rank(op, scale_name.c_str(), scale, 4);
  expect_rank(op, min_name.c_str(), mn, 4);
  const int64_t p = codes_per_byte(bits);
  if (d % p != 0) {
    fail(op, "head dim D = " + std::to_string(d) + " is not a multiple of " + std::to_string(p) +
                 " codes per byte (bits = " + std::to_string(bits) + ")");
  }
  if (!per_channel && d % group != 0) {
    fail(op, "group = " + std::to_string(group) + " does not divide the head dim D = " + std::to_string(d));
  }
  const int64_t nq = codes.dim(2);
  const Shape want_codes{b, h, nq, d / p};
  if (codes.shape != want_codes) {
    fail(op, "input '" + codes_name + "' has shape " + shape_text(codes.shape) + ", expected [B, H, Nq, D/p] = " +
                 shape_text(want_codes) + " (bits = " + std::to_string(bits) + ")");
  }
  if (per_channel && nq % group != 0) {
    fail(op, "input '" + codes_name + "' holds Nq = " + std::to_string(nq) + " tokens, not a multiple of group = " +
                 std::to_string(group));
  }
  const Shape want = per_channel ? Shape{b, h, nq / group, d} : Shape{b, h, nq, d / group};
  const char* rule = per_channel ? "[B, H, Nq/group, D]" : "[B, H, Nq, D/group]";
  if (scale.shape != want) {
    fail(op, "input '" + scale_name + "' has shape " + shape_text(scale.shape) + ", expected " + rule + " = " +
                 shape_text(want) + " (codes " + shape_text(codes.shape) + ", group " + std::to_string(group) + ")");
  }
  if (mn.shape != want) {
    fail(op, "input '" + min_name + "' has shape " + shape_text(mn.shape) + ", expected " + rule + " = " + shape_text(want) +
                 " (codes " + shape_text(codes.shape) + ", group " + std::to_string(group) + ")");
  }
  return nq;
}

// Checks that a float [B, H, *, D] tensor matches b, h, d.
inline void check_float_rows(const std::string& op, const char* name, const ConstTensor& t, int64_t b, int64_t h,
                             int64_t d, const std::string& against) {
  expect_rank(op, name, t, 4);
  if (t.dim(0) != b || t.dim(1) != h || t.dim(3) != d) {
    fail(op, std::string("input '") + name + "' has shape " + shape_text(t.shape) + ", expected [" +
                 std::to_string(b) + ", " + std::to_string(h) + ", *, " + std::to_string(d) + "] like " + against);
  }
}

}  // namespace kvq
}  // namespace parekit
