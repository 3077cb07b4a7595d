// The direct kernel: NormalizedConv for layers with few input channels per group (direct_plan.h says
// which), depthwise convolutions above all. A task takes one image, group and weight panel (or a run of
// its output rows), copies the group's input once into a zero-padded buffer whose last dim is split into `stride`
// phases, so every patch element of L consecutive outputs is one contiguous load, and then reads each
// patch twice, vectorized over L outputs along the last spatial dim:
//   1. the sum, smallest and largest value: the mean (an exactly flat patch gets its value itself, so it
//      centres to exactly 0 for every epsilon, docs/op.md "Limits");
//   2. d = v - mean: sum(d) and sum(d^2) (the corrected two-pass statistics), and W . d (or W . v without
//      centring) for each of the group's output channels.
// Y = (W.d - r sum(W)) * rstd + b, r = mean(d), as the strip kernels write it. Nothing here is a
// one-pass variance and the product is of centred values (DESIGN.md §3).
//
// Included inside each backend's target region (portable.cc, avx2.cc, avx512.cc) after that file defines
// `VectorIsa` (lane count, vector type, square root): everything here has internal linkage, so every file
// compiles its own copy for its own instruction set and no copy can stand in for another at link time.
#pragma once

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <limits>
#include <vector>

#include "direct_plan.h"
#include "half.h"
#include "job.h"
#include "strip.h"

