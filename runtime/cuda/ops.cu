// NormalizedConv on CUDAExecutionProvider (float32, float16). The attributes, the shape checks and the C
// trampolines are the CPU kernel's (runtime/common/); this file only adds what the GPU needs: onnxruntime's
// compute stream, scratch memory from the execution provider's allocator, and the launch limits.
// Nothing here synchronizes the device.
#include <onnxruntime_c_api.h>

#include <cuda_runtime.h>

#include <string>
#include <vector>

#include "../common/attributes.h"
#include "../common/custom_op.h"
#include "../common/errors.h"
#include "../common/geometry.h"
#include "../common/ort_api.h"
#include "../common/tensor.h"
#include "nc_kernels.h"

namespace ncnn_onnx::cuda {
namespace {

// Device memory for the length of one Compute. KernelContext_GetScratchBuffer (C API 18) takes it from
// onnxruntime's allocator for X's device on the kernel's compute stream, so the stream-aware arena hands
// it to another stream only once this one has passed its kernels: freeing it right after the launches
// are queued needs no synchronization.
class ScratchBuffer {
 public:
  ScratchBuffer(const OrtApi& api, OrtKernelContext* context, const OrtMemoryInfo* memory, size_t bytes)
      : api_(api) {
    if (bytes == 0) return;
    ThrowOnError(api, api.KernelContext_GetAllocator(context, memory, &allocator_));
    ThrowOnError(api, api.KernelContext_GetScratchBuffer(context, memory, bytes, &data_));
    if (data_ == nullptr) {
      throw InvalidArgument("could not allocate " + std::to_string(bytes) + " bytes of GPU scratch memory");
    }
  }
  ~ScratchBuffer() {
    if (data_ != nullptr) allocator_->Free(allocator_, data_);
    if (allocator_ != nullptr) api_.ReleaseAllocator(allocator_);
  }
  ScratchBuffer(const ScratchBuffer&) = delete;
  ScratchBuffer& operator=(const ScratchBuffer&) = delete;
  void* data() const { return data_; }

 private:
  const OrtApi& api_;
  OrtAllocator* allocator_ = nullptr;
  void* data_ = nullptr;
};

// X's memory info (the device the kernel runs on) and that device's multiprocessor count, which sizes the
// split of small products. The attribute query does not synchronize.
struct Device {
  const OrtMemoryInfo* memory = nullptr;
  int multiprocessors = 0;
};

Device DeviceOfInput(const OrtApi& api, OrtKernelContext* context) {
  Device device;
  const OrtValue* x = nullptr;
  ThrowOnError(api, api.KernelContext_GetInput(context, 0, &x));
  ThrowOnError(api, api.GetTensorMemoryInfo(x, &device.memory));
  int id = 0;
  ThrowOnError(api, api.MemoryInfoGetId(device.memory, &id));
  const cudaError_t status = cudaDeviceGetAttribute(&device.multiprocessors, cudaDevAttrMultiProcessorCount, id);
  if (status != cudaSuccess) {
    throw std::runtime_error(std::string("could not query CUDA device ") + std::to_string(id) + ": " +
                             cudaGetErrorString(status));
  }
  return device;
}

class CudaKernel {
 public:
  static constexpr const char* kProvider = "CUDAExecutionProvider";

  // Only NormalizedConv is registered for CUDA (the session helper fuses activations for the CPU provider
  // alone), so `activation` is always false here.
  CudaKernel(const OrtApi& api, const OrtKernelInfo* info, ONNXTensorElementDataType type, bool activation)
      : api_(api), node_name_(NodeName(api, info)), type_(type), attributes_(ReadConvAttributes(api, info)) {
    if (activation) throw InvalidArgument("NormalizedConvActivation has no CUDA kernel");
  }

  const std::string& node_name() const { return node_name_; }
  const char* op_name() const { return kOpName; }

  void Compute(OrtKernelContext* context) const {
    const ConvCall call = ReadCall(api_, context, attributes_, type_);
    void* y = GetOutput(api_, context, 0, call.geometry.OutputShape());
    if (y == nullptr) return;  // an empty output (N = 0 or M = 0) has nothing to compute
    if (const char* error = LaunchLimitError(call.geometry)) throw InvalidArgument(error);

    void* stream = nullptr;
    ThrowOnError(api_, api_.KernelContext_GetGPUComputeStream(context, &stream));
    const Device gpu = DeviceOfInput(api_, context);
    const bool half = type_ == ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT16;
    const size_t scratch_bytes = ScratchBytes(call.geometry, gpu.multiprocessors, half);
    CheckBufferBytes(attributes_.limits, "the CUDA scratch buffer", static_cast<int64_t>(scratch_bytes), 1);
    ScratchBuffer scratch(api_, context, gpu.memory, scratch_bytes);
    const void* bias = call.has_bias ? call.b.data : nullptr;
    cudaError_t status;
    if (type_ == ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT) {
      status = LaunchNormalizedConv(call.geometry, gpu.multiprocessors, static_cast<const float*>(call.x.data),
                                    static_cast<const float*>(call.w.data), static_cast<const float*>(bias),
                                    static_cast<float*>(y), scratch.data(), static_cast<cudaStream_t>(stream));
    } else {
      status = LaunchNormalizedConv(call.geometry, gpu.multiprocessors, call.x.data, call.w.data, bias, y,
                                    scratch.data(), static_cast<cudaStream_t>(stream));
    }
    if (status != cudaSuccess) {
      throw std::runtime_error(std::string("CUDA kernel launch failed: ") + cudaGetErrorString(status));
    }
  }

 private:
  const OrtApi& api_;
  std::string node_name_;
  ONNXTensorElementDataType type_;
  ConvAttributes attributes_;
};

}  // namespace

const std::vector<OrtCustomOp*>& CustomOps() {
  // Never destroyed, like the CPU ops: sessions may hold them past this library's static destructors.
  static const auto* ops = new std::vector<OrtCustomOp*>{
      new KernelOp<CudaKernel>(ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT),
      new KernelOp<CudaKernel>(ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT16),
  };
  return *ops;
}

}  // namespace ncnn_onnx::cuda
