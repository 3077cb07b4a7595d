// The resolved geometry of one NormalizedConv call: every size a kernel needs, checked once.
// Pure C++ (no onnxruntime types), shared by the CPU and CUDA kernels.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "attributes.h"

namespace ncnn_onnx {

constexpr int kMaxSpatialDims = 3;

struct ConvGeometry {
  int ndim = 0;  // spatial dims, 1..3
  int64_t batch = 0;            // N
  int64_t in_channels = 0;      // C
  int64_t out_channels = 0;     // M
  int64_t group = 1;
  int64_t group_in_channels = 0;   // C / group
  int64_t group_out_channels = 0;  // M / group
  // Per spatial dim; entries past ndim are 1 (sizes) or 0 (pads) so 3-d loops cover every rank.
  int64_t input[kMaxSpatialDims] = {1, 1, 1};
  int64_t kernel[kMaxSpatialDims] = {1, 1, 1};
  int64_t output[kMaxSpatialDims] = {1, 1, 1};
  int64_t stride[kMaxSpatialDims] = {1, 1, 1};
  int64_t dilation[kMaxSpatialDims] = {1, 1, 1};
  int64_t pad_begin[kMaxSpatialDims] = {0, 0, 0};
  int64_t pad_end[kMaxSpatialDims] = {0, 0, 0};
  int64_t input_plane = 1;   // prod(input)
  int64_t kernel_size = 1;   // prod(kernel)
  int64_t output_plane = 1;  // prod(output)
  int64_t fan_in = 0;        // I = C/group * prod(kernel), the patch length
  bool has_bias = false;
  float epsilon = 1e-5f;
  bool center = true;
  bool scale = true;

  std::vector<int64_t> OutputShape() const;
};

// Checks the input shapes against each other and the attributes and resolves pads and output sizes as ONNX
// Conv does. Throws InvalidArgument saying what is wrong. `bias` is null when B is absent.
ConvGeometry ResolveGeometry(const ConvAttributes& attributes, const std::vector<int64_t>& x,
                             const std::vector<int64_t>& w, const std::vector<int64_t>* bias);

// The checks that need only W (and B): run when W is a constant, so a bad model fails at session creation.
void CheckWeightShapes(const ConvAttributes& attributes, const std::vector<int64_t>& w,
                       const std::vector<int64_t>* bias);

std::string ShapeString(const std::vector<int64_t>& shape);

}  // namespace ncnn_onnx
