// CUDA launcher of ExitGate (exit_gate.cpp is its CPU twin): per row of x viewed as [rows, v], the
// signal's score (float32) and the exit decision (bool). Plain C++: included by the TensorRT plugin.
#pragma once

#include <cstdint>
#include <string>

#include "core.h"
#include "launch.h"

namespace parekit {

enum class ExitSignal : int32_t { kMargin, kEntropy, kMaxprob, kCosine };

// "margin" / "entropy" / "maxprob" / "cosine" -> the signal; throws Error with the kernel's message.
// Defined in exit_gate.cpp (the CPU twin, which uses it too).
ExitSignal exit_signal_from_name(const std::string& name);

struct ExitGateParams {
  const void* x{nullptr};     // [rows, v] of `dtype`
  const void* prev{nullptr};  // [rows, v] of `dtype`; cosine only (nullptr otherwise)
  float* score{nullptr};      // [rows]
  bool* take{nullptr};        // [rows]
  int64_t rows{0}, v{0};      // v >= 1
  DType dtype{DType::kFloat32};  // float32 or float16
  ExitSignal signal{ExitSignal::kMargin};
  float threshold{0.9f};
};

void launch_exit_gate(const ExitGateParams& p, const Launch& launch);

}  // namespace parekit
