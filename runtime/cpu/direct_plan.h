// Which layers the direct kernel (direct.h) takes and how a call is cut into its tasks. Layers with one
// or a few input channels per group (depthwise above all) make a poor product: per group the GEMM of the
// strip kernels has a handful of rows against a weight panel of kPanelRows, and the location statistics
// are as large as the input itself. The direct kernel reads each patch straight from a zero-padded copy
// of its group's input instead.
//
// Instruction-set independent, so included before any backend's target region.
#pragma once

#include <algorithm>
#include <cstdint>

#include "../common/checked_math.h"
#include "../common/geometry.h"
#include "half.h"
#include "strip.h"

namespace ncnn_onnx::cpu {

constexpr int64_t kDirectMaxChannels = 4;  // C/group
// M/group, in weight panels of kPanelRows channels (one accumulator vector each). A task takes one panel
// and computes its patches' statistics itself, so each panel past the first repeats them: a small
// fan-in's worth per output (a stem's 3x3 of 3 channels into 16 is two panels).
constexpr int64_t kDirectMaxPanels = 4;
// Twice as many for kernels of 25 offsets or more: there the strip kernels' per-strip tables cost more
// than the repeated statistics (a ResNet's 7x7 stem into 64 channels: 10.3 ms here, 14.0 in the strips
// at batch 8), where a 3x3 stem into 48 or 64 runs as fast or faster in the strips.
constexpr int64_t kDirectMaxPanelsLongKernel = 8;
constexpr int64_t kDirectLongKernel = 25;
constexpr int64_t kDirectMinTasks = 16;

inline bool DirectAccepts(const ConvGeometry& g) {
  const int64_t panels = g.kernel_size >= kDirectLongKernel ? kDirectMaxPanelsLongKernel : kDirectMaxPanels;
  return g.group_in_channels <= kDirectMaxChannels && g.group_out_channels <= panels * kPanelRows &&
         g.group_out_channels >= 1 && g.kernel_size <= 1024;
}

// Weight panels per group.
inline int64_t DirectPanels(const ConvGeometry& g) { return (g.group_out_channels + kPanelRows - 1) / kPanelRows; }

// Output rows: every output position but those along the last spatial dim, which a task sweeps in vectors.
inline int64_t DirectRows(const ConvGeometry& g) { return g.output_plane / g.output[g.ndim - 1]; }

// Groups per task. A depthwise layer has a group per channel, and a small plane's task was mostly its
// setup (576 channels of 7x7 at batch 8 made 4608 tasks of 7 output vectors each); a task takes a block of
// groups where there are more than enough tasks for a pool of a few threads to balance.
inline int64_t DirectGroupsPerTask(const ConvGeometry& g) {
  const int64_t pairs = g.batch * g.group * DirectPanels(g);
  return std::max<int64_t>(1, std::min(g.group, pairs / (4 * kDirectMinTasks)));
}

inline int64_t DirectGroupBlocks(const ConvGeometry& g) {
  const int64_t per_task = DirectGroupsPerTask(g);
  return (g.group + per_task - 1) / per_task;
}

// Tasks of one (image, block of groups, panel) each, split into runs of rows only where there are too
// few of them.
inline int64_t DirectChunks(const ConvGeometry& g) {
  const int64_t pairs = g.batch * DirectGroupBlocks(g) * DirectPanels(g);
  const int64_t wanted = pairs >= kDirectMinTasks ? 1 : (kDirectMinTasks + pairs - 1) / pairs;
  return std::max<int64_t>(1, std::min(wanted, DirectRows(g)));
}

// float16 values as floats; defined out of line (portable.cc), for the baseline ISA.
void HalvesToFloats(const Half* src, int64_t count, float* dst);

inline int64_t DirectTasks(const ConvGeometry& g) {
  return g.batch * DirectGroupBlocks(g) * DirectPanels(g) * DirectChunks(g);
}

// The widest vector any backend's direct kernel uses, in floats: the scratch check's upper bound.
constexpr int64_t kDirectMaxLanes = 16;

// One task's zero-padded input (direct.h): [c][p0][p1][phase][col] for the group's channels, where padded
// position q along the last dim is (phase, col) = (q % stride, q / stride); each phase row has a vector of
// `lanes` zeros past its last read. The extents cover exactly what the outputs read.
struct PaddedLayout {
  int64_t extent[2];  // p0, p1: the two leading (right-aligned) spatial dims
  int64_t phases, row;
  int64_t channel_stride;
};

inline PaddedLayout DirectPaddedLayout(const ConvGeometry& g, int64_t lanes) {
  const Spatial3 s = RightAlign(g);
  PaddedLayout p;
  for (int d = 0; d < 2; ++d) p.extent[d] = (s.output[d] - 1) * s.stride[d] + (s.kernel[d] - 1) * s.dilation[d] + 1;
  p.phases = s.stride[2];
  p.row = s.output[2] + (s.kernel[2] - 1) * s.dilation[2] / s.stride[2] + lanes;
  p.channel_stride = CheckedMul(CheckedMul(p.extent[0], p.extent[1], "the padded input"),
                                CheckedMul(p.phases, p.row, "the padded input"), "the padded input");
  return p;
}

// Floats of one task's padded input at the widest vectors, for the scratch limit.
inline int64_t DirectScratchFloats(const ConvGeometry& g) {
  return CheckedMul(g.group_in_channels, DirectPaddedLayout(g, kDirectMaxLanes).channel_stride, "the padded input");
}

}  // namespace ncnn_onnx::cpu
