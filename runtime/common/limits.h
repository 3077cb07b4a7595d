// What one NormalizedConv node may ask of the machine. A model file is untrusted: a few bytes of pads can
// ask for gigabytes of output or minutes of work, and onnxruntime gives a custom kernel no way to see
// RunOptions.terminate (C API 21), so these limits are what bounds a run. Users raise them through the
// environment (docs/op.md, "Limits"); they are read when a session creates the kernel.
#pragma once

#include <cstdint>

namespace ncnn_onnx {

struct ResourceLimits {
  // NCNN_ONNX_MAX_PAD: pads up to this are accepted whatever the kernel and input (-1: not set). Beyond
  // it a pad may reach as far as the dilated kernel or the input extends, no further.
  int64_t max_pad = -1;
  // NCNN_ONNX_MAX_BUFFER_BYTES: the largest output or scratch buffer one call may ask for.
  int64_t max_buffer_bytes = int64_t{1} << 32;
};

// The limits from the environment; a malformed value throws InvalidArgument naming the variable.
ResourceLimits ReadResourceLimits();

// Throws InvalidArgument when `elements` of `element_bytes` each exceed the buffer limit; `what` names
// the buffer ("the output Y").
void CheckBufferBytes(const ResourceLimits& limits, const char* what, int64_t elements, int64_t element_bytes);

// Throws InvalidArgument when a pad exceeds what the limits accept along a spatial dim whose input has
// `input` elements and whose dilated kernel spans `span` elements.
void CheckPad(const ResourceLimits& limits, int dim, int64_t pad, int64_t input, int64_t span);

}  // namespace ncnn_onnx
