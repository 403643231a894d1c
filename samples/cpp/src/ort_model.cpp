// Models over ONNX Runtime: loading (file or bytes, optional custom-op library), the I/O specs, and
// feeds checked at the API edge before ONNX Runtime sees them.
#include <sys/stat.h>

#include <algorithm>
#include <cstring>

#include "ort_types.h"

namespace parekit_host {

DType from_onnx(ONNXTensorElementDataType type) {
  switch (type) {
    case ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT: return DType::kFloat32;
    case ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT16: return DType::kFloat16;
    case ONNX_TENSOR_ELEMENT_DATA_TYPE_BFLOAT16: return DType::kBFloat16;
    case ONNX_TENSOR_ELEMENT_DATA_TYPE_DOUBLE: return DType::kFloat64;
    case ONNX_TENSOR_ELEMENT_DATA_TYPE_INT8: return DType::kInt8;
    case ONNX_TENSOR_ELEMENT_DATA_TYPE_UINT8: return DType::kUInt8;
    case ONNX_TENSOR_ELEMENT_DATA_TYPE_INT16: return DType::kInt16;
    case ONNX_TENSOR_ELEMENT_DATA_TYPE_INT32: return DType::kInt32;
    case ONNX_TENSOR_ELEMENT_DATA_TYPE_INT64: return DType::kInt64;
    case ONNX_TENSOR_ELEMENT_DATA_TYPE_BOOL: return DType::kBool;
    default: return DType::kOther;
  }
}

ONNXTensorElementDataType to_onnx(DType dtype) {
  switch (dtype) {
    case DType::kFloat32: return ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT;
    case DType::kFloat16: return ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT16;
    case DType::kBFloat16: return ONNX_TENSOR_ELEMENT_DATA_TYPE_BFLOAT16;
    case DType::kFloat64: return ONNX_TENSOR_ELEMENT_DATA_TYPE_DOUBLE;
    case DType::kInt8: return ONNX_TENSOR_ELEMENT_DATA_TYPE_INT8;
    case DType::kUInt8: return ONNX_TENSOR_ELEMENT_DATA_TYPE_UINT8;
    case DType::kInt16: return ONNX_TENSOR_ELEMENT_DATA_TYPE_INT16;
    case DType::kInt32: return ONNX_TENSOR_ELEMENT_DATA_TYPE_INT32;
    case DType::kInt64: return ONNX_TENSOR_ELEMENT_DATA_TYPE_INT64;
    case DType::kBool: return ONNX_TENSOR_ELEMENT_DATA_TYPE_BOOL;
    case DType::kOther: break;
  }
  return ONNX_TENSOR_ELEMENT_DATA_TYPE_UNDEFINED;
}

std::string TensorSpec::describe() const {
  std::string out = name + " " + dtype_name(dtype) + " [";
  for (std::size_t i = 0; i < shape.size(); ++i) {
    if (i) out += ",";
    out += shape[i] >= 0 ? std::to_string(shape[i]) : (dim_names[i].empty() ? "?" : dim_names[i]);
  }
  return out + "]";
}

static TensorSpec spec_of(const std::string& name, const Ort::TypeInfo& info) {
  TensorSpec spec;
  spec.name = name;
  if (info.GetONNXType() != ONNX_TYPE_TENSOR) return spec;  // dtype kOther: refused where it is used
  auto tensor = info.GetTensorTypeAndShapeInfo();
  spec.dtype = from_onnx(tensor.GetElementType());
  spec.shape = tensor.GetShape();
  std::vector<const char*> names(spec.shape.size(), nullptr);
  if (!names.empty()) tensor.GetSymbolicDimensions(names.data(), names.size());
  for (const char* n : names) spec.dim_names.emplace_back(n != nullptr ? n : "");
  return spec;
}

static Ort::SessionOptions session_options(const ModelOptions& options, const std::string& model) {
  Ort::SessionOptions so;
  so.SetGraphOptimizationLevel(options.optimize ? GraphOptimizationLevel::ORT_ENABLE_ALL
                                                : GraphOptimizationLevel::ORT_DISABLE_ALL);
  so.SetLogSeverityLevel(3);
  if (options.threads < 0) throw Error(model + ": threads must be >= 0, got " + std::to_string(options.threads));
  if (options.threads > 0) {
    so.SetIntraOpNumThreads(options.threads);
    so.SetInterOpNumThreads(1);
  }
  if (!options.custom_ops_library.empty()) {
    struct stat info {};
    if (stat(options.custom_ops_library.c_str(), &info) != 0) {
      throw Error("custom-op library " + options.custom_ops_library + ": no such file");
    }
    try {
      so.RegisterCustomOpsLibrary(options.custom_ops_library.c_str());
    } catch (const Ort::Exception& e) {
      throw Error("ONNX Runtime cannot register the custom-op library " + options.custom_ops_library + ": " +
                  one_line(e.what()));
    }
  }
  return so;
}

Model::Model(std::shared_ptr<OrtRuntime> runtime, const ModelSource& source, const ModelOptions& options)
    : runtime_(std::move(runtime)), name_(source.name) {
  if (!runtime_) throw Error(name_ + ": no ONNX Runtime (OrtRuntime::open first)");
  Ort::SessionOptions so = session_options(options, name_);
  try {
    if (source.data != nullptr) {
      session_ = Ort::Session(runtime_->env(), source.data, source.size, so);
    } else {
      struct stat info {};
      if (stat(source.path.c_str(), &info) != 0) throw Error(source.path + ": no such model file");
      session_ = Ort::Session(runtime_->env(), source.path.c_str(), so);
    }
  } catch (const Ort::Exception& e) {
    throw Error("ONNX Runtime cannot load " + name_ + ": " + one_line(e.what()));
  }
  Ort::AllocatorWithDefaultOptions allocator;
  for (std::size_t i = 0; i < session_.GetInputCount(); ++i) {
    inputs_.push_back(spec_of(session_.GetInputNameAllocated(i, allocator).get(), session_.GetInputTypeInfo(i)));
  }
  for (std::size_t i = 0; i < session_.GetOutputCount(); ++i) {
    outputs_.push_back(spec_of(session_.GetOutputNameAllocated(i, allocator).get(), session_.GetOutputTypeInfo(i)));
  }
}

const TensorSpec* Model::input(const std::string& name) const {
  for (const auto& spec : inputs_) {
    if (spec.name == name) return &spec;
  }
  return nullptr;
}

void Model::check_feeds(const std::map<std::string, HostTensor>& feeds) const {
  for (const auto& [name, tensor] : feeds) {
    const TensorSpec* spec = input(name);
    if (spec == nullptr) {
      std::string known;
      for (const auto& s : inputs_) known += (known.empty() ? "" : ", ") + s.name;
      throw Error(name_ + ": unknown input '" + name + "' (inputs: " + known + ")");
    }
    if (tensor.dtype != spec->dtype) {
      throw Error(name_ + ": input '" + name + "' is " + dtype_name(tensor.dtype) + ", the model declares " +
                  spec->describe());
    }
    if (tensor.shape.size() != spec->shape.size()) {
      throw Error(name_ + ": input '" + name + "' has rank " + std::to_string(tensor.shape.size()) +
                  ", the model declares " + spec->describe());
    }
    for (std::size_t d = 0; d < tensor.shape.size(); ++d) {
      if (tensor.shape[d] < 0 || (spec->shape[d] >= 0 && tensor.shape[d] != spec->shape[d])) {
        throw Error(name_ + ": input '" + name + "' dim " + std::to_string(d) + " is " +
                    std::to_string(tensor.shape[d]) + ", the model declares " + spec->describe());
      }
    }
    if (tensor.bytes.size() != static_cast<std::size_t>(tensor.numel()) * dtype_size(tensor.dtype)) {
      throw Error(name_ + ": input '" + name + "' holds " + std::to_string(tensor.bytes.size()) +
                  " bytes, its shape needs "
                      + std::to_string(tensor.numel() * static_cast<int64_t>(dtype_size(tensor.dtype))));
    }
  }
  for (const auto& spec : inputs_) {
    if (feeds.count(spec.name) == 0) throw Error(name_ + ": no feed for input " + spec.describe());
  }
}

std::vector<HostTensor> Model::run(const std::map<std::string, HostTensor>& feeds) {
  check_feeds(feeds);
  auto memory = Ort::MemoryInfo::CreateCpu(OrtArenaAllocator, OrtMemTypeDefault);
  std::vector<const char*> in_names, out_names;
  std::vector<Ort::Value> values;
  for (const auto& spec : inputs_) {
    const HostTensor& t = feeds.at(spec.name);
    in_names.push_back(spec.name.c_str());
    // ORT reads the bytes in place; it never writes inputs.
    values.push_back(Ort::Value::CreateTensor(memory, const_cast<unsigned char*>(t.bytes.data()), t.bytes.size(),
                                              t.shape.data(), t.shape.size(), to_onnx(t.dtype)));
  }
  for (const auto& spec : outputs_) out_names.push_back(spec.name.c_str());
  std::vector<Ort::Value> results;
  try {
    results = session_.Run(Ort::RunOptions{nullptr}, in_names.data(), values.data(), values.size(), out_names.data(),
                           out_names.size());
  } catch (const Ort::Exception& e) {
    throw Error("ONNX Runtime failed running " + name_ + ": " + one_line(e.what()));
  }
  std::vector<HostTensor> out;
  for (std::size_t i = 0; i < results.size(); ++i) {
    if (!results[i].IsTensor()) throw Error(name_ + ": output '" + outputs_[i].name + "' is not a tensor");
    auto info = results[i].GetTensorTypeAndShapeInfo();
    HostTensor t;
    t.dtype = from_onnx(info.GetElementType());
    t.shape = info.GetShape();
    t.bytes.resize(info.GetElementCount() * dtype_size(t.dtype));
    if (!t.bytes.empty()) std::memcpy(t.bytes.data(), results[i].GetTensorRawData(), t.bytes.size());
    out.push_back(std::move(t));
  }
  return out;
}

std::map<std::string, HostTensor> encoder_feeds(const Model& model, const Prompts& rows, int64_t pad_id) {
  if (rows.empty()) throw Error(model.name() + ": no rows of token ids to encode");
  std::size_t length = 0;
  for (std::size_t r = 0; r < rows.size(); ++r) {
    if (rows[r].empty()) throw Error(model.name() + ": row " + std::to_string(r) + " has no tokens");
    length = std::max(length, rows[r].size());
  }
  const auto batch = static_cast<int64_t>(rows.size());
  const auto seq = static_cast<int64_t>(length);
  std::vector<int64_t> ids(rows.size() * length, pad_id), mask(rows.size() * length, 0), zeros(rows.size() * length, 0),
      positions(rows.size() * length, 0);
  for (std::size_t r = 0; r < rows.size(); ++r) {
    for (std::size_t i = 0; i < length; ++i) {
      positions[r * length + i] = static_cast<int64_t>(i);
      if (i < rows[r].size()) {
        ids[r * length + i] = rows[r][i];
        mask[r * length + i] = 1;
      }
    }
  }
  std::map<std::string, HostTensor> feeds;
  feeds["input_ids"] = HostTensor::int64s({batch, seq}, ids);
  if (model.input("attention_mask")) feeds["attention_mask"] = HostTensor::int64s({batch, seq}, mask);
  if (model.input("token_type_ids")) feeds["token_type_ids"] = HostTensor::int64s({batch, seq}, zeros);
  if (model.input("position_ids")) feeds["position_ids"] = HostTensor::int64s({batch, seq}, positions);
  return feeds;
}

}  // namespace parekit_host
