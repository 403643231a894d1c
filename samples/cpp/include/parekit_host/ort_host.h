// The ONNX Runtime backend: a dlopen'd libonnxruntime, models from files or embedded bytes, validated
// runs, and the decoder step of the KV I/O contract.
//
//   auto ort = OrtRuntime::open("/path/to/onnxruntime/capi/libonnxruntime.so.1.32.0");
//   Model model(ort, ModelSource::file("model.onnx"), {/*custom_ops_library=*/"libparekit_ort.so"});
//   OrtDecoder decoder(model);
//   Generation g = generate(decoder, {{1, 2, 3}}, {/*max_new_tokens=*/16});
//
// The host is compiled against one set of ONNX Runtime headers (C API version ORT_API_VERSION) and asks
// the library for exactly that version: any newer library serves it; an older one is refused in one line.
#pragma once

#include <map>
#include <memory>
#include <string>
#include <vector>

#include "parekit_host/common.h"
#include "parekit_host/decode.h"

#ifndef ORT_API_MANUAL_INIT
#define ORT_API_MANUAL_INIT  // the API comes from the dlopen'd library (OrtRuntime), never from a link
#endif
#include <onnxruntime_cxx_api.h>

namespace parekit_host {

// libonnxruntime loaded with dlopen; the API pointer and the Env live as long as any Model using them.
class OrtRuntime {
 public:
  // Opens `library` (a path; empty: $PAREKIT_HOST_ORT_LIBRARY, else the default the build recorded).
  // Throws Error: missing file, no OrtGetApiBase, or a library older than the headers' C API version.
  static std::shared_ptr<OrtRuntime> open(const std::string& library = "");

 private:
  struct DlClose {
    void operator()(void* handle) const;
  };
  struct Key {};  // only open() constructs one (through std::make_shared)

 public:
  OrtRuntime(Key, std::unique_ptr<void, DlClose> handle, std::string path, std::string version);
  ~OrtRuntime();
  OrtRuntime(const OrtRuntime&) = delete;
  OrtRuntime& operator=(const OrtRuntime&) = delete;

  const std::string& path() const { return path_; }
  const std::string& version() const { return version_; }
  Ort::Env& env() { return env_; }

 private:
  std::unique_ptr<void, DlClose> handle_;  // declared first: closed last
  std::string path_;
  std::string version_;
  Ort::Env env_{nullptr};
};

// Where a model comes from: a file, or bytes the program carries (embedded with the binary, or read).
struct ModelSource {
  std::string path;                     // a file, or
  const void* data = nullptr;           // bytes that must outlive the Model's construction
  std::size_t size = 0;
  std::string name;                     // for messages

  static ModelSource file(const std::string& path) { return {path, nullptr, 0, path}; }
  static ModelSource bytes(const void* data, std::size_t size, const std::string& name = "<embedded model>") {
    return {"", data, size, name};
  }
};

struct ModelOptions {
  std::string custom_ops_library;  // e.g. libparekit_ort.so: its kernels replace the parekit ops' bodies
  int threads = 0;                 // intra-op threads; 0: ONNX Runtime's default
  bool optimize = true;            // ORT_ENABLE_ALL graph optimizations (parekit's Python default)
};

struct TensorSpec {
  std::string name;
  DType dtype = DType::kOther;
  std::vector<int64_t> shape;           // -1 where symbolic
  std::vector<std::string> dim_names;   // the symbolic names ("" for fixed dims)
  std::string describe() const;         // e.g. "past.0.key float32 [batch,2,past,16]"
};

class Model {
 public:
  Model(std::shared_ptr<OrtRuntime> runtime, const ModelSource& source, const ModelOptions& options = {});

  const std::string& name() const { return name_; }
  const std::vector<TensorSpec>& inputs() const { return inputs_; }
  const std::vector<TensorSpec>& outputs() const { return outputs_; }
  const TensorSpec* input(const std::string& name) const;  // nullptr when the model has no such input
  Ort::Session& session() { return session_; }

  // Checks feeds against the input specs (every input given, no unknown name, dtype, rank, fixed dims)
  // and throws Error naming the first mismatch.
  void check_feeds(const std::map<std::string, HostTensor>& feeds) const;
  // Runs with host feeds; returns every output as a host tensor, in output order.
  std::vector<HostTensor> run(const std::map<std::string, HostTensor>& feeds);

 private:
  std::shared_ptr<OrtRuntime> runtime_;  // declared first: outlives the session
  std::string name_;
  Ort::Session session_{nullptr};
  std::vector<TensorSpec> inputs_;
  std::vector<TensorSpec> outputs_;
};

// Encoder feeds for rows of token ids: right-padded input_ids/attention_mask, plus token_type_ids
// (zeros) and position_ids (0, 1, ...) where the model declares them.
std::map<std::string, HostTensor> encoder_feeds(const Model& model, const Prompts& rows, int64_t pad_id = 0);

// One decoder step under the KV I/O contract over ONNX Runtime. The present* values a step returns are
// fed back as the next step's past* values without a copy.
class OrtDecoder : public Stepper {
 public:
  explicit OrtDecoder(Model& model);  // throws Error when the model does not follow the contract

  void reset(int64_t batch) override;
  const std::vector<float>& step(const StepFeeds& feeds) override;
  int64_t vocab() const override { return vocab_; }
  double last_step_s() const override { return last_step_s_; }
  std::size_t state_bytes() const override;

 private:
  Model& model_;
  std::vector<std::string> input_names_;   // session order
  std::vector<std::string> output_names_;  // logits first, then each state's present
  std::vector<const char*> input_ptrs_, output_ptrs_;
  std::vector<std::size_t> state_inputs_;  // for output k+1 (present), the input slot of its past
  std::size_t ids_ = 0, mask_ = 0, positions_ = 0, start_ = 0;
  bool has_positions_ = false;
  bool has_start_ = false;  // the state-reset pass's BOOL start [batch, 1]: true on the step after reset()
  bool fresh_ = false;      // no step since reset(): the state is the empty past
  int64_t vocab_ = 0;
  std::vector<Ort::Value> feeds_;          // one per input slot; state slots carry over between steps
  std::vector<float> last_logits_;
  double last_step_s_ = 0;
};

}  // namespace parekit_host
