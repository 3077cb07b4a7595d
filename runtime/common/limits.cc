#include "limits.h"

#include <algorithm>
#include <cerrno>
#include <cstdlib>
#include <string>

#include "errors.h"

namespace ncnn_onnx {
namespace {

constexpr const char* kMaxPad = "NCNN_ONNX_MAX_PAD";
constexpr const char* kMaxBufferBytes = "NCNN_ONNX_MAX_BUFFER_BYTES";

// The variable as a whole number >= minimum, or `fallback` where it is unset or empty.
int64_t ReadWholeNumber(const char* name, int64_t minimum, int64_t fallback) {
  const char* text = std::getenv(name);
  if (text == nullptr || *text == '\0') return fallback;
  errno = 0;
  char* end = nullptr;
  const long long value = std::strtoll(text, &end, 10);
  if (errno != 0 || *end != '\0' || value < minimum) {
    throw InvalidArgument(std::string("environment variable ") + name + " must be a whole number >= " +
                          std::to_string(minimum) + ", got '" + text + "'");
  }
  return static_cast<int64_t>(value);
}

}  // namespace

ResourceLimits ReadResourceLimits() {
  ResourceLimits limits;
  limits.max_pad = ReadWholeNumber(kMaxPad, 0, limits.max_pad);
  limits.max_buffer_bytes = ReadWholeNumber(kMaxBufferBytes, 1, limits.max_buffer_bytes);
  return limits;
}

void CheckBufferBytes(const ResourceLimits& limits, const char* what, int64_t elements, int64_t element_bytes) {
  // Division instead of a product: the count itself may be near the int64 range.
  if (element_bytes > 0 && elements > limits.max_buffer_bytes / element_bytes) {
    throw InvalidArgument(std::string(what) + " would take " + std::to_string(elements) + " elements of " +
                          std::to_string(element_bytes) + " bytes, over the limit of " +
                          std::to_string(limits.max_buffer_bytes) + " bytes per buffer; set " + kMaxBufferBytes +
                          " to raise it");
  }
}

void CheckPad(const ResourceLimits& limits, int dim, int64_t pad, int64_t input, int64_t span) {
  // A pad past both the kernel's reach and the input's own extent only adds outputs that see nothing but
  // zeros; it is how a tiny model asks for a huge output.
  const int64_t allowed = std::max({span - 1, input, limits.max_pad});
  if (pad > allowed) {
    throw InvalidArgument("pad " + std::to_string(pad) + " in spatial dim " + std::to_string(dim) +
                          " exceeds both the dilated kernel's reach (" + std::to_string(span - 1) +
                          ") and the input extent (" + std::to_string(input) + "); set " + kMaxPad +
                          " to accept pads up to a larger value");
  }
}

}  // namespace ncnn_onnx
