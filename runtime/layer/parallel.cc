#include "parallel.h"

#include <dlfcn.h>

#include <string>

namespace {
thread_local std::string last_error;
}  // namespace

extern "C" {
// The text of a status code of the layer's native entry points (depthwise.h, channels.h, conv.h): for
// kBadShape, what the check that failed said, when it said something.
__attribute__((visibility("default"))) const char* ncnn_onnx_layer_error(int code) {
  using namespace ncnn_onnx::layer;
  switch (code) {
    case kOk: return "ok";
    case kBadShape:
      if (!last_error.empty()) return last_error.c_str();
      return "invalid sizes (a dim < 1, a rank not 1..3, or a size that overflows 64-bit arithmetic)";
    case kNullTensor: return "a required tensor pointer is null";
    case kOutOfMemory: return "out of memory";
    default: return "internal error";
  }
}
}  // extern "C"

namespace ncnn_onnx::layer {

void RememberError(const char* message) { last_error = message; }

const Gomp& LoadedGomp() {
  static const Gomp gomp = [] {
    Gomp g;
    void* handle = dlopen("libgomp.so.1", RTLD_NOW | RTLD_NOLOAD);
    if (handle == nullptr) return g;
    g.parallel = reinterpret_cast<decltype(g.parallel)>(dlsym(handle, "GOMP_parallel"));
    g.thread_num = reinterpret_cast<decltype(g.thread_num)>(dlsym(handle, "omp_get_thread_num"));
    g.num_threads = reinterpret_cast<decltype(g.num_threads)>(dlsym(handle, "omp_get_num_threads"));
    if (g.parallel == nullptr || g.thread_num == nullptr || g.num_threads == nullptr) g = Gomp{};
    return g;
  }();
  return gomp;
}

}  // namespace ncnn_onnx::layer
