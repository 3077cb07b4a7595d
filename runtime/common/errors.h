// Error types of the custom-op library. Everything that goes wrong inside a kernel is thrown as one of
// these and turned into an OrtStatus at the C boundary (custom_op.h), so onnxruntime reports it instead
// of the process dying.
#pragma once

#include <stdexcept>
#include <string>

namespace ncnn_onnx {

// A model or input that the op cannot run: a bad shape, attribute or type. Maps to ORT_INVALID_ARGUMENT.
class InvalidArgument : public std::runtime_error {
 public:
  explicit InvalidArgument(const std::string& what) : std::runtime_error(what) {}
};

// A failure reported by onnxruntime itself through an OrtStatus; keeps onnxruntime's error code.
class OrtError : public std::runtime_error {
 public:
  OrtError(int code, const std::string& what) : std::runtime_error(what), code_(code) {}
  int code() const { return code_; }

 private:
  int code_;
};

}  // namespace ncnn_onnx
