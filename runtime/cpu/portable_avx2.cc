// The portable backend compiled for AVX2 + FMA: the AVX2 backend's float64 kernels (avx2.cc has the float32
// and float16 ones). Only the code inside the target region uses the wider instructions: functions it
// shares with the rest of the library (headers, the standard library) are compiled before the region for
// the baseline ISA, so the linker can never pick an AVX2 copy for code that runs on any CPU.
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>

#include "aligned_buffer.h"
#include "backends.h"
#include "strip.h"

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))

#if defined(__clang__)
#pragma clang attribute push(__attribute__((target("avx2,fma,f16c"))), apply_to = function)
#else
#pragma GCC push_options
#pragma GCC target("avx2,fma,f16c")
#endif

namespace ncnn_onnx::cpu {
namespace portable_avx2 {
#include "portable_impl.inc"
}  // namespace portable_avx2
}  // namespace ncnn_onnx::cpu

#if defined(__clang__)
#pragma clang attribute pop
#else
#pragma GCC pop_options
#endif

namespace ncnn_onnx::cpu {

Backend PortableAvx2Backend() {
  Backend b;
  b.isa = Isa::kAvx2;
  b.name = "portable-avx2";
  b.f32 = {portable_avx2::kStrip, &portable_avx2::RunFloat};
  b.f16 = {portable_avx2::kStrip, &portable_avx2::RunHalf};
  b.f64 = {portable_avx2::kStrip, &portable_avx2::RunDouble};
  return b;
}

}  // namespace ncnn_onnx::cpu

#else

namespace ncnn_onnx::cpu {
Backend PortableAvx2Backend() { return PortableBackend(); }
}  // namespace ncnn_onnx::cpu

#endif
