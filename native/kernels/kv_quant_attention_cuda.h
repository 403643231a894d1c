// CUDA launcher of KvQuantAttention (attention over a KIVI-quantized KV cache, kv_quant_format.h), shared
// by the TensorRT plugin and the CPU twin (kv_quant_attention.cpp), which takes its token chunking from
// here so that both split the softmax the same way.
//
// The kernel reproduces the twin's float32 arithmetic and order: per query row and chunk of whole key
// groups a partial softmax (max, sum of exponentials, unnormalized output), then a merge over the chunks.
#pragma once

#include <cstddef>
#include <cstdint>

#include "launch.h"

namespace parekit {

// Tokens per chunk of the partial softmax: ~256, rounded to whole key groups (the twin's work unit).
inline int64_t kv_quant_attention_chunk(int64_t group) {
  const int64_t per = 256 / group;
  return (per > 1 ? per : 1) * group;
}

inline int64_t kv_quant_attention_chunks(int64_t t, int64_t group) {
  const int64_t chunk = kv_quant_attention_chunk(group);
  const int64_t n = (t + chunk - 1) / chunk;
  return n > 1 ? n : 1;
}

struct KvQuantAttentionParams {
  const float* query{nullptr};     // [B, Hq, S, D]
  const int8_t* k_codes{nullptr};  // [B, Hkv, Nq, D/p]
  const uint16_t* k_scale{nullptr};  // float16 bits [B, Hkv, Nq/group, D]
  const uint16_t* k_min{nullptr};
  const float* k_tail{nullptr};      // [B, Hkv, Tf, D]
  const int8_t* v_codes{nullptr};    // [B, Hkv, Nq, D/p]
  const uint16_t* v_scale{nullptr};  // float16 bits [B, Hkv, Nq, D/group]
  const uint16_t* v_min{nullptr};
  const float* v_tail{nullptr};      // [B, Hkv, Tf, D]
  const uint8_t* mask{nullptr};      // bool bytes, [B|1, Hq|1, S|1, T|1] (nonzero = visible)
  float* out{nullptr};               // [B, Hq, S, D]
  int64_t b{0}, hq{0}, hkv{0}, s{0}, d{0}, nq{0}, tf{0};
  int64_t mask_dims[4]{1, 1, 1, 1};
  int64_t bits{8}, group{32};
  float scale{0.0f};          // the attribute: 0 means 1 / sqrt(D)
  void* workspace{nullptr};   // kv_quant_attention_workspace_bytes(...) bytes, 256-B aligned
};

// Scratch: scores [B*Hq*S, T] and partials [B*Hq*S, chunks, D + 2] (float32), each 256-B aligned.
inline size_t kv_quant_attention_align(size_t bytes) { return (bytes + 255) / 256 * 256; }
inline size_t kv_quant_attention_workspace_bytes(int64_t b, int64_t hq, int64_t s, int64_t d, int64_t t,
                                                 int64_t group) {
  const int64_t rows = b * hq * s;
  const size_t scores = static_cast<size_t>(rows * t) * sizeof(float);
  const size_t partial = static_cast<size_t>(rows * kv_quant_attention_chunks(t, group) * (d + 2)) * sizeof(float);
  return kv_quant_attention_align(scores) + kv_quant_attention_align(partial);
}

void launch_kv_quant_attention(const KvQuantAttentionParams& p, const Launch& launch);

}  // namespace parekit
