// The op's attributes: ONNX Conv's, with Conv's defaults, plus epsilon, center and scale.
// Read once when a kernel is created; every execution provider's kernel shares this reading and checking.
#pragma once

#include <cstdint>
#include <vector>

#include "limits.h"

// Only the reader below touches onnxruntime; declaring its two types keeps this header (and geometry.h)
// free of onnxruntime's headers for code such as CUDA kernels that needs the plain structs.
struct OrtApi;
struct OrtKernelInfo;

namespace ncnn_onnx {

enum class AutoPad { kNotSet, kSameUpper, kSameLower, kValid };

struct ConvAttributes {
  AutoPad auto_pad = AutoPad::kNotSet;
  // Empty means "not given": the default depends on the rank, which only the inputs tell.
  std::vector<int64_t> dilations;
  std::vector<int64_t> kernel_shape;
  std::vector<int64_t> pads;  // begin..., end...
  std::vector<int64_t> strides;
  int64_t group = 1;
  float epsilon = 1e-5f;
  bool center = true;
  bool scale = true;
  // Not an attribute: the limits the node runs under, read from the environment with the attributes.
  ResourceLimits limits;
};

// Reads and checks every attribute, and the resource limits; an attribute of the wrong type or value
// throws InvalidArgument naming it (a wrongly typed attribute is never mistaken for a missing one).
ConvAttributes ReadConvAttributes(const OrtApi& api, const OrtKernelInfo* info);

// The rank-independent checks of ReadConvAttributes, separately callable (and testable without onnxruntime).
void ValidateConvAttributes(const ConvAttributes& attributes);

const char* AutoPadName(AutoPad auto_pad);

}  // namespace ncnn_onnx
