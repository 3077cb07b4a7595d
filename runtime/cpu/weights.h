// W and B rearranged for the micro-kernels: per group, panels of kPanelRows output channels stored
// k-major ([fan_in][kPanelRows]) so each step of the product reads one small contiguous row. Also the
// per-channel weight sums the mean correction needs, accumulated in double.
#pragma once

#include <cstdint>
#include <vector>

#include "aligned_buffer.h"

namespace ncnn_onnx::cpu {

template <typename Acc>
struct PackedWeights {
  int64_t out_channels = 0;
  int64_t group = 1;
  int64_t fan_in = 0;
  int64_t panels = 0;  // per group
  AlignedBuffer<Acc> panel_data;
  std::vector<Acc> weight_sums;
  std::vector<Acc> bias;  // empty when B is absent

  const Acc* bias_or_null() const { return bias.empty() ? nullptr : bias.data(); }
};

// b: M values in the accumulation type.
template <typename T, typename Acc>
std::vector<Acc> ConvertBias(const T* b, int64_t out_channels);

// w: (M, fan_in) row-major with M = group * M/group; b: M values or null.
template <typename T, typename Acc>
PackedWeights<Acc> PackWeights(const T* w, const T* b, int64_t out_channels, int64_t group, int64_t fan_in);

}  // namespace ncnn_onnx::cpu
