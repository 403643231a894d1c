// CUDA launchers of KvSlotMask and KvMaskRemap (kv_slot_mask.cpp is the CPU twin). Pure mask logic and
// data movement: bit-exact with the twin.
#pragma once

#include <cstdint>

#include "core.h"
#include "launch.h"

namespace parekit {

// attn_mask bool [b, mh, s, t] (mh = 1 or hkv * group), score float32 [b, hkv, p] -> out bool [b, hkv*group, s, t].
struct KvSlotMaskParams {
  const uint8_t* mask{nullptr};
  const float* score{nullptr};
  uint8_t* out{nullptr};
  int64_t b{0}, hkv{0}, group{1}, mh{1}, s{0}, t{0}, p{0};
};

void launch_kv_slot_mask(const KvSlotMaskParams& p, const Launch& launch);

// attention_mask [b, n] of `dtype` -> out [b, p + s]: p ones, then the last s columns of the row.
struct KvMaskRemapParams {
  const void* mask{nullptr};
  void* out{nullptr};
  DType dtype{DType::kBool};
  int64_t b{0}, n{0}, p{0}, s{0};
};

void launch_kv_mask_remap(const KvMaskRemapParams& p, const Launch& launch);

}  // namespace parekit
