// CUDA kernels of ncnn_onnx::NormalizedConv: a plain interface (geometry, device pointers, stream) so
// that the onnxruntime glue stays in the kernel class and these files know nothing of onnxruntime.
#pragma once

#include <cstddef>
#include <cstdint>

#include <cuda_runtime.h>

namespace ncnn_onnx {
namespace cuda {

// Every spatial rank is handled as 3-d: a 1-d or 2-d convolution has leading dims of size 1.
struct DeviceGeometry {
  int64_t batch = 0;
  int64_t in_channels = 0;
  int64_t out_channels = 0;
  int64_t groups = 1;
  int64_t in_size[3] = {1, 1, 1};
  int64_t out_size[3] = {1, 1, 1};
  int64_t kernel[3] = {1, 1, 1};
  int64_t stride[3] = {1, 1, 1};
  int64_t dilation[3] = {1, 1, 1};
  int64_t pad_begin[3] = {0, 0, 0};
  float epsilon = 1e-5f;
  bool center = true;
  bool scale = true;
};

// Why the launch grids cannot cover this geometry, or null when they can. The kernel's validation calls
// it so that an oversized model fails with a message rather than a launch error.
const char* LaunchLimitError(const DeviceGeometry& geo);

// Bytes of scratch memory the launch needs on a device with `multiprocessors` SMs, for float16 tensors
// (`half`) or float32 (statistics per input location and per output position of each sample and group,
// and partial sums where the product is split along the patch to fill the device).
size_t ScratchBytes(const DeviceGeometry& geo, int multiprocessors, bool half);

// Y = W . standardize(patch) + B on `stream`; `scratch` holds ScratchBytes(geo, multiprocessors, half) bytes. The
// statistics are exact (float64 two-pass); float32 multiplies in float32, float16 on tensor cores with
// float32 accumulation. Deterministic for a given device. Returns the launch status; never synchronizes.
cudaError_t LaunchNormalizedConv(const DeviceGeometry& geo, int multiprocessors, const float* x, const float* w,
                                 const float* b, float* y, void* scratch, cudaStream_t stream);
cudaError_t LaunchNormalizedConv(const DeviceGeometry& geo, int multiprocessors, const void* x_half,
                                 const void* w_half, const void* b_half, void* y_half, void* scratch,
                                 cudaStream_t stream);

}  // namespace cuda
}  // namespace ncnn_onnx
