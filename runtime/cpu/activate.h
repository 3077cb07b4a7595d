// The activation of a NormalizedConvActivation node (common/activation.h), applied to each output as the
// epilogues store it: on a backend's vectors (VectorIsa::Vector) and on scalars (float, double).
//
// Included inside each backend's target region after it defines `VectorIsa`, as direct.h is: everything
// here has internal linkage. A NaN output (a patch holding NaN or inf, docs/op.md) stays NaN through
// every activation: the comparisons below are false for NaN, so it passes them unchanged.
#pragma once

#include <cmath>
#include <cstdint>
#include <cstring>

#include "../common/activation.h"

namespace ncnn_onnx::cpu {
namespace {

// exp(x) to about an ulp: x = n ln2 + r with |r| <= ln2 / 2, a degree-6 polynomial for exp(r) and 2^n
// built in the exponent bits. x is clamped so that 2^n stays a normal float (exp saturates at about
// 1e-38 and 2e38, which is what a sigmoid needs of it); NaN is returned as it came.
inline VectorIsa::Vector Exp(VectorIsa::Vector x) {
  using Vector = VectorIsa::Vector;
  using Ints = VectorIsa::Compared;
  const Vector input = x;
  x = x < -87.0f ? Vector{} - 87.0f : x;
  x = x > 88.0f ? Vector{} + 88.0f : x;
  x = x == x ? x : Vector{};  // NaN is converted to an integer below: undefined, so take 0's place
  const Vector t = x * 1.44269504088896341f;
  const Ints n = __builtin_convertvector(t + (t < 0.0f ? Vector{} - 0.5f : Vector{} + 0.5f), Ints);
  const Vector nf = __builtin_convertvector(n, Vector);
  const Vector r = (x - nf * 0.693359375f) - nf * -2.12194440e-4f;
  Vector p = Vector{} + 1.0f / 720.0f;
  p = p * r + 1.0f / 120.0f;
  p = p * r + 1.0f / 24.0f;
  p = p * r + 1.0f / 6.0f;
  p = p * r + 0.5f;
  p = p * r + 1.0f;
  p = p * r + 1.0f;
  const Ints bits = (n + 127) << 23;
  Vector scale;
  std::memcpy(&scale, &bits, sizeof scale);
  const Vector out = p * scale;
  return input == input ? out : input;
}

inline float Exp(float x) { return std::exp(x); }
inline double Exp(double x) { return std::exp(x); }

// V: VectorIsa::Vector, float or double.
template <typename V>
inline V Activate(const Activation& a, V y) {
  const V zero = V{} + 0.0f, one = zero + 1.0f;
  switch (a.kind) {
    case ActivationKind::kNone:
      return y;
    case ActivationKind::kRelu:
      return y < zero ? zero : y;
    case ActivationKind::kLeakyRelu:
      return y < zero ? y * a.alpha : y;
    case ActivationKind::kClip: {
      const V low = zero + a.alpha, high = zero + a.beta;
      const V raised = y < low ? low : y;
      return raised > high ? high : raised;
    }
    case ActivationKind::kHardSigmoid:
    case ActivationKind::kHardSwish: {
      const V t = y * a.alpha + a.beta;
      const V clipped = t < zero ? zero : (t > one ? one : t);
      return a.kind == ActivationKind::kHardSwish ? y * clipped : clipped;
    }
    case ActivationKind::kSigmoid:
      return one / (one + Exp(zero - y));
    case ActivationKind::kSilu:
      return y / (one + Exp(zero - y));
  }
  return y;
}

}  // namespace
}  // namespace ncnn_onnx::cpu
