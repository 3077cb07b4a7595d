#include <cstdlib>
#include <cstring>

#include "backends.h"

namespace ncnn_onnx::cpu {

bool Supports(Isa isa) {
#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
  __builtin_cpu_init();
  switch (isa) {
    case Isa::kPortable:
      return true;
    case Isa::kAvx2:
      return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") && __builtin_cpu_supports("f16c");
    case Isa::kAvx512:
      return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
             __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512dq") &&
             __builtin_cpu_supports("fma") && __builtin_cpu_supports("f16c");
  }
  return false;
#else
  return isa == Isa::kPortable;
#endif
}

Backend SelectBackend() {
  Isa cap = Isa::kAvx512;
  if (const char* requested = std::getenv("NCNN_ONNX_CPU_ISA")) {
    if (std::strcmp(requested, "portable") == 0) cap = Isa::kPortable;
    if (std::strcmp(requested, "avx2") == 0) cap = Isa::kAvx2;
  }
  if (cap == Isa::kAvx512 && Supports(Isa::kAvx512)) return Avx512Backend();
  if (cap != Isa::kPortable && Supports(Isa::kAvx2)) return Avx2Backend();
  return PortableBackend();
}

}  // namespace ncnn_onnx::cpu
