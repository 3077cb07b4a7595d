#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>

#include "aligned_buffer.h"
#include "backends.h"
#include "strip.h"

namespace ncnn_onnx::cpu {
namespace portable_baseline {
#include "portable_impl.inc"
}  // namespace portable_baseline

Backend PortableBackend() {
  Backend b;
  b.isa = Isa::kPortable;
  b.name = "portable";
  b.f32 = {portable_baseline::kStrip, &portable_baseline::RunFloat};
  b.f16 = {portable_baseline::kStrip, &portable_baseline::RunHalf};
  b.f64 = {portable_baseline::kStrip, &portable_baseline::RunDouble};
  return b;
}

}  // namespace ncnn_onnx::cpu
