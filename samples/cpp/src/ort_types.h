// Element-type mapping between the host's DType and ONNX Runtime's (internal to the ORT backend).
#pragma once

#include "parekit_host/ort_host.h"

namespace parekit_host {
DType from_onnx(ONNXTensorElementDataType type);
ONNXTensorElementDataType to_onnx(DType dtype);
}  // namespace parekit_host
