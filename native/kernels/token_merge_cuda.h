// CUDA launcher of TokenMerge (ToMe bipartite soft matching; the CPU twin is token_merge.cpp).
//
// tokens [B, N, C], metric [B, N, D], sizes [B, N] -> tokens_out [B, M, C], sizes_out [B, M],
// assign [B, N, M] with M = N - token_merge_limit(N, r, protect). tokens, sizes and the outputs share one
// float type (float32, float16, bfloat16); the metric may be any of the three. The kernels compute in
// float64 in the twin's order, so the results are the twin's (and the reference's) bit for bit.
#pragma once

#include <algorithm>
#include <cstddef>
#include <cstdint>

#include "core.h"
#include "launch.h"

namespace parekit {

// token_merge.merge_limit: the r' merges that fit in n tokens with `protect` protected ones.
inline int64_t token_merge_limit(int64_t n, int64_t r, int64_t protect) {
  const int64_t p = std::min(protect, n);
  const int64_t free_a = (n + 1) / 2 - (p + 1) / 2;
  const int64_t free_b = n / 2 - p / 2;
  return std::max<int64_t>(0, std::min({r, free_a, free_b}));
}

struct TokenMergeParams {
  const void* tokens{nullptr};
  const void* metric{nullptr};
  const void* sizes{nullptr};
  void* tokens_out{nullptr};
  void* sizes_out{nullptr};
  void* assign{nullptr};
  void* workspace{nullptr};  // token_merge_workspace_bytes(b, n, d, r, protect) bytes, 16-byte aligned
  int64_t b{0}, n{0}, c{0}, d{0};
  DType tokens_type{DType::kFloat32};  // also sizes and every output
  DType metric_type{DType::kFloat32};
  int64_t r{0}, protect{0};  // the attributes (r' is derived)
};

// Scratch of one launch: float64 unit metric rows and A x B similarities, per-token and per-group
// bookkeeping. 0 is never returned (a few aligned chunks even for empty shapes).
size_t token_merge_workspace_bytes(int64_t b, int64_t n, int64_t d, int64_t r, int64_t protect);

void launch_token_merge(const TokenMergeParams& p, const Launch& launch);

}  // namespace parekit
