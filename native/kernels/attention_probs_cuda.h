// CUDA launcher of AttentionProbs (attention_probs.cpp is the CPU twin): float32 q [b, h, s, d],
// k [b, h, t, d], bool mask [b, mh, s, t] (mh = 1 or h) -> probs float32 [b, h, s, t].
#pragma once

#include <cstdint>

#include "launch.h"

namespace parekit {

struct AttentionProbsParams {
  const float* q{nullptr};
  const float* k{nullptr};
  const uint8_t* mask{nullptr};
  float* out{nullptr};
  int64_t b{0}, h{0}, s{0}, d{0}, t{0}, mh{1};
  float scale{0.0f};  // 0: 1 / sqrt(d)
};

void launch_attention_probs(const AttentionProbsParams& p, const Launch& launch);

}  // namespace parekit
