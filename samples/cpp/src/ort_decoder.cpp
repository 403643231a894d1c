// The decoder step of the KV I/O contract over ONNX Runtime (README, "Decoder runtime and the KV I/O
// contract"): every present<suffix> output is fed back as the past<suffix> input whatever its dtype and
// shape; the prefill's past inputs are empty tensors built from the input spec.
#include <chrono>
#include <cstring>

#include "ort_types.h"

namespace parekit_host {

namespace {
const std::string kPast = "past";
const std::string kPresent = "present";

bool starts_with(const std::string& s, const std::string& prefix) { return s.compare(0, prefix.size(), prefix) == 0; }

void require_int64(const Model& model, const TensorSpec& spec) {
  if (spec.dtype != DType::kInt64 || spec.shape.size() != 2) {
    throw Error(model.name() + ": input " + spec.describe() + " must be int64 [batch, ...] under the decoder contract");
  }
}
}  // namespace

OrtDecoder::OrtDecoder(Model& model) : model_(model) {
  const auto& inputs = model.inputs();
  bool has_ids = false, has_mask = false;
  for (std::size_t i = 0; i < inputs.size(); ++i) {
    const TensorSpec& spec = inputs[i];
    input_names_.push_back(spec.name);
    if (spec.name == "input_ids") {
      ids_ = i, has_ids = true;
    } else if (spec.name == "attention_mask") {
      mask_ = i, has_mask = true;
    } else if (spec.name == "position_ids") {
      positions_ = i, has_positions_ = true;
    } else if (spec.name == "start") {
      // the state-reset pass (Triton's implicit state): true when the past is the empty past
      if (spec.dtype != DType::kBool || spec.shape.size() != 2) {
        throw Error(model.name() + ": input " + spec.describe() + " must be bool [batch, 1] (the state-reset control)");
      }
      start_ = i, has_start_ = true;
    } else if (!starts_with(spec.name, kPast)) {
      throw Error(model.name() + ": input '" + spec.name
          + "' is none of input_ids, attention_mask, position_ids, start, past*");
    } else if (spec.dtype == DType::kOther) {
      throw Error(model.name() + ": state input '" + spec.name + "' has an element type the host does not handle");
    }
    if (spec.name == "input_ids" || spec.name == "attention_mask" || spec.name == "position_ids") {
      require_int64(model, spec);
    }
  }
  if (!has_ids || !has_mask) {
    throw Error(model.name() + ": no '" + std::string(has_ids ? "attention_mask" : "input_ids") +
                "' input, so the model does not follow the decoder I/O contract");
  }
  // Outputs: the logits ("logits", else the first non-present output), then one present per past.
  std::string logits;
  for (const auto& out : model.outputs()) {
    if (!starts_with(out.name, kPresent) && (logits.empty() || out.name == "logits")) logits = out.name;
  }
  if (logits.empty()) throw Error(model.name() + ": the model has no logits output");
  output_names_.push_back(logits);
  for (std::size_t i = 0; i < inputs.size(); ++i) {
    if (!starts_with(inputs[i].name, kPast)) continue;
    const std::string present = kPresent + inputs[i].name.substr(kPast.size());
    bool found = false;
    for (const auto& out : model.outputs()) found = found || out.name == present;
    if (!found) {
      throw Error(model.name() + ": input '" + inputs[i].name + "' has no output '" + present
          + "' to be fed back from");
    }
    output_names_.push_back(present);
    state_inputs_.push_back(i);
  }
  if (state_inputs_.empty()) throw Error(model.name() + ": the model has no past* inputs, so it carries no KV cache");
  for (const auto& out : model.outputs()) {
    if (out.name == logits) {
      if (out.shape.size() != 3 || out.shape[2] <= 0) {
        throw Error(model.name() + ": logits must be [batch, seq, vocab], got " + out.describe());
      }
      if (out.dtype != DType::kFloat32 && out.dtype != DType::kFloat16) {
        throw Error(model.name() + ": logits must be float32 or float16, got " + out.describe());
      }
      vocab_ = out.shape[2];
    }
  }
  for (const auto& n : input_names_) input_ptrs_.push_back(n.c_str());
  for (const auto& n : output_names_) output_ptrs_.push_back(n.c_str());
  feeds_.resize(input_names_.size());
}

void OrtDecoder::reset(int64_t batch) {
  if (batch < 1) throw Error(model_.name() + ": batch must be >= 1, got " + std::to_string(batch));
  Ort::AllocatorWithDefaultOptions allocator;
  for (std::size_t slot : state_inputs_) {
    const TensorSpec& spec = model_.inputs()[slot];
    std::vector<int64_t> dims(spec.shape);
    for (auto& d : dims) d = d < 0 ? 0 : d;               // symbolic dims: 0 ...
    if (!dims.empty() && spec.shape[0] < 0) dims[0] = batch;  // ... except a symbolic batch axis
    feeds_[slot] = Ort::Value::CreateTensor(allocator, dims.data(), dims.size(), to_onnx(spec.dtype));
    // A state with only fixed dims is not empty: it starts as zeros, as parekit.runtime builds it.
    const std::size_t bytes = feeds_[slot].GetTensorTypeAndShapeInfo().GetElementCount() * dtype_size(spec.dtype);
    if (bytes > 0) std::memset(feeds_[slot].GetTensorMutableRawData(), 0, bytes);
  }
  fresh_ = true;
}

const std::vector<float>& OrtDecoder::step(const StepFeeds& f) {
  if (f.ids.size() != static_cast<std::size_t>(f.batch * f.seq) || f.positions.size() != f.ids.size() ||
      f.mask.size() != static_cast<std::size_t>(f.batch * f.total) || f.total < f.seq) {
    throw Error(model_.name() + ": step feeds do not match their [batch, seq] / [batch, total] shapes");
  }
  if (!feeds_[state_inputs_.front()]) throw Error(model_.name() + ": step before reset(batch)");
  auto memory = Ort::MemoryInfo::CreateCpu(OrtArenaAllocator, OrtMemTypeDefault);
  const int64_t seq_shape[2] = {f.batch, f.seq};
  const int64_t mask_shape[2] = {f.batch, f.total};
  // ORT reads these host buffers in place for the duration of Run.
  auto wrap = [&](const std::vector<int64_t>& v, const int64_t* shape) {
    return Ort::Value::CreateTensor<int64_t>(memory, const_cast<int64_t*>(v.data()), v.size(), shape, 2);
  };
  feeds_[ids_] = wrap(f.ids, seq_shape);
  feeds_[mask_] = wrap(f.mask, mask_shape);
  if (has_positions_) feeds_[positions_] = wrap(f.positions, seq_shape);
  if (has_start_) {
    Ort::AllocatorWithDefaultOptions allocator;
    const int64_t start_shape[2] = {f.batch, 1};
    feeds_[start_] = Ort::Value::CreateTensor(allocator, start_shape, 2, ONNX_TENSOR_ELEMENT_DATA_TYPE_BOOL);
    bool* flags = feeds_[start_].GetTensorMutableData<bool>();
    for (int64_t r = 0; r < f.batch; ++r) flags[r] = fresh_;
  }
  std::vector<Ort::Value> out;
  const auto start = std::chrono::steady_clock::now();
  try {
    out = model_.session().Run(Ort::RunOptions{nullptr}, input_ptrs_.data(), feeds_.data(), feeds_.size(),
                               output_ptrs_.data(), output_ptrs_.size());
  } catch (const Ort::Exception& e) {
    throw Error("ONNX Runtime failed running " + model_.name() + ": " + one_line(e.what()));
  }
  last_step_s_ = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  fresh_ = false;
  // present -> past: the values move into the input slots, no copy.
  for (std::size_t k = 0; k < state_inputs_.size(); ++k) feeds_[state_inputs_[k]] = std::move(out[k + 1]);
  auto info = out[0].GetTensorTypeAndShapeInfo();
  const auto shape = info.GetShape();
  if (shape.size() != 3 || shape[0] != f.batch || shape[2] != vocab_) {
    throw Error(model_.name() + ": logits of shape other than [batch, seq, vocab] at this step");
  }
  const int64_t seq = shape[1];
  last_logits_.resize(static_cast<std::size_t>(f.batch * vocab_));
  for (int64_t r = 0; r < f.batch; ++r) {
    const int64_t offset = (r * seq + seq - 1) * vocab_;
    float* dst = last_logits_.data() + r * vocab_;
    if (info.GetElementType() == ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT) {
      std::memcpy(dst, out[0].GetTensorData<float>() + offset, static_cast<std::size_t>(vocab_) * sizeof(float));
    } else {
      const auto* half = static_cast<const uint16_t*>(out[0].GetTensorRawData()) + offset;
      for (int64_t v = 0; v < vocab_; ++v) dst[v] = half_to_float(half[v]);
    }
  }
  return last_logits_;
}

std::size_t OrtDecoder::state_bytes() const {
  std::size_t total = 0;
  for (std::size_t slot : state_inputs_) {
    if (!feeds_[slot]) continue;
    auto info = feeds_[slot].GetTensorTypeAndShapeInfo();
    total += info.GetElementCount() * dtype_size(model_.inputs()[slot].dtype);
  }
  return total;
}

}  // namespace parekit_host
