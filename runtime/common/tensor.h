// Reading inputs and creating outputs through the C API, with the checks a kernel needs before it trusts
// a tensor: element type, shape, data pointer.
#pragma once

#include <onnxruntime_c_api.h>

#include <cstdint>
#include <vector>

namespace ncnn_onnx {

struct TensorInfo {
  ONNXTensorElementDataType type = ONNX_TENSOR_ELEMENT_DATA_TYPE_UNDEFINED;
  std::vector<int64_t> shape;
  const void* data = nullptr;
};

// Input `index` of the kernel call, or false where an optional input is absent.
bool GetInput(const OrtApi& api, OrtKernelContext* context, size_t index, TensorInfo* out);

// The type, shape and data of a tensor value (an input, or a constant initializer at kernel creation).
TensorInfo DescribeTensor(const OrtApi& api, const OrtValue* value);

// Allocates output `index` with `shape`; returns its data (null when it has no elements).
void* GetOutput(const OrtApi& api, OrtKernelContext* context, size_t index, const std::vector<int64_t>& shape);

const char* ElementTypeName(ONNXTensorElementDataType type);

// Throws InvalidArgument naming the input when its element type is not `expected` (the type of X).
void CheckType(const char* name, const TensorInfo& tensor, ONNXTensorElementDataType expected);

}  // namespace ncnn_onnx
