// The CPU backends and the choice between them. Each backend is a set of routines that run one task of a
// Job (job.h); they differ in instruction set and strip width, not in results beyond rounding.
#pragma once

#include <cstdint>

#include "half.h"
#include "job.h"

namespace ncnn_onnx::cpu {

enum class Isa { kPortable, kAvx2, kAvx512 };

template <typename T, typename Acc>
struct Routine {
  int64_t strip_columns = 0;
  void (*run)(const Job<T, Acc>&, int64_t task) = nullptr;
  // False for geometries the routine cannot index (null: it takes every geometry).
  bool (*accepts)(const ConvGeometry&) = nullptr;
  // An optional first phase filling job.location_stats: prepare_tasks(geometry) calls of prepare.
  int64_t (*prepare_tasks)(const ConvGeometry&) = nullptr;
  void (*prepare)(const Job<T, Acc>&, int64_t task) = nullptr;
};

struct Backend {
  Isa isa = Isa::kPortable;
  const char* name = "portable";
  Routine<float, float> f32;
  Routine<Half, float> f16;
  Routine<double, double> f64;
  // The direct kernel (direct.h) for the layers direct_plan.h's DirectAccepts takes: DirectTasks calls.
  void (*direct_f32)(const Job<float, float>&, int64_t task) = nullptr;
  void (*direct_f16)(const Job<Half, float>&, int64_t task) = nullptr;
};

// Defined by one file each; the AVX ones only on x86-64 (where the CPU may still lack them: see Supports).
Backend PortableBackend();
Backend Avx2Backend();
Backend Avx512Backend();
bool Supports(Isa isa);

// The fastest backend this CPU runs, capped by the environment variable NCNN_ONNX_CPU_ISA
// (portable, avx2 or avx512) so tests can exercise every backend on one machine.
Backend SelectBackend();

}  // namespace ncnn_onnx::cpu
