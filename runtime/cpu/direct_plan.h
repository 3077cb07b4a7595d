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

namespace ncnn_onnx::cpu {

constexpr int64_t kDirectMaxChannels = 4;  // C/group
constexpr int64_t kDirectMaxOutputs = 8;   // M/group: one accumulator vector each
constexpr int64_t kDirectMinTasks = 16;

inline bool DirectAccepts(const ConvGeometry& g) {
  return g.group_in_channels <= kDirectMaxChannels && g.group_out_channels <= kDirectMaxOutputs &&
         g.group_out_channels >= 1 && g.kernel_size <= 1024;
}

// Output rows: every output position but those along the last spatial dim, which a task sweeps in vectors.
inline int64_t DirectRows(const ConvGeometry& g) { return g.output_plane / g.output[g.ndim - 1]; }

// Tasks of one (image, group) each, split into runs of rows only where there are too few of them.
inline int64_t DirectChunks(const ConvGeometry& g) {
  const int64_t pairs = g.batch * g.group;
  const int64_t wanted = pairs >= kDirectMinTasks ? 1 : (kDirectMinTasks + pairs - 1) / pairs;
  return std::max<int64_t>(1, std::min(wanted, DirectRows(g)));
}

// float16 values as floats; defined out of line (portable.cc), for the baseline ISA.
void HalvesToFloats(const Half* src, int64_t count, float* dst);

inline int64_t DirectTasks(const ConvGeometry& g) { return g.batch * g.group * DirectChunks(g); }

// Floats of one task's zero-padded input (direct.h's PaddedInput), for the scratch limit.
inline int64_t DirectScratchFloats(const ConvGeometry& g, int64_t lanes = 16) {
  int64_t extent[3];
  const int lead = 3 - g.ndim;
  for (int d = 0; d < 3; ++d) {
    const int src = d - lead;
    extent[d] = src < 0 ? 1 : (g.output[src] - 1) * g.stride[src] + (g.kernel[src] - 1) * g.dilation[src] + 1;
  }
  const int64_t last = g.ndim - 1;
  const int64_t row = g.output[last] + (g.kernel[last] - 1) * g.dilation[last] / g.stride[last] + lanes;
  return CheckedMul(CheckedMul(CheckedMul(g.group_in_channels, extent[0], "the padded input"),
                               CheckedMul(extent[1], g.stride[last], "the padded input"), "the padded input"),
                    row, "the padded input");
}

}  // namespace ncnn_onnx::cpu