namespace ncnn_onnx::cpu {
namespace {

using DirectVector = VectorIsa::Vector;
constexpr int kDirectLanes = VectorIsa::kLanes;

inline DirectVector DirectLoad(const float* p) {
  DirectVector v;
  std::memcpy(&v, p, sizeof v);
  return v;
}

// One input row as floats. float16 goes through a function compiled out of line for the baseline ISA
// (HalfToFloat inlined into the AVX-512 build crashed GCC 12's SLP vectorizer).
inline const float* DirectRow(const float* src, int64_t, std::vector<float>*) { return src; }
inline const float* DirectRow(const Half* src, int64_t count, std::vector<float>* buffer) {
  buffer->resize(static_cast<size_t>(count));
  HalvesToFloats(src, count, buffer->data());
  return buffer->data();
}

// The group's input, zero-padded, for the outputs a task computes (layout: direct_plan.h).
struct PaddedInput : PaddedLayout {
  std::vector<float> data;
};

struct DirectScratch {
  PaddedInput padded;
  std::vector<float> converted;  // a float16 input row as floats
  std::vector<int64_t> offsets;
  std::vector<float> weights;
};

template <typename T>
void FillPadded(const T* x_group, const ConvGeometry& g, const Spatial3& s, PaddedInput* out,
                std::vector<float>* converted) {
  static_cast<PaddedLayout&>(*out) = DirectPaddedLayout(g, kDirectLanes);
  out->data.assign(static_cast<size_t>(g.group_in_channels * out->channel_stride), 0.0f);
  const int64_t plane = g.input_plane;
  for (int64_t c = 0; c < g.group_in_channels; ++c) {
    const T* xc = x_group + c * plane;
    for (int64_t p0 = 0; p0 < out->extent[0]; ++p0) {
      const int64_t i0 = p0 - s.pad[0];
      if (i0 < 0 || i0 >= s.input[0]) continue;
      for (int64_t p1 = 0; p1 < out->extent[1]; ++p1) {
        const int64_t i1 = p1 - s.pad[1];
        if (i1 < 0 || i1 >= s.input[1]) continue;
        const float* src = DirectRow(xc + (i0 * s.input[1] + i1) * s.input[2], s.input[2], converted);
        float* dst = out->data.data() + c * out->channel_stride + (p0 * out->extent[1] + p1) * out->phases * out->row;
        if (out->phases == 1) {
          const int64_t count = std::min(s.input[2], out->row - s.pad[2]);
          if (count > 0) std::memcpy(dst + s.pad[2], src, static_cast<size_t>(count) * sizeof(float));
          continue;
        }
        // Phase by phase: a strided read into a contiguous row, with no division per element (a 64-bit
        // division and remainder per value made stride-2 layers twice as slow as stride-1 ones).
        const int64_t phases = out->phases;
        for (int64_t phase = 0; phase < phases; ++phase) {
          // The first input column whose padded position q = i2 + pad falls in this phase.
          const int64_t first = ((phase - s.pad[2]) % phases + phases) % phases;
          const int64_t col0 = (first + s.pad[2]) / phases;
          const int64_t count = std::min((s.input[2] - first + phases - 1) / phases, out->row - col0);
          float* to = dst + phase * out->row + col0;
          const float* from = src + first;
          for (int64_t j = 0; j < count; ++j) to[j] = from[j * phases];
        }
      }
    }
  }
}

// L outputs of MG channels at `at` (the first patch element of lane 0; `offsets` are those of the other
// elements, channel-major like W's rows) into out[m].
template <int MG>
void DirectOutputs(const ConvGeometry& g, const float* at, const int64_t* offsets, const float* weights,
                   const float* weight_sums, const float* bias, DirectVector* y) {
  const int64_t fan_in = g.fan_in;
  const float inv = 1.0f / static_cast<float>(fan_in);
  const bool stats = g.center || g.scale;
  DirectVector mean = {};
  if (stats) {
    const float inf = std::numeric_limits<float>::infinity();
    DirectVector sum = {}, low = DirectVector{} + inf, high = DirectVector{} - inf;
    for (int64_t i = 0; i < fan_in; ++i) {
      const DirectVector v = DirectLoad(at + offsets[i]);
      sum += v;
      low = v < low ? v : low;
      high = v > high ? v : high;
    }
    mean = low == high ? low : sum * inv;
  }
  DirectVector s1 = {}, s2 = {}, acc[MG] = {};
  for (int64_t i = 0; i < fan_in; ++i) {
    const DirectVector v = DirectLoad(at + offsets[i]);
    const DirectVector d = v - mean;
    if (stats) {
      s1 += d;
      s2 += d * d;
    }
    const DirectVector operand = g.center ? d : v;
    const float* w = weights + i * MG;
    for (int m = 0; m < MG; ++m) acc[m] += operand * w[m];
  }
  DirectVector rstd = DirectVector{} + 1.0f, r = {};
  if (stats) {
    r = s1 * inv;
    DirectVector var = s2 * inv - r * r;
    var = var < 0.0f ? DirectVector{} : var;  // rounding below 0 is 0; NaN (a non-finite patch) stays NaN
    if (g.scale) rstd = (DirectVector{} + 1.0f) / VectorIsa::Sqrt(var + g.epsilon);
  }
  for (int m = 0; m < MG; ++m) {
    y[m] = g.center ? (acc[m] - r * weight_sums[m]) * rstd : acc[m] * rstd;
    if (bias != nullptr) y[m] += bias[m];
  }
}

// The first `width` lanes of v to y.
inline void DirectStoreLanes(float* y, const DirectVector& v, int64_t width) {
  if (width == kDirectLanes) {
    std::memcpy(y, &v, sizeof v);
    return;
  }
  float lanes[kDirectLanes];
  std::memcpy(lanes, &v, sizeof lanes);
  std::memcpy(y, lanes, static_cast<size_t>(width) * sizeof(float));
}

// float16 through the backend's own conversion (a lane-by-lane FloatToHalf here crashed GCC 12's SLP
// vectorizer in the AVX-512 build).
inline void DirectStoreLanes(Half* y, const DirectVector& v, int64_t width) {
  Half lanes[kDirectLanes];
  VectorIsa::ToHalf(v, lanes);
  std::memcpy(y, lanes, static_cast<size_t>(width) * sizeof(Half));
}

template <int MG, typename T>
void DirectTaskOf(const Job<T, float>& job, int64_t task) {
  const ConvGeometry& g = *job.geometry;
  const Spatial3 s = RightAlign(g);
  const int64_t chunks = DirectChunks(g);
  const int64_t panels = DirectPanels(g);
  const int64_t chunk = task % chunks;
  const int64_t panel_index = (task / chunks) % panels;
  const int64_t image_group = task / chunks / panels;
  const int64_t n = image_group / g.group;
  const int64_t grp = image_group % g.group;
  const int64_t rows = DirectRows(g);
  const int64_t row_begin = chunk * rows / chunks;
  const int64_t row_end = (chunk + 1) * rows / chunks;

  // Reused by the thread's next task (a depthwise layer has one task per image and channel, too many for
  // an allocation each); bounded by one image's group of input (DirectScratchFloats, the buffer limit).
  thread_local DirectScratch scratch;
  PaddedInput& padded = scratch.padded;
  FillPadded(job.x + (n * g.in_channels + grp * g.group_in_channels) * g.input_plane, g, s, &padded,
             &scratch.converted);
  const int64_t phase_rows = padded.phases * padded.row;
  // Patch element i = c * K + kk: its offset from the element lane 0 of an output reads first.
  std::vector<int64_t>& offsets = scratch.offsets;
  offsets.resize(static_cast<size_t>(g.fan_in));
  for (int64_t c = 0; c < g.group_in_channels; ++c) {
    for (int64_t kk = 0; kk < g.kernel_size; ++kk) {
      const int64_t k2 = kk % s.kernel[2];
      const int64_t k1 = (kk / s.kernel[2]) % s.kernel[1];
      const int64_t k0 = kk / (s.kernel[2] * s.kernel[1]);
      const int64_t along = k2 * s.dilation[2];
      offsets[static_cast<size_t>(c * g.kernel_size + kk)] =
          c * padded.channel_stride + (k0 * s.dilation[0] * padded.extent[1] + k1 * s.dilation[1]) * phase_rows +
          (along % padded.phases) * padded.row + along / padded.phases;
    }
  }
  // W of the task's panel as [i][m], and its row sums and bias.
  const int64_t first_channel = grp * g.group_out_channels + panel_index * kPanelRows;
  const float* panel = job.panels + (grp * panels + panel_index) * g.fan_in * kPanelRows;
  std::vector<float>& weights = scratch.weights;
  weights.resize(static_cast<size_t>(g.fan_in * MG));
  for (int64_t i = 0; i < g.fan_in; ++i) {
    for (int m = 0; m < MG; ++m) weights[static_cast<size_t>(i * MG + m)] = panel[i * kPanelRows + m];
  }
  const float* bias = job.bias != nullptr ? job.bias + first_channel : nullptr;
  const float* weight_sums = job.weight_sums + first_channel;

  const int64_t out_last = s.output[2];
  const int64_t out_plane = g.output_plane;
  DirectVector out[MG];
  for (int64_t row = row_begin; row < row_end; ++row) {
    const int64_t o0 = row / s.output[1];
    const int64_t o1 = row % s.output[1];
    const float* row_at = padded.data.data() + (o0 * s.stride[0] * padded.extent[1] + o1 * s.stride[1]) * phase_rows;
    T* y_row = job.y + (n * g.out_channels + first_channel) * out_plane + row * out_last;
    for (int64_t o2 = 0; o2 < out_last; o2 += kDirectLanes) {
      DirectOutputs<MG>(g, row_at + o2, offsets.data(), weights.data(), weight_sums, bias, out);
      const int64_t width = std::min<int64_t>(kDirectLanes, out_last - o2);
      for (int m = 0; m < MG; ++m) DirectStoreLanes(y_row + m * out_plane + o2, out[m], width);
    }
  }
}

template <typename T>
void DirectTask(const Job<T, float>& job, int64_t task) {
  // The channels of the task's panel: kPanelRows, fewer in a group's last one.
  const ConvGeometry& g = *job.geometry;
  const int64_t panel_index = (task / DirectChunks(g)) % DirectPanels(g);
  switch (std::min(kPanelRows, g.group_out_channels - panel_index * kPanelRows)) {
    case 1: DirectTaskOf<1>(job, task); break;
    case 2: DirectTaskOf<2>(job, task); break;
    case 3: DirectTaskOf<3>(job, task); break;
    case 4: DirectTaskOf<4>(job, task); break;
    case 5: DirectTaskOf<5>(job, task); break;
    case 6: DirectTaskOf<6>(job, task); break;
    case 7: DirectTaskOf<7>(job, task); break;
    default: DirectTaskOf<8>(job, task); break;
  }
}

}  // namespace
}  // namespace ncnn_onnx::cpu
