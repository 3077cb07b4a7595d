// Reading inputs and creating outputs through the C API, with the checks a kernel needs before it trusts
// a tensor: element type, shape, data pointer.
#pragma once

#include <onnxruntime_c_api.h>

#include <cstdint>
#include <vector>

#include "attributes.h"
#include "geometry.h"

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

// Bytes per element of the kernels' element types (float16, float32, float64).
int64_t ElementBytes(ONNXTensorElementDataType type);

// Throws InvalidArgument naming the input when its element type is not `expected` (the type of X).
void CheckType(const char* name, const TensorInfo& tensor, ONNXTensorElementDataType expected);

// The inputs of one NormalizedConv call, checked against the kernel's element type, and the geometry they
// resolve to; every execution provider's kernel starts here.
struct ConvCall {
  TensorInfo x, w, b;
  bool has_bias = false;
  ConvGeometry geometry;
};

ConvCall ReadCall(const OrtApi& api, OrtKernelContext* context, const ConvAttributes& attributes,
                  ONNXTensorElementDataType type);

}  // namespace ncnn_onnx
