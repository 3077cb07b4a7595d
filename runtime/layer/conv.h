// NormalizedConv inference for the PyTorch layer (ncnn_onnx/_native_conv.py calls it through ctypes):
// the onnxruntime CPU kernel's own forward (runtime/cpu/forward.h), on float32 CPU tensors, run on the
// layer's workers (parallel.h) instead of onnxruntime's pool. Eager inference then costs what a deployed
// node costs, where the layer's PyTorch decomposition took about 2.4x a convolution, and gives the same
// bits as the deployed model on the same machine and backend.
#pragma once

#include <cstdint>

extern "C" {

// Shapes as torch has them (x: N, C, spatial...; w: M, C/group, kernel...), `rank` spatial dims (1..3);
// pads as ONNX writes them (begin..., end...). Tensors are dense float32; b may be null.
struct NcnnOnnxConvCall {
  int64_t rank;
  int64_t x_shape[5];
  int64_t w_shape[5];
  int64_t strides[3];
  int64_t dilations[3];
  int64_t pads[6];
  int64_t group;
  float epsilon;
  int32_t center;
  int32_t scale;
  int32_t threads;
  const float* x;
  const float* w;
  const float* b;
  float* y;            // (N, M, output spatial...), sized by the caller
  const void* packed;  // W as ncnn_onnx_conv_pack packed it, or null: packed for this call
};

// 0 on success; otherwise a code whose meaning ncnn_onnx_layer_error (parallel.cc) names.
int ncnn_onnx_conv_forward(const NcnnOnnxConvCall* call);

// W (call->w, of shape call->w_shape, with call->group) packed for the kernel's micro-kernels, into
// *packed; free it with ncnn_onnx_conv_release. Packing a large W costs more than running a small map
// (512 channels at 7x7: 2.8 ms of 4.5), so the layer packs a weight once and reuses it while the weight
// is unchanged, as an onnxruntime session does with its initializers.
int ncnn_onnx_conv_pack(const NcnnOnnxConvCall* call, void** packed);
void ncnn_onnx_conv_release(void* packed);

}  // extern "C"
