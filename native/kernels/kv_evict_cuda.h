// CUDA launcher shared by KvEvictH2O and KvEvictSnap (CPU twin: kv_evict.cpp; spec: parekit/ops/kv_evict.py).
// key/value [B, Hkv, T, D], score [B, Hkv, P], probs [B, Hq, S, T] (T = P + S), mask [B, T] ->
// key_out/value_out [B, Hkv, K, D], score_out [B, Hkv, K] with K = min(T, budget). float32 data; the mask
// may be any of the twin's mask dtypes. Scratch comes from `workspace` (kv_evict_workspace_bytes).
#pragma once

#include <cstddef>
#include <cstdint>

#include "core.h"
#include "launch.h"

namespace parekit {

struct KvEvictParams {
  bool snap{false};  // false: H2O (accumulated attention with decay), true: SnapKV (window votes)
  const float* key{nullptr};
  const float* value{nullptr};
  const float* score{nullptr};
  const float* probs{nullptr};
  const void* mask{nullptr};
  DType mask_dtype{DType::kFloat32};
  float* key_out{nullptr};
  float* value_out{nullptr};
  float* score_out{nullptr};
  void* workspace{nullptr};  // at least kv_evict_workspace_bytes(b, hkv, t, p), 256-byte aligned
  int64_t b{0}, hkv{0}, t{0}, d{0}, p{0}, hq{0};
  int64_t budget{1}, sink{0}, recent{0};
  float decay{1.0f};  // H2O only
};

// Scratch bytes for these dims (the same for both policies).
size_t kv_evict_workspace_bytes(int64_t b, int64_t hkv, int64_t t, int64_t p, int64_t budget);

void launch_kv_evict(const KvEvictParams& p, const Launch& launch);

}  // namespace parekit
