// CUDA launcher of KvDequantKey / KvDequantValue (kv_dequant.cpp is the CPU twin; format:
// kv_quant_format.h): cache [rows, nq + r, d] float32 = dequantized store ++ residual.
#pragma once

#include <cstdint>

#include "launch.h"

namespace parekit {

struct KvDequantParams {
  const int8_t* codes{nullptr};     // [rows, nq, d/p]
  const uint16_t* scale{nullptr};   // float16: keys [rows, nq/group, d], values [rows, nq, d/group]
  const uint16_t* min{nullptr};     // same shape as scale
  const float* residual{nullptr};   // [rows, r, d]
  float* cache{nullptr};            // [rows, nq + r, d]
  int64_t rows{0}, nq{0}, r{0}, d{0};
  int64_t bits{8}, group{32};
  bool per_channel{true};           // true: KvDequantKey, false: KvDequantValue
};

void launch_kv_dequant(const KvDequantParams& p, const Launch& launch);

}  // namespace parekit
