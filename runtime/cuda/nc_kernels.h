// CUDA kernels of ncnn_onnx::NormalizedConv: a plain interface (the shared geometry, device pointers,
// stream) so that the onnxruntime glue stays in the kernel class and these files know nothing of
// onnxruntime. Every spatial rank is handled as 3-d (ConvGeometry pads unused dims with size 1).
#pragma once

#include <cstddef>
#include <cstdint>

#include <cuda_runtime.h>

#include "../common/geometry.h"

namespace ncnn_onnx {
namespace cuda {

// Why the launch grids cannot cover this geometry, or null when they can. The kernel's validation calls
// it so that an oversized model fails with a message rather than a launch error.
const char* LaunchLimitError(const ConvGeometry& geo);

// Bytes of scratch memory the launch needs on a device with `multiprocessors` SMs, for float16 tensors
// (`half`) or float32 (statistics per input location and per output position of each sample and group,
// and partial sums where the product is split along the patch to fill the device).
size_t ScratchBytes(const ConvGeometry& geo, int multiprocessors, bool half);

// Y = W . standardize(patch) + B on `stream`; `scratch` holds ScratchBytes(geo, multiprocessors, half) bytes. The
// statistics are exact (float64 two-pass); float32 multiplies in float32, float16 on tensor cores with
// float32 accumulation. Deterministic for a given device. Returns the launch status; never synchronizes.
cudaError_t LaunchNormalizedConv(const ConvGeometry& geo, int multiprocessors, const float* x, const float* w,
                                 const float* b, float* y, void* scratch, cudaStream_t stream);
cudaError_t LaunchNormalizedConv(const ConvGeometry& geo, int multiprocessors, const void* x_half,
                                 const void* w_half, const void* b_half, void* y_half, void* scratch,
                                 cudaStream_t stream);

}  // namespace cuda
}  // namespace ncnn_onnx
