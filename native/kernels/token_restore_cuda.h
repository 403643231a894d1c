// CUDA launcher of TokenRestore (CPU twin: token_restore.cpp).
//
// reduced [B, M, C], assign [B, N, M], base [B, N, C] -> out [B, N, C]: row n is reduced[first nonzero
// column of assign[n]], or base[n] where the row is all zero. Pure data movement: bit-exact.
// Scratch: token_restore_workspace(B, N) bytes at `workspace` (device memory, 256-byte aligned).
#pragma once

#include <cstddef>
#include <cstdint>

#include "core.h"
#include "launch.h"

namespace parekit {

struct TokenRestoreParams {
  const void* reduced{nullptr};
  const void* assign{nullptr};
  const void* base{nullptr};
  void* out{nullptr};
  void* workspace{nullptr};
  int64_t b{0}, n{0}, m{0}, c{0};
  DType assign_type{DType::kFloat32};
  size_t elem_size{4};  // of reduced, base and out: 2 or 4
};

size_t token_restore_workspace(int64_t b, int64_t n);
void launch_token_restore(const TokenRestoreParams& p, const Launch& launch);

}  // namespace parekit
