// How a CUDA kernel of native/kernels is launched: on a CUDA stream, or emulated on the host.
//
// Each op's launcher header (<op>_cuda.h, plain C++, no CUDA types) declares a params struct and a
// `void launch_<op>(const <Op>Params&, const Launch&)`; the .cu file beside the CPU kernel defines it.
// The TensorRT plugin (plugins_trt/) calls it from enqueue with device pointers and its stream. With
// `host = true` the very same element functors run in a loop on the calling thread over host pointers:
// the test harness uses that to check the CUDA code paths against the reference vectors on machines
// without a GPU (the kernels are written thread-per-element without shared memory, so the emulation
// runs exactly what a CUDA thread runs; only scheduling differs).
#pragma once

#include <cstdint>

namespace parekit {

struct Launch {
  void* stream{nullptr};  // cudaStream_t
  bool host{false};       // emulate on the host: every pointer is a host pointer
};

}  // namespace parekit
