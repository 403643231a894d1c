// Device-side (PAREKIT_HD) twins of the kv_quant_format.h helpers, for the .cu files of the KIVI ops
// (KvQuantKey/Value, KvDequantKey/Value). Same float32 operations in the same order as the CPU twins,
// so the CUDA code, its host emulation and the CPU kernels give bit-identical codes, scales and values
// (the CUDA kernels are built with --fmad=false; IEEE division and rounding are nvcc's defaults).
// Included by nvcc only.
#pragma once

#include <cstdint>

#include "device.h"

namespace parekit {
namespace kvq_dev {

// Unsigned byte 0..255 of a stored int8 (`byte - 128`), and back.
PAREKIT_HD inline uint32_t stored_to_byte(int8_t v) { return static_cast<uint32_t>(static_cast<uint8_t>(v)) ^ 0x80u; }
PAREKIT_HD inline int8_t byte_to_stored(int32_t byte) { return static_cast<int8_t>(byte - 128); }

// Round half to even for 0 <= v <= 2^22 by the 2^23 trick, as kvq::round_half_even_small (the float add
// rounds; never compiled with fast-math, so the add/sub pair is not folded away).
PAREKIT_HD inline float round_half_even_small(float v) {
  const float magic = 8388608.0f;
  const float t = v + magic;
  return t - magic;
}

// Clip to [0, levels] (NaN -> 0), then round: kvq::code_of.
PAREKIT_HD inline int32_t code_of(float v, float levels) {
  float c = v > 0.0f ? v : 0.0f;
  c = c < levels ? c : levels;
  return static_cast<int32_t>(round_half_even_small(c));
}

struct GroupParams {
  uint16_t scale16, min16;
  float min, divisor;  // float32 of the float16 min; float16 scale, or 1 where it is <= 0
};

// kvq::group_params: scale and min rounded to float16 first; the codes use the rounded values.
PAREKIT_HD inline GroupParams group_params(float mn, float mx, float levels) {
  GroupParams g{};
  const float range = mx - mn;
  g.scale16 = dev::float_to_half(range / levels);
  g.min16 = dev::float_to_half(mn);
  const float scale = dev::half_to_float(g.scale16);
  g.min = dev::half_to_float(g.min16);
  g.divisor = scale > 0.0f ? scale : 1.0f;
  return g;
}

// x = code * scale + min with the product rounded first (no FMA), as kvq::dequant_value.
PAREKIT_HD inline float dequant_value(float code, float scale, float mn) {
  const float prod = code * scale;
  return prod + mn;
}

// Code of channel j from one token's packed bytes (dp = D / p bytes): byte j % dp, digit j / dp.
// bits == 4: two codes per byte (low nibble = block 0); bits 5..8: one, masked to 2^bits - 1 (as the
// CPU twin does for foreign bytes).
PAREKIT_HD inline int32_t code_at(const int8_t* packed, int64_t j, int64_t dp, int64_t bits) {
  const uint32_t byte = stored_to_byte(packed[j % dp]);
  if (bits == 4) return static_cast<int32_t>((byte >> (4 * (j / dp))) & 15u);
  return static_cast<int32_t>(byte & ((1u << bits) - 1u));
}

}  // namespace kvq_dev
}  // namespace parekit
