// Per-location channel statistics for the PyTorch layer, on float32 CPU tensors, called through ctypes
// (ncnn_onnx/_native_channels.py). At every input location of a group, the `group_channels` values there:
//
// - Standardize (the pointwise path, ncnn_onnx/_pointwise.py): a 1x1 patch is exactly those values, so
//   pointwise NC is xhat = (x - center * mu) * (rstd if scale else 1) followed by an ordinary convolution,
//   which torch runs; and the backward of xhat.
// - Centre (the general path, ncnn_onnx/_algorithm.py): the channel mean m, x - m, and the location
//   moments s = sum_c (x - m) and q = sum_c (x - m)^2 that the patch statistics are built from.
//
// Why native: in plain PyTorch ops each of these is several passes over the input, each with a fresh
// input-sized temporary (the float64 mean alone converts the whole input). Here one tile of positions
// is read from memory once and its passes run in cache.
//
// Arithmetic as the PyTorch path's. Standardize shifts every value by the group's first channel (an
// exactly flat patch then has deviations, mean and variance of exactly 0), takes the mean of the shifted
// values, then the two-pass variance of the deviations from it. Centre sums the channels in double, so
// the mean of equal values is that value and a flat location centres to exactly 0.
#pragma once

#include <cstdint>

extern "C" {

// x and the input-shaped tensors are dense (batch, groups * group_channels, positions) float32; the
// per-location maps are dense (batch, groups, positions).
struct NcnnOnnxChannelsCall {
  int64_t batch;
  int64_t groups;
  int64_t group_channels;
  int64_t positions;  // elements of one channel plane
  float epsilon;
  int32_t center;
  int32_t scale;
  int32_t threads;
  const float* x;
  float* out;              // standardize: xhat; centre: x - m (may be null: the maps only)
  const float* grad_out;   // standardize backward: the gradient of xhat
  float* grad_x;           // standardize backward output; may be grad_out itself (updated in place)
  float* mean;             // centre: m
  float* residual;         // centre: s, may be null
  float* squares;          // centre: q, may be null
};

// 0 on success; otherwise a code whose meaning ncnn_onnx_layer_error (parallel.cc) names.
int ncnn_onnx_standardize_forward(const NcnnOnnxChannelsCall* call);
// grad_x from grad_out; the statistics are recomputed from x.
//     grad_x = r (g - center * mean(g) - scale * (x - mu) * r^2 * mean(g * u)),  u = x - center * mu
int ncnn_onnx_standardize_backward(const NcnnOnnxChannelsCall* call);
int ncnn_onnx_centre(const NcnnOnnxChannelsCall* call);

}  // extern "C"
