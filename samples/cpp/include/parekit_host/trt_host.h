// The TensorRT backend: libnvinfer loaded with dlopen (so the host links without it), plugin libraries
// loaded into the runtime's registry, a deserialized plan, and the decoder step of the KV I/O contract
// with device buffers that swap roles between steps (present of step t = past of step t + 1).
//
//   auto trt = TrtRuntime::open("libnvinfer.so.11", {"libparekit_trt_plugins.so"});
//   TrtEngine engine(*trt, "model.plan");
//   TrtDecoder decoder(engine);
//   Generation g = generate(decoder, {{1, 2, 3}}, {/*max_new_tokens=*/16});
#pragma once

#include <NvInferRuntime.h>
#include <cuda_runtime_api.h>

#include <memory>
#include <string>
#include <vector>

#include "parekit_host/common.h"
#include "parekit_host/decode.h"

namespace parekit_host {

// Throws Error("<what>: <CUDA's message>") unless `status` is cudaSuccess.
void cuda_check(cudaError_t status, const std::string& what);

// A cudaMalloc'd buffer that only grows (doubling), freed with cudaFree.
class DeviceBuffer {
 public:
  void reserve(std::size_t bytes);
  void* get() const { return ptr_.get(); }
  std::size_t capacity() const { return capacity_; }

 private:
  struct Free {
    void operator()(void* p) const { cudaFree(p); }
  };
  std::unique_ptr<void, Free> ptr_;
  std::size_t capacity_ = 0;
};

class CudaStream {
 public:
  CudaStream();
  cudaStream_t get() const { return stream_.get(); }

 private:
  struct Destroy {
    void operator()(cudaStream_t s) const { cudaStreamDestroy(s); }
  };
  std::unique_ptr<CUstream_st, Destroy> stream_;
};

class TrtLogger : public nvinfer1::ILogger {
 public:
  void log(Severity severity, nvinfer1::AsciiChar const* msg) noexcept override;
};

class TrtRuntime {
 public:
  // Opens libnvinfer (empty: libnvinfer.so.<NV_TENSORRT_MAJOR>), creates an IRuntime for the headers'
  // version, and loads each plugin library into its registry (IPluginRegistry::loadLibrary).
  static std::unique_ptr<TrtRuntime> open(const std::string& nvinfer, const std::vector<std::string>& plugins);
  nvinfer1::IRuntime& runtime() { return *runtime_; }
  const std::string& path() const { return path_; }

 private:
  struct DlClose {
    void operator()(void* handle) const;
  };
  struct Key {};

 public:
  TrtRuntime(Key, std::unique_ptr<void, DlClose> handle, std::string path);

 private:
  std::unique_ptr<void, DlClose> handle_;  // declared first: closed last
  std::string path_;
  TrtLogger logger_;
  std::unique_ptr<nvinfer1::IRuntime> runtime_;
};

struct TrtTensor {
  std::string name;
  nvinfer1::DataType dtype = nvinfer1::DataType::kFLOAT;
  nvinfer1::Dims shape{};  // the engine's (-1 where dynamic), or the current one
  std::string describe() const;
};

class TrtEngine {
 public:
  TrtEngine(TrtRuntime& runtime, const std::string& plan_path);
  nvinfer1::ICudaEngine& engine() { return *engine_; }
  nvinfer1::IExecutionContext& context() { return *context_; }
  const std::vector<TrtTensor>& inputs() const { return inputs_; }
  const std::vector<TrtTensor>& outputs() const { return outputs_; }
  const std::string& name() const { return name_; }

 private:
  std::string name_;
  std::unique_ptr<nvinfer1::ICudaEngine> engine_;
  std::unique_ptr<nvinfer1::IExecutionContext> context_;  // declared after the engine: destroyed first
  std::vector<TrtTensor> inputs_, outputs_;
};

class TrtDecoder : public Stepper {
 public:
  explicit TrtDecoder(TrtEngine& engine);  // throws Error when the engine does not follow the contract

  void reset(int64_t batch) override;
  const std::vector<float>& step(const StepFeeds& feeds) override;
  int64_t vocab() const override { return vocab_; }
  double last_step_s() const override { return last_step_s_; }
  std::size_t state_bytes() const override;

 private:
  struct Slot {
    TrtTensor tensor;  // shape: the current one
    DeviceBuffer buffer;
    std::vector<unsigned char> host;  // staging for uploads (ids, mask, positions) and the logits rows
  };
  struct State {
    Slot past, present;
  };
  void upload(Slot& slot, const std::vector<int64_t>& values, int64_t rows, int64_t cols);
  void bind_output(Slot& slot);

  TrtEngine& engine_;
  CudaStream stream_;
  Slot ids_, mask_, positions_, logits_;
  bool has_positions_ = false;
  std::vector<State> states_;
  int64_t vocab_ = 0;
  std::vector<float> last_logits_;
  double last_step_s_ = 0;
};

}  // namespace parekit_host
