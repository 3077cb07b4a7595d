// What a CPU backend is handed: one NormalizedConv call cut into independent tasks.
//
// Per group g the output positions of the whole batch form N*P "columns" (column = n*P + p). A task owns a
// tile of consecutive columns and a chunk of the group's output channels. For each strip of columns in its
// tile it computes each column's patch mean and centred variance, builds the strip's im2col block (patch
// values of every column) centred on the mean, multiplies the packed weight panels by it and writes Y with
// the per-column 1/sqrt(var + eps), the mean correction and the bias applied.
//
// A backend may first run "prepare" tasks that fill per-location statistics (location_stats), from which
// the column statistics follow exactly without a second pass over the strip.
#pragma once

#include <cstdint>

#include "../common/activation.h"
#include "../common/geometry.h"

namespace ncnn_onnx::cpu {

// Output channels per packed weight panel: the rows of the micro-kernels' accumulator block.
constexpr int64_t kPanelRows = 8;

struct Plan {
  int64_t columns = 0;        // N * P, per group
  int64_t strip_columns = 0;  // columns per strip (a backend constant)
  int64_t tile_columns = 0;   // columns per task, a multiple of strip_columns
  int64_t tiles = 0;          // per group
  int64_t panels = 0;         // weight panels per group: ceil(M/group / kPanelRows)
  int64_t chunk_panels = 0;   // panels per task
  int64_t chunks = 0;         // per group
  int64_t tasks = 0;          // group * tiles * chunks
};

// T: the tensors' element type; Acc: the type the statistics and products are computed in.
template <typename T, typename Acc>
struct Job {
  const ConvGeometry* geometry = nullptr;
  Plan plan;
  const T* x = nullptr;
  T* y = nullptr;
  const Acc* panels = nullptr;       // [group][panel][fan_in][kPanelRows], zero rows past M/group
  const Acc* weight_sums = nullptr;  // [M]: sum_i W[m, i]
  const Acc* bias = nullptr;         // [M], or null
  // [N][group][3][input_plane]: per input location and group, the channel mean m, the residual
  // sum_c (x - m) and sum_c (x - m)^2. Allocated by the caller when the routine has prepare tasks.
  Acc* location_stats = nullptr;
  // Applied to every output as it is stored (a NormalizedConvActivation node; none for NormalizedConv).
  Activation activation;
};

struct TaskIndex {
  int64_t group, tile, chunk;
};

inline TaskIndex Locate(const Plan& plan, int64_t task) {
  TaskIndex t;
  t.chunk = task % plan.chunks;
  task /= plan.chunks;
  t.tile = task % plan.tiles;
  t.group = task / plan.tiles;
  return t;
}

Plan MakePlan(const ConvGeometry& geometry, int64_t strip_columns);

}  // namespace ncnn_onnx::cpu
