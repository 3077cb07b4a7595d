// Depthwise NormalizedConv backward for the PyTorch layer (ncnn_onnx/_native_depthwise.py calls it through
// ctypes) on float32 CPU tensors, for layers with one input channel per group. Their forward, training
// included, is the deployed CPU kernel's (layer/conv.h, runtime/cpu/direct.h).
//
// Why native: a depthwise patch is K values of one channel, so the layer's decomposition in plain
// PyTorch ops (ncnn_onnx/_algorithm.py) has nothing to factor out and materializes K-times-the-input
// patch maps, forward and backward (30-40x the time and up to 65x the memory of Conv+GroupNorm). Here
// each patch is read straight from a zero-padded copy of its channel, vectorized along output rows, and
// the backward recomputes the statistics instead of saving them, so training keeps only x and W (and the
// forward needs no extra output).
//
// The arithmetic is the direct kernel's (runtime/cpu/direct.h), per patch: the mean (an exactly flat
// patch gets its value itself, so it centres to exactly 0), then the corrected two-pass variance of
// d = v - mean and the product of the centred values. No one-pass variance, no product of raw values
// minus mean * sum(W) (DESIGN.md §3).
#pragma once

#include <cstdint>

extern "C" {

// One call's sizes and tensors. Spatial arrays hold `rank` entries (1..3) from the first spatial dim on;
// pads are the leading ones, the trailing ones follow from the output size. Tensors are dense NC* float32; W is (C * multiplier, 1, *kernel).
struct NcnnOnnxDepthwiseCall {
  int64_t batch;
  int64_t channels;
  int64_t multiplier;  // output channels per input channel
  int64_t rank;
  int64_t input[3];
  int64_t output[3];
  int64_t kernel[3];
  int64_t stride[3];
  int64_t dilation[3];
  int64_t pad_begin[3];
  float epsilon;
  int32_t center;
  int32_t scale;
  int32_t threads;
  const float* x;
  const float* weight;
  const float* grad_y;
  float* grad_x;       // may be null
  float* grad_weight;  // may be null
};

// 0 on success; otherwise a code whose meaning ncnn_onnx_layer_error (parallel.cc) names.
int ncnn_onnx_depthwise_backward(const NcnnOnnxDepthwiseCall* call);

}  // extern "C"
