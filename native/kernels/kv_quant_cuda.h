// CUDA launcher of KvQuantKey / KvQuantValue (kv_quant.cpp is the CPU twin; format: kv_quant_format.h):
// full = residual ++ new per (batch, head) row; its oldest n = max(0, R + S - keep) / group * group tokens
// are quantized and appended after the copied store, the rest goes to residual_out.
#pragma once

#include <cstdint>

#include "launch.h"

namespace parekit {

struct KvQuantParams {
  // inputs: store [rows, nq, d/p] int8 + scale/min float16 (keys [rows, nq/group, d], values
  // [rows, nq, d/group]), residual [rows, r, d] and new [rows, s, d] float32
  const int8_t* codes{nullptr};
  const uint16_t* scale{nullptr};
  const uint16_t* min{nullptr};
  const float* residual{nullptr};
  const float* fresh{nullptr};
  // outputs: the store with nq + n tokens, residual_out [rows, r + s - n, d]
  int8_t* codes_out{nullptr};
  uint16_t* scale_out{nullptr};
  uint16_t* min_out{nullptr};
  float* residual_out{nullptr};
  int64_t rows{0}, nq{0}, r{0}, s{0}, d{0};
  int64_t bits{8}, group{32}, keep{32};  // attributes bits, group, residual
  bool per_channel{true};                // true: KvQuantKey, false: KvQuantValue
};

// Tokens of residual ++ new that move to the store (the shape rule's n).
inline int64_t kv_quant_moved(int64_t length, int64_t keep, int64_t group) {
  const int64_t over = length > keep ? length - keep : 0;
  return over / group * group;
}

void launch_kv_quant(const KvQuantParams& p, const Launch& launch);

}  // namespace parekit
