// Channel standardization for the PyTorch layer's pointwise (1x1) NC (ncnn_onnx/_pointwise.py calls these
// through ctypes, ncnn_onnx/_native_standardize.py): float32 CPU tensors.
//
// A 1x1 patch is the `group_channels` values of one group at one location, so pointwise NC is
//     xhat = (x - center * mu) * (rstd if scale else 1)     per group and location
// followed by an ordinary convolution, which torch runs. In plain PyTorch ops the standardization takes
// about nine passes over the input (and as many fresh input-sized temporaries); here one tile of
// positions is read from memory once and its passes run in cache.
//
// Arithmetic, per location (the same steps as the PyTorch path in _pointwise.py): shift every value by
// the group's first channel (an exactly flat patch then has deviations, mean and variance of exactly 0),
// the mean of the shifted values, then the two-pass variance of the deviations from that mean.
#pragma once

#include <cstdint>

extern "C" {

// Tensors are dense (batch, groups * group_channels, positions) float32.
struct NcnnOnnxStandardizeCall {
  int64_t batch;
  int64_t groups;
  int64_t group_channels;
  int64_t positions;  // elements of one channel plane
  float epsilon;
  int32_t center;
  int32_t scale;
  int32_t threads;
  const float* x;
  float* xhat;             // forward output
  const float* grad_xhat;  // backward: the gradient of the standardized input
  float* grad_x;           // backward output; may be grad_xhat itself (updated in place)
};

// 0 on success; otherwise a code whose meaning ncnn_onnx_layer_error (parallel.cc) names.
int ncnn_onnx_standardize_forward(const NcnnOnnxStandardizeCall* call);
// grad_x from grad_xhat; the statistics are recomputed from x.
//     grad_x = r (g - center * mean(g) - scale * (x - mu) * r^2 * mean(g * u)),  u = x - center * mu
int ncnn_onnx_standardize_backward(const NcnnOnnxStandardizeCall* call);

}  // extern "C"
