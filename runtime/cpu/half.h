// IEEE float16 <-> float32 without hardware support (the portable backend and weight packing).
// Round to nearest even, like the F16C instructions the AVX backends use, so every backend agrees.
#pragma once

#include <cmath>
#include <cstdint>
#include <cstring>

namespace ncnn_onnx::cpu {

using Half = uint16_t;  // float16 bits as onnxruntime stores them

inline float HalfToFloat(Half h) {
  const uint32_t sign = static_cast<uint32_t>(h & 0x8000u) << 16;
  const uint32_t exponent = (h >> 10) & 0x1fu;
  const uint32_t mantissa = h & 0x3ffu;
  float out;
  if (exponent == 0) {
    out = static_cast<float>(mantissa) * 5.9604644775390625e-8f;  // subnormal: mantissa * 2^-24, exact
    return sign ? -out : out;
  }
  const uint32_t bits = exponent == 31 ? (sign | 0x7f800000u | (mantissa << 13))
                                       : (sign | ((exponent + 112u) << 23) | (mantissa << 13));
  std::memcpy(&out, &bits, sizeof(out));
  return out;
}

inline Half FloatToHalf(float f) {
  uint32_t x;
  std::memcpy(&x, &f, sizeof(x));
  const uint32_t sign = (x >> 16) & 0x8000u;
  x &= 0x7fffffffu;
  if (x >= 0x7f800000u) return static_cast<Half>(sign | 0x7c00u | (x > 0x7f800000u ? 0x200u : 0u));  // inf, nan
  if (x >= 0x477ff000u) return static_cast<Half>(sign | 0x7c00u);  // rounds past 65504: inf
  if (x < 0x38800000u) {
    // Below the smallest normal half: scale to units of 2^-24 and round the integer (nearest even).
    float magnitude;
    std::memcpy(&magnitude, &x, sizeof(magnitude));
    return static_cast<Half>(sign | static_cast<uint32_t>(std::nearbyint(magnitude * 16777216.0f)));
  }
  const uint32_t rounded = x + 0xfffu + ((x >> 13) & 1u);
  return static_cast<Half>(sign | ((rounded - 0x38000000u) >> 13));
}

}  // namespace ncnn_onnx::cpu
