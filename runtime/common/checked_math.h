// Overflow-checked int64 arithmetic: every size derived from a model (an untrusted file) goes through
// these, so a hostile shape or attribute gives an error instead of a wrapped size and a wild write.
#pragma once

#include <cstdint>
#include <string>

#include "errors.h"

namespace ncnn_onnx {

inline int64_t CheckedMul(int64_t a, int64_t b, const char* what) {
  int64_t out = 0;
  if (__builtin_mul_overflow(a, b, &out)) {
    throw InvalidArgument(std::string(what) + " overflows a 64-bit integer");
  }
  return out;
}

inline int64_t CheckedAdd(int64_t a, int64_t b, const char* what) {
  int64_t out = 0;
  if (__builtin_add_overflow(a, b, &out)) {
    throw InvalidArgument(std::string(what) + " overflows a 64-bit integer");
  }
  return out;
}

}  // namespace ncnn_onnx
