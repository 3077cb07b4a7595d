#include "tensor.h"

#include <string>

#include "errors.h"
#include "ort_api.h"

namespace ncnn_onnx {

const char* ElementTypeName(ONNXTensorElementDataType type) {
  switch (type) {
    case ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT: return "float32";
    case ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT16: return "float16";
    case ONNX_TENSOR_ELEMENT_DATA_TYPE_DOUBLE: return "float64";
    case ONNX_TENSOR_ELEMENT_DATA_TYPE_BFLOAT16: return "bfloat16";
    case ONNX_TENSOR_ELEMENT_DATA_TYPE_INT8: return "int8";
    case ONNX_TENSOR_ELEMENT_DATA_TYPE_UINT8: return "uint8";
    case ONNX_TENSOR_ELEMENT_DATA_TYPE_INT16: return "int16";
    case ONNX_TENSOR_ELEMENT_DATA_TYPE_INT32: return "int32";
    case ONNX_TENSOR_ELEMENT_DATA_TYPE_INT64: return "int64";
    case ONNX_TENSOR_ELEMENT_DATA_TYPE_BOOL: return "bool";
    default: return "an unsupported type";
  }
}

int64_t ElementBytes(ONNXTensorElementDataType type) {
  switch (type) {
    case ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT16:
    case ONNX_TENSOR_ELEMENT_DATA_TYPE_BFLOAT16: return 2;
    case ONNX_TENSOR_ELEMENT_DATA_TYPE_DOUBLE: return 8;
    default: return 4;
  }
}

void CheckType(const char* name, const TensorInfo& tensor, ONNXTensorElementDataType expected) {
  if (tensor.type != expected) {
    throw InvalidArgument(std::string(name) + " has element type " + ElementTypeName(tensor.type) + ", expected " +
                          ElementTypeName(expected) + " like X");
  }
}

ConvCall ReadCall(const OrtApi& api, OrtKernelContext* context, const ConvAttributes& attributes,
                  ONNXTensorElementDataType type) {
  ConvCall call;
  if (!GetInput(api, context, 0, &call.x)) throw InvalidArgument("input X is missing");
  if (!GetInput(api, context, 1, &call.w)) throw InvalidArgument("input W is missing");
  call.has_bias = GetInput(api, context, 2, &call.b);
  CheckType("X", call.x, type);
  CheckType("W", call.w, type);
  if (call.has_bias) CheckType("B", call.b, type);
  call.geometry = ResolveGeometry(attributes, call.x.shape, call.w.shape, call.has_bias ? &call.b.shape : nullptr);
  const ConvGeometry& g = call.geometry;
  CheckBufferBytes(attributes.limits, "the output Y", g.batch * g.out_channels * g.output_plane, ElementBytes(type));
  return call;
}

TensorInfo DescribeTensor(const OrtApi& api, const OrtValue* value) {
  TensorInfo info;
  OrtTensorTypeAndShapeInfo* type_shape = nullptr;
  ThrowOnError(api, api.GetTensorTypeAndShape(value, &type_shape));
  size_t rank = 0;
  OrtStatus* status = api.GetTensorElementType(type_shape, &info.type);
  if (status == nullptr) status = api.GetDimensionsCount(type_shape, &rank);
  if (status == nullptr) {
    info.shape.assign(rank, 0);
    status = api.GetDimensions(type_shape, info.shape.data(), rank);
  }
  api.ReleaseTensorTypeAndShapeInfo(type_shape);
  ThrowOnError(api, status);
  void* data = nullptr;
  ThrowOnError(api, api.GetTensorMutableData(const_cast<OrtValue*>(value), &data));
  info.data = data;
  return info;
}

bool GetInput(const OrtApi& api, OrtKernelContext* context, size_t index, TensorInfo* out) {
  size_t count = 0;
  ThrowOnError(api, api.KernelContext_GetInputCount(context, &count));
  if (index >= count) return false;
  const OrtValue* value = nullptr;
  ThrowOnError(api, api.KernelContext_GetInput(context, index, &value));
  if (value == nullptr) return false;
  *out = DescribeTensor(api, value);
  return true;
}

void* GetOutput(const OrtApi& api, OrtKernelContext* context, size_t index, const std::vector<int64_t>& shape) {
  OrtValue* value = nullptr;
  ThrowOnError(api, api.KernelContext_GetOutput(context, index, shape.data(), shape.size(), &value));
  void* data = nullptr;
  ThrowOnError(api, api.GetTensorMutableData(value, &data));
  return data;
}

}  // namespace ncnn_onnx
