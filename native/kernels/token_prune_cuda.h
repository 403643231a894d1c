// CUDA launcher of TokenPrune (CPU twin: token_prune.cpp) and the keep count both share.
//
// tokens [B, N, C], scores [B, N], sizes [B, N] (float32 / float16 / bfloat16, each its own type) ->
// tokens_out [B, M, C], sizes_out [B, M], assign [B, N, M] with M = token_prune_count(N, keep, protect) +
// fuse. Scratch: token_prune_workspace(B, N) bytes at `workspace` (device memory, 256-byte aligned).
#pragma once

#include <cstddef>
#include <cstdint>

#include "core.h"
#include "launch.h"

namespace parekit {

// K = protect + kept free tokens for N input tokens, float32 arithmetic as TokenPrune's body and
// reference (defined in token_prune.cpp, compiled without FMA contraction).
int64_t token_prune_count(int64_t n, float keep, int64_t protect);

struct TokenPruneParams {
  const void* tokens{nullptr};
  const void* scores{nullptr};
  const void* sizes{nullptr};
  void* tokens_out{nullptr};
  void* sizes_out{nullptr};
  void* assign{nullptr};
  void* workspace{nullptr};
  int64_t b{0}, n{0}, c{0};
  DType tokens_type{DType::kFloat32}, scores_type{DType::kFloat32}, sizes_type{DType::kFloat32};
  float keep{0.5f};
  int64_t protect{1};
  int64_t fuse{0};
};

size_t token_prune_workspace(int64_t b, int64_t n);
void launch_token_prune(const TokenPruneParams& p, const Launch& launch);

}  // namespace parekit
