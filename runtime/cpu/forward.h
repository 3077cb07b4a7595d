// One NormalizedConv forward on the CPU backends, whoever runs its tasks: onnxruntime's intra-op pool
// (kernel.cc) or the PyTorch layer's workers (layer/conv.cc). Both then compute the same bits for the
// same inputs, so eager inference and the deployed model agree by construction.
#pragma once

#include <cstdint>
#include <type_traits>
#include <vector>

#include "../common/checked_math.h"
#include "../common/geometry.h"
#include "../common/limits.h"
#include "aligned_buffer.h"
#include "backends.h"
#include "direct_plan.h"
#include "half.h"
#include "job.h"
#include "weights.h"

namespace ncnn_onnx::cpu {

template <typename T, typename Acc>
struct ForwardCall {
  const ConvGeometry* geometry = nullptr;
  const T* x = nullptr;
  const T* w = nullptr;
  const T* b = nullptr;                      // null without a bias
  const PackedWeights<Acc>* packed = nullptr;  // W (and B) packed ahead, or null: packed here
  T* y = nullptr;
  const ResourceLimits* limits = nullptr;
  Activation activation;  // none for NormalizedConv
};

// Runs the call. run_tasks(job, run, tasks) must call run(job, t) for t in [0, tasks), in any order and
// on any threads, and return once all have returned (rethrowing what a task threw).
template <typename T, typename Acc, typename RunTasks>
void Forward(const Backend& backend, const Routine<T, Acc>& preferred, const ForwardCall<T, Acc>& call,
             RunTasks run_tasks) {
  const ConvGeometry& geometry = *call.geometry;
  if (geometry.batch == 0 || geometry.out_channels == 0) return;
  PackedWeights<Acc> packed;
  const PackedWeights<Acc>* weights = call.packed;
  if (weights == nullptr) {
    packed = PackWeights<T, Acc>(call.w, call.b, geometry.out_channels, geometry.group, geometry.fan_in);
    weights = &packed;
  }
  // W packed ahead without B: B is a graph input, converted per call (M values).
  std::vector<Acc> call_bias;
  if (call.b != nullptr && weights->bias.empty()) call_bias = ConvertBias<T, Acc>(call.b, geometry.out_channels);
  Job<T, Acc> job;
  job.geometry = &geometry;
  job.x = call.x;
  job.y = call.y;
  job.panels = weights->panel_data.data();
  job.weight_sums = weights->weight_sums.data();
  job.bias = call_bias.empty() ? weights->bias_or_null() : call_bias.data();
  job.activation = call.activation;

  void (*direct)(const Job<T, Acc>&, int64_t) = nullptr;
  if constexpr (std::is_same_v<T, float>) direct = backend.direct_f32;
  if constexpr (std::is_same_v<T, Half>) direct = backend.direct_f16;
  if (direct != nullptr && DirectAccepts(geometry)) {
    CheckBufferBytes(*call.limits, "the direct kernel's padded input (scratch)", DirectScratchFloats(geometry),
                     sizeof(float));
    run_tasks(job, direct, DirectTasks(geometry));
    return;
  }

  Routine<T, Acc> routine = preferred;
  if (routine.accepts != nullptr && !routine.accepts(geometry)) {
    const Backend portable = PortableBackend();
    if constexpr (std::is_same_v<T, float>) routine = portable.f32;
    if constexpr (std::is_same_v<T, Half>) routine = portable.f16;
    if constexpr (std::is_same_v<T, double>) routine = portable.f64;
  }

  job.plan = MakePlan(geometry, routine.strip_columns);
  if (job.plan.tasks == 0) return;
  AlignedBuffer<Acc> location_stats;
  const int64_t prepare_tasks = routine.prepare != nullptr ? routine.prepare_tasks(geometry) : 0;
  if (prepare_tasks > 0) {
    const int64_t size = CheckedMul(CheckedMul(geometry.batch, geometry.group, "the location statistics"),
                                    CheckedMul(3, geometry.input_plane, "the location statistics"),
                                    "the location statistics");
    CheckBufferBytes(*call.limits, "the location statistics (scratch)", size, sizeof(Acc));
    job.location_stats = location_stats.Reserve(static_cast<size_t>(size));
    run_tasks(job, routine.prepare, prepare_tasks);
  }
  run_tasks(job, routine.run, job.plan.tasks);
}

}  // namespace ncnn_onnx::cpu
