// The TensorRT backend (see trt_host.h). Compiled in CI against the TensorRT 10.14 headers; run on a
// user's GPU against their TensorRT. Every CUDA call is checked; TensorRT calls that return a status are too.
#include "parekit_host/trt_host.h"

#include <dlfcn.h>
#include <sys/stat.h>

#include <algorithm>
#include <chrono>
#include <cstring>
#include <fstream>
#include <iostream>
#include <iterator>

namespace parekit_host {

namespace {
#if NV_TENSORRT_MAJOR >= 11
const char* const kDefaultNvinfer = "libnvinfer.so.11";
#else
const char* const kDefaultNvinfer = "libnvinfer.so.10";
#endif

bool starts_with(const std::string& s, const char* prefix) { return s.rfind(prefix, 0) == 0; }

std::size_t element_size(nvinfer1::DataType t) {
  using nvinfer1::DataType;
  switch (t) {
    case DataType::kINT64: return 8;
    case DataType::kFLOAT:
    case DataType::kINT32: return 4;
    case DataType::kHALF:
    case DataType::kBF16: return 2;
    case DataType::kINT8:
    case DataType::kUINT8:
    case DataType::kBOOL:
    case DataType::kFP8: return 1;
    default: return 0;  // sub-byte types (int4, fp4, ...): not a state the host can size
  }
}

int64_t volume(const nvinfer1::Dims& d) {
  int64_t v = 1;
  for (int32_t i = 0; i < d.nbDims; ++i) v *= d.d[i];
  return v;
}
}  // namespace

void cuda_check(cudaError_t status, const std::string& what) {
  if (status != cudaSuccess) {
    throw Error(what + ": " + cudaGetErrorName(status) + " (" + cudaGetErrorString(status) + ")");
  }
}

void DeviceBuffer::reserve(std::size_t bytes) {
  if (bytes <= capacity_ && ptr_) return;
  // Grow geometrically (caches grow one token per step) and never hand TensorRT a null address.
  const std::size_t want = std::max<std::size_t>({bytes, 2 * capacity_, 256});
  void* p = nullptr;
  cuda_check(cudaMalloc(&p, want), "cudaMalloc(" + std::to_string(want) + " bytes)");
  ptr_.reset(p);
  capacity_ = want;
}

CudaStream::CudaStream() {
  cudaStream_t s = nullptr;
  cuda_check(cudaStreamCreateWithFlags(&s, cudaStreamNonBlocking), "cudaStreamCreate");
  stream_.reset(s);
}

void TrtLogger::log(Severity severity, nvinfer1::AsciiChar const* msg) noexcept {
  if (severity <= Severity::kWARNING) std::cerr << "tensorrt: " << one_line(msg) << "\n";
}

void TrtRuntime::DlClose::operator()(void* handle) const {
  if (handle != nullptr) dlclose(handle);
}

TrtRuntime::TrtRuntime(Key, std::unique_ptr<void, DlClose> handle, std::string path)
    : handle_(std::move(handle)), path_(std::move(path)) {
  using Create = void* (*)(void*, int32_t);
  auto create = reinterpret_cast<Create>(dlsym(handle_.get(), "createInferRuntime_INTERNAL"));
  if (create == nullptr) throw Error(path_ + " exports no createInferRuntime_INTERNAL: not a TensorRT runtime library");
  runtime_.reset(static_cast<nvinfer1::IRuntime*>(create(&logger_, NV_TENSORRT_VERSION)));
  if (!runtime_) {
    throw Error(path_ + " refused to create a runtime for the headers' TensorRT " + std::to_string(NV_TENSORRT_MAJOR) +
                "." + std::to_string(NV_TENSORRT_MINOR) + ": rebuild the host against that TensorRT's headers");
  }
}

std::unique_ptr<TrtRuntime> TrtRuntime::open(const std::string& nvinfer, const std::vector<std::string>& plugins) {
  const std::string path = nvinfer.empty() ? kDefaultNvinfer : nvinfer;
  std::unique_ptr<void, DlClose> handle(dlopen(path.c_str(), RTLD_NOW | RTLD_LOCAL));
  if (!handle) throw Error("cannot load TensorRT library " + path + ": " + one_line(dlerror()));
  auto trt = std::make_unique<TrtRuntime>(Key{}, std::move(handle), path);
  for (const auto& lib : plugins) {
    struct stat info {};
    if (stat(lib.c_str(), &info) != 0) throw Error("plugin library " + lib + ": no such file");
    if (trt->runtime().getPluginRegistry().loadLibrary(lib.c_str()) == nullptr) {
      throw Error("TensorRT cannot load the plugin library " + lib + " (see the tensorrt: lines above)");
    }
  }
  return trt;
}

std::string TrtTensor::describe() const {
  std::string out = name + " [";
  for (int32_t i = 0; i < shape.nbDims; ++i) out += (i ? "," : "") + std::to_string(shape.d[i]);
  return out + "] (" + std::to_string(element_size(dtype)) + "-byte elements)";
}

TrtEngine::TrtEngine(TrtRuntime& runtime, const std::string& plan_path) : name_(plan_path) {
  std::ifstream in(plan_path, std::ios::binary);
  if (!in) throw Error(plan_path + ": no such plan file");
  const std::vector<char> plan{std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
  engine_.reset(runtime.runtime().deserializeCudaEngine(plan.data(), plan.size()));
  if (!engine_) {
    throw Error("TensorRT cannot deserialize " + plan_path +
                " (built by another TensorRT version, for another GPU, or with plugins not loaded: --plugins)");
  }
  context_.reset(engine_->createExecutionContext());
  if (!context_) throw Error(plan_path + ": TensorRT cannot create an execution context");
  for (int32_t i = 0; i < engine_->getNbIOTensors(); ++i) {
    TrtTensor t;
    t.name = engine_->getIOTensorName(i);
    t.dtype = engine_->getTensorDataType(t.name.c_str());
    t.shape = engine_->getTensorShape(t.name.c_str());
    if (engine_->getTensorLocation(t.name.c_str()) != nvinfer1::TensorLocation::kDEVICE) {
      throw Error(plan_path + ": tensor '" + t.name
          + "' lives on the host; the decoder loop binds device tensors only");
    }
    (engine_->getTensorIOMode(t.name.c_str()) == nvinfer1::TensorIOMode::kINPUT ? inputs_ : outputs_).push_back(t);
  }
}

TrtDecoder::TrtDecoder(TrtEngine& engine) : engine_(engine) {
  bool has_ids = false, has_mask = false;
  for (const auto& t : engine.inputs()) {
    Slot* slot = nullptr;
    if (t.name == "input_ids") slot = &ids_, has_ids = true;
    else if (t.name == "attention_mask") slot = &mask_, has_mask = true;
    else if (t.name == "position_ids") slot = &positions_, has_positions_ = true;
    if (slot != nullptr) {
      if ((t.dtype != nvinfer1::DataType::kINT64 && t.dtype != nvinfer1::DataType::kINT32) || t.shape.nbDims != 2) {
        throw Error(engine.name() + ": input " + t.describe() + " must be int64 or int32 [batch, ...]");
      }
      slot->tensor = t;
      continue;
    }
    if (!starts_with(t.name, "past")) {
      throw Error(engine.name() + ": input '" + t.name
          + "' is none of input_ids, attention_mask, position_ids, past*");
    }
    if (element_size(t.dtype) == 0) {
      throw Error(engine.name() + ": state " + t.describe() + " has an element type the host does not handle");
    }
    const std::string present = "present" + t.name.substr(4);
    auto out = std::find_if(engine.outputs().begin(), engine.outputs().end(),
        [&](const TrtTensor& o) { return o.name == present; });
    if (out == engine.outputs().end()) {
      throw Error(engine.name() + ": input '" + t.name + "' has no output '" + present + "'");
    }
    State s;
    s.past.tensor = t;
    s.present.tensor = *out;
    states_.push_back(std::move(s));
  }
  if (!has_ids || !has_mask) {
    throw Error(engine.name() + ": no input_ids / attention_mask input: not a decoder under the contract");
  }
  if (states_.empty()) throw Error(engine.name() + ": no past* inputs, so the engine carries no KV cache");
  for (const auto& o : engine.outputs()) {
    if (!starts_with(o.name, "present") && (logits_.tensor.name.empty() || o.name == "logits")) logits_.tensor = o;
  }
  const auto& lt = logits_.tensor;
  if (lt.name.empty() || lt.shape.nbDims != 3 || lt.shape.d[2] <= 0) {
    throw Error(engine.name() + ": no logits output [batch, seq, vocab] with a fixed vocab");
  }
  if (lt.dtype != nvinfer1::DataType::kFLOAT && lt.dtype != nvinfer1::DataType::kHALF && lt.dtype != nvinfer1::DataType::kBF16) {
    throw Error(engine.name() + ": logits must be float32, float16 or bfloat16");
  }
  vocab_ = lt.shape.d[2];
}

void TrtDecoder::reset(int64_t batch) {
  if (batch < 1) throw Error(engine_.name() + ": batch must be >= 1, got " + std::to_string(batch));
  for (auto& s : states_) {
    nvinfer1::Dims d = s.past.tensor.shape;
    // The contract's empty past: the dynamic batch axis is the batch, every other dynamic dim 0.
    for (int32_t i = 0; i < d.nbDims; ++i) d.d[i] = d.d[i] < 0 ? (i == 0 ? batch : 0) : d.d[i];
    s.past.tensor.shape = d;
    const std::size_t bytes = static_cast<std::size_t>(volume(d)) * element_size(s.past.tensor.dtype);
    s.past.buffer.reserve(bytes);
    if (bytes > 0) {  // a state with only fixed dims starts as zeros
      cuda_check(cudaMemsetAsync(s.past.buffer.get(), 0, bytes, stream_.get()), "cudaMemsetAsync(" + s.past.tensor.name + ")");
    }
  }
}

void TrtDecoder::upload(Slot& slot, const std::vector<int64_t>& values, int64_t rows, int64_t cols) {
  const std::size_t esize = element_size(slot.tensor.dtype);
  slot.host.resize(values.size() * esize);  // the slot's own staging: alive until the step synchronizes
  if (esize == 8) {
    std::memcpy(slot.host.data(), values.data(), slot.host.size());
  } else {
    for (std::size_t i = 0; i < values.size(); ++i) {
      const auto v = static_cast<int32_t>(values[i]);
      std::memcpy(slot.host.data() + i * 4, &v, 4);
    }
  }
  slot.buffer.reserve(slot.host.size());
  // On the engine's stream, so enqueueV3 is ordered after the copy (the stream does not sync with stream 0).
  cuda_check(cudaMemcpyAsync(slot.buffer.get(), slot.host.data(), slot.host.size(), cudaMemcpyHostToDevice,
                             stream_.get()),
             "cudaMemcpyAsync(" + slot.tensor.name + ")");
  slot.tensor.shape.nbDims = 2;
  slot.tensor.shape.d[0] = rows;
  slot.tensor.shape.d[1] = cols;
  auto& ctx = engine_.context();
  if (!ctx.setInputShape(slot.tensor.name.c_str(), slot.tensor.shape)) {
    throw Error(engine_.name() + ": input '" + slot.tensor.name + "' shape [" + std::to_string(rows) + ","
        + std::to_string(cols) +
                "] is outside the engine's optimization profile");
  }
  if (!ctx.setTensorAddress(slot.tensor.name.c_str(), slot.buffer.get())) {
    throw Error(engine_.name() + ": cannot bind '" + slot.tensor.name + "'");
  }
}

void TrtDecoder::bind_output(Slot& slot) {
  auto& ctx = engine_.context();
  slot.tensor.shape = ctx.getTensorShape(slot.tensor.name.c_str());
  for (int32_t i = 0; i < slot.tensor.shape.nbDims; ++i) {
    if (slot.tensor.shape.d[i] < 0) {
      throw Error(engine_.name() + ": output '" + slot.tensor.name
          + "' has a data-dependent shape; the host needs shapes known from the inputs");
    }
  }
  slot.buffer.reserve(static_cast<std::size_t>(volume(slot.tensor.shape)) * element_size(slot.tensor.dtype));
  if (!ctx.setTensorAddress(slot.tensor.name.c_str(), slot.buffer.get())) {
    throw Error(engine_.name() + ": cannot bind '" + slot.tensor.name + "'");
  }
}

const std::vector<float>& TrtDecoder::step(const StepFeeds& f) {
  if (f.ids.size() != static_cast<std::size_t>(f.batch * f.seq) || f.positions.size() != f.ids.size() ||
      f.mask.size() != static_cast<std::size_t>(f.batch * f.total) || f.total < f.seq) {
    throw Error(engine_.name() + ": step feeds do not match their [batch, seq] / [batch, total] shapes");
  }
  auto& ctx = engine_.context();
  upload(ids_, f.ids, f.batch, f.seq);
  upload(mask_, f.mask, f.batch, f.total);
  if (has_positions_) upload(positions_, f.positions, f.batch, f.seq);
  for (auto& s : states_) {
    if (!s.past.buffer.get()) throw Error(engine_.name() + ": step before reset(batch)");
    if (!ctx.setInputShape(s.past.tensor.name.c_str(), s.past.tensor.shape)) {
      throw Error(engine_.name() + ": state " + s.past.tensor.describe()
          + " is outside the engine's optimization profile");
    }
    if (!ctx.setTensorAddress(s.past.tensor.name.c_str(), s.past.buffer.get())) {
      throw Error(engine_.name() + ": cannot bind '" + s.past.tensor.name + "'");
    }
  }
  bind_output(logits_);
  for (auto& s : states_) bind_output(s.present);
  const auto start = std::chrono::steady_clock::now();
  if (!ctx.enqueueV3(stream_.get())) throw Error(engine_.name() + ": enqueueV3 failed (see the tensorrt: lines above)");
  // Greedy needs only each row's last position: copy those rows back.
  const std::size_t esize = element_size(logits_.tensor.dtype);
  const int64_t seq = logits_.tensor.shape.d[1];
  std::vector<unsigned char>& host = logits_.host;
  host.resize(static_cast<std::size_t>(f.batch * vocab_) * esize);
  const auto* base = static_cast<const unsigned char*>(logits_.buffer.get());
  const auto row_bytes = static_cast<std::size_t>(vocab_) * esize;
  for (int64_t r = 0; r < f.batch; ++r) {
    const auto* src = base + static_cast<std::size_t>(r * seq + seq - 1) * row_bytes;
    cuda_check(cudaMemcpyAsync(host.data() + static_cast<std::size_t>(r) * row_bytes, src, row_bytes,
                               cudaMemcpyDeviceToHost, stream_.get()),
               "cudaMemcpyAsync(logits)");
  }
  cuda_check(cudaStreamSynchronize(stream_.get()), "cudaStreamSynchronize (the engine's step)");
  last_step_s_ = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  last_logits_.resize(static_cast<std::size_t>(f.batch * vocab_));
  for (std::size_t i = 0; i < last_logits_.size(); ++i) {
    if (logits_.tensor.dtype == nvinfer1::DataType::kFLOAT) {
      std::memcpy(&last_logits_[i], host.data() + i * 4, 4);
    } else {
      uint16_t bits;
      std::memcpy(&bits, host.data() + i * 2, 2);
      last_logits_[i] = logits_.tensor.dtype == nvinfer1::DataType::kHALF ? half_to_float(bits) : bfloat16_to_float(bits);
    }
  }
  // present -> past: the buffers swap roles, no copy.
  for (auto& s : states_) {
    std::swap(s.past.buffer, s.present.buffer);
    s.past.tensor.shape = s.present.tensor.shape;
  }
  return last_logits_;
}

std::size_t TrtDecoder::state_bytes() const {
  std::size_t total = 0;
  for (const auto& s : states_) total += static_cast<std::size_t>(volume(s.past.tensor.shape)) * element_size(s.past.tensor.dtype);
  return total;
}

}  // namespace parekit_host
