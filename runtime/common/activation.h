// The activation a NormalizedConvActivation node applies to its outputs (the op the session helper fuses
// from NormalizedConv and the activation node after it: ncnn_onnx/runtime/fusion.py). Plain structs, free of
// onnxruntime's headers; ReadActivation (attributes.cc) fills them from a node.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

struct OrtApi;
struct OrtKernelInfo;

namespace ncnn_onnx {

enum class ActivationKind {
  kNone,
  kRelu,         // max(y, 0)
  kLeakyRelu,    // y >= 0 ? y : alpha y
  kClip,         // min(max(y, alpha), beta)
  kHardSigmoid,  // max(0, min(1, alpha y + beta))
  kHardSwish,    // y * HardSigmoid(y) with alpha = 1/6, beta = 1/2
  kSigmoid,      // 1 / (1 + exp(-y))
  kSilu,         // y * Sigmoid(y)
};

struct Activation {
  ActivationKind kind = ActivationKind::kNone;
  float alpha = 0.0f;
  float beta = 0.0f;
};

// The attributes 'activation' (a string naming one of the kinds above, as ONNX spells the op: "Relu",
// "LeakyRelu", "Clip", "HardSigmoid", "HardSwish", "Sigmoid", "SiLU") and 'activation_params' (floats:
// LeakyRelu [alpha], Clip [min, max], HardSigmoid [alpha, beta], none for the others). Throws
// InvalidArgument naming what is wrong: an unknown name, the wrong number of parameters, a parameter that
// is not finite, or Clip's min above its max.
Activation ReadActivation(const OrtApi& api, const OrtKernelInfo* info);

// The checks of ReadActivation on a name and its parameters (testable without onnxruntime).
Activation MakeActivation(const std::string& name, const std::vector<float>& params);

}  // namespace ncnn_onnx
