// The direct kernel: NormalizedConv for layers with few input channels per group (direct_plan.h says
// which), depthwise convolutions and stems above all. A task takes one image, a block of its groups and a
// weight panel (or a run of its output rows), copies each group's input rows into a zero-padded buffer
// whose last dim is split into `stride` phases, so every patch element of L consecutive outputs is one
// contiguous load, and then reads each patch twice, vectorized over L outputs along the last spatial dim
// (two rows to a vector where a row is at most L/2), several vectors at a time:
//   1. the sum: the mean. An exactly flat patch must get its value itself (so it centres to exactly 0
//      for every epsilon, docs/op.md "Limits"); a vector that may hold one is redone with the smallest
//      and largest value (DirectOutputs).
//   2. d = v - mean: sum(d) and sum(d^2) (the corrected two-pass statistics), and W . d (or W . v without
//      centring) for each of the panel's output channels.
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
#include <utility>
#include <vector>

#include "activate.h"
#include "direct_plan.h"
#include "half.h"
#include "job.h"
#include "strip.h"

namespace ncnn_onnx::cpu {
namespace {

using DirectVector = VectorIsa::Vector;
constexpr int kDirectLanes = VectorIsa::kLanes;
constexpr int kDirectHalf = kDirectLanes / 2;

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

// Where each stride phase of a padded row takes its values: input columns first, first + phases, ...
// (count of them) to the phase row from column col0. The same for every row, so worked out once per
// fill: with their 64-bit divisions per row, a stride-2 layer on 14x14 maps spent half its time here.
struct PhaseSpan {
  int64_t first, col0, count;
};

struct DirectScratch {
  PaddedInput padded;
  std::vector<float> converted;  // a float16 input row as floats
  std::vector<PhaseSpan> spans;   // FillPadded's, per stride phase
  std::vector<int64_t> offsets;
  std::vector<float> weights;
};

template <size_t... I>
inline DirectVector DirectEvens(DirectVector a, DirectVector b, std::index_sequence<I...>) {
  return __builtin_shufflevector(a, b, static_cast<int>(2 * I)...);
}

template <size_t... I>
inline DirectVector DirectOdds(DirectVector a, DirectVector b, std::index_sequence<I...>) {
  return __builtin_shufflevector(a, b, static_cast<int>(2 * I + 1)...);
}

// A stride-2 row split into its phases: to[0][j] = src[2j] (count[0] values), to[1][j] = src[2j + 1]
// (count[1] values), a vector of each at a time from two vectors of the row (stride-2 depthwise layers,
// the first of every mobile network's stages, spent more on this copy one value at a time than on their
// statistics). Nothing past src[length - 1] is read, nor past count values written.
inline void DirectDeinterleave(const float* src, int64_t length, float* const (&to)[2], const int64_t (&count)[2]) {
  constexpr auto kIndex = std::make_index_sequence<kDirectLanes>();
  const int64_t vectorized = std::min({count[0], count[1], length / 2});
  int64_t j = 0;
  for (; j + kDirectLanes <= vectorized; j += kDirectLanes) {
    const DirectVector a = DirectLoad(src + 2 * j), b = DirectLoad(src + 2 * j + kDirectLanes);
    const DirectVector evens = DirectEvens(a, b, kIndex), odds = DirectOdds(a, b, kIndex);
    std::memcpy(to[0] + j, &evens, sizeof evens);
    std::memcpy(to[1] + j, &odds, sizeof odds);
  }
  for (int k = 0; k < 2; ++k) {
    for (int64_t i = j; i < count[k]; ++i) to[k][i] = src[2 * i + k];
  }
}

inline void PhaseSpans(const Spatial3& s, const PaddedLayout& layout, std::vector<PhaseSpan>* spans) {
  const int64_t phases = layout.phases;
  spans->resize(static_cast<size_t>(phases));
  for (int64_t phase = 0; phase < phases; ++phase) {
    // The first input column whose padded position q = i2 + pad falls in this phase.
    const int64_t first = ((phase - s.pad[2]) % phases + phases) % phases;
    const int64_t col0 = (first + s.pad[2]) / phases;
    const int64_t count = std::min((s.input[2] - first + phases - 1) / phases, layout.row - col0);
    (*spans)[static_cast<size_t>(phase)] = PhaseSpan{first, col0, count};
  }
}

// The padded rows [begin, end) of the two leading dims that the output rows [row_begin, row_end) read:
// a task that takes a run of an image's rows fills only those (a stem at batch 1 is cut into 16 such
// tasks, and each filled the whole image).
struct PaddedRows {
  int64_t begin[2], end[2];
};

inline PaddedRows RowsRead(const Spatial3& s, const PaddedLayout& layout, int64_t row_begin, int64_t row_end) {
  const int64_t o0_first = row_begin / s.output[1], o0_last = (row_end - 1) / s.output[1];
  const bool one = o0_first == o0_last;
  const int64_t o1_first = one ? row_begin % s.output[1] : 0;
  const int64_t o1_last = one ? (row_end - 1) % s.output[1] : s.output[1] - 1;
  PaddedRows r;
  r.begin[0] = o0_first * s.stride[0];
  r.end[0] = std::min(layout.extent[0], o0_last * s.stride[0] + (s.kernel[0] - 1) * s.dilation[0] + 1);
  r.begin[1] = o1_first * s.stride[1];
  r.end[1] = std::min(layout.extent[1], o1_last * s.stride[1] + (s.kernel[1] - 1) * s.dilation[1] + 1);
  return r;
}

// `out`'s layout and `spans` (PhaseSpans, with more than one phase) are set by the caller; the padded rows
// outside `rows` are left as they are (never read).
template <typename T>
void FillPadded(const T* x_group, const ConvGeometry& g, const Spatial3& s, const PaddedRows& rows,
                const std::vector<PhaseSpan>& spans, PaddedInput* out, std::vector<float>* converted) {
  out->data.resize(static_cast<size_t>(g.group_in_channels * out->channel_stride));
  const int64_t plane = g.input_plane;
  const int64_t phases = out->phases;
  const size_t padded_row = static_cast<size_t>(phases * out->row);
  for (int64_t c = 0; c < g.group_in_channels; ++c) {
    const T* xc = x_group + c * plane;
    for (int64_t p0 = rows.begin[0]; p0 < rows.end[0]; ++p0) {
      const int64_t i0 = p0 - s.pad[0];
      for (int64_t p1 = rows.begin[1]; p1 < rows.end[1]; ++p1) {
        const int64_t i1 = p1 - s.pad[1];
        float* dst = out->data.data() + c * out->channel_stride + (p0 * out->extent[1] + p1) * phases * out->row;
        std::fill(dst, dst + padded_row, 0.0f);
        if (i0 < 0 || i0 >= s.input[0] || i1 < 0 || i1 >= s.input[1]) continue;
        const float* src = DirectRow(xc + (i0 * s.input[1] + i1) * s.input[2], s.input[2], converted);
        if (phases == 1) {
          const int64_t count = std::min(s.input[2], out->row - s.pad[2]);
          if (count > 0) std::memcpy(dst + s.pad[2], src, static_cast<size_t>(count) * sizeof(float));
          continue;
        }
        // Phase by phase: a strided read into a contiguous row, with no division per element (a 64-bit
        // division and remainder per value made stride-2 layers twice as slow as stride-1 ones).
        if (phases == 2) {
          // The phase whose first input column is 0 takes the even columns, the other the odd ones.
          const int even = spans[0].first == 0 ? 0 : 1;
          const PhaseSpan& e = spans[static_cast<size_t>(even)];
          const PhaseSpan& o = spans[static_cast<size_t>(1 - even)];
          float* const to[2] = {dst + even * out->row + e.col0, dst + (1 - even) * out->row + o.col0};
          const int64_t count[2] = {e.count, o.count};
          DirectDeinterleave(src, s.input[2], to, count);
          continue;
        }
        for (int64_t phase = 0; phase < phases; ++phase) {
          const PhaseSpan& span = spans[static_cast<size_t>(phase)];
          float* to = dst + phase * out->row + span.col0;
          const float* from = src + span.first;
          for (int64_t j = 0; j < span.count; ++j) to[j] = from[j * phases];
        }
      }
    }
  }
}

// Output vectors one pass over the patches carries side by side. Each has its own chains of sums, and
// one vector's chains alone leave the vector units waiting on an add's latency at every patch element
// (depthwise layers ran at a third of the speed); as many as fit the registers with their MG accumulators.
template <int MG>
constexpr int DirectBatch() {
  constexpr int batch = (VectorIsa::kRegisters - 4) / (MG + 4);
  return batch < 1 ? 1 : (batch > 4 ? 4 : batch);
}

// Whether any of the first `width` lanes' variance is so small against its mean that the patch may be
// exactly flat: every value equal, but the rounded mean of equal values need not equal them. A flat
// patch's computed variance is a few roundings of the (tiny) difference squared, far below this bound.
// Lanes past `width` (the padding past a row's end, flat zeros) are not outputs.
// With two rows packed in a vector (DirectRowsOf), the second's `width_high` outputs start at lane
// kDirectHalf.
inline bool DirectMaybeFlat(const DirectVector& var, const DirectVector& mean, int64_t fan_in, int64_t width,
                            int64_t width_high) {
  const DirectVector bound = mean * (static_cast<float>(fan_in) * 0x1p-20f);
  VectorIsa::Compared lane;
  for (int l = 0; l < kDirectLanes; ++l) lane[l] = l;
  const auto valid = (lane < static_cast<int32_t>(width)) |
                     ((lane >= kDirectHalf) & (lane < static_cast<int32_t>(kDirectHalf + width_high)));
  return VectorIsa::Any((var <= bound * bound) & valid);
}

typedef float DirectHalfVector __attribute__((vector_size(sizeof(float) * kDirectHalf)));

template <size_t... I>
inline DirectVector DirectJoin(DirectHalfVector low, DirectHalfVector high, std::index_sequence<I...>) {
  return __builtin_shufflevector(low, high, static_cast<int>(I)...);
}

template <size_t... I>
inline DirectVector DirectUpperHalf(DirectVector v, std::index_sequence<I...>) {
  return __builtin_shufflevector(v, v, static_cast<int>(kDirectHalf + I % kDirectHalf)...);
}

// A patch element of a vector's outputs: lanes from `low`, or with two rows packed, the first half of the
// lanes from `low` and the second from `high`.
template <bool Packed>
inline DirectVector DirectLoadAt(const float* low, const float* high) {
  if constexpr (Packed) {
    DirectHalfVector a, b;
    std::memcpy(&a, low, sizeof a);
    std::memcpy(&b, high, sizeof b);
    return DirectJoin(a, b, std::make_index_sequence<kDirectLanes>());
  } else {
    return DirectLoad(low);
  }
}

// For each r < R: L outputs of MG channels at at[r] (the first patch element of lane 0; `offsets` are
// those of the other elements, channel-major like W's rows) into y[r][m]. Packed: the upper half of the
// lanes are another row's outputs, at upper[r]; width_high[r] of them are outputs (0 where there is no
// such row).
//
// Exact: the mean of an exactly flat patch is its value itself (smallest == largest), which costs two
// more operations per patch element. Without it the mean is sum / I, and the call returns the bits of
// the vectors r whose patches may be flat (DirectMaybeFlat); the caller recomputes those exactly, so
// either way every output is what the exact pass gives.
template <int MG, int R, bool Exact, bool Packed>
uint32_t DirectOutputs(const ConvGeometry& g, const float* const (&at)[R], const float* const (&upper)[R],
                       const int64_t* width, const int64_t* width_high, const int64_t* offsets, const float* weights,
                       const float* weight_sums, const float* bias, DirectVector (&y)[R][MG]) {
  const int64_t fan_in = g.fan_in;
  const float inv = 1.0f / static_cast<float>(fan_in);
  const bool stats = g.center || g.scale;
  DirectVector mean[R] = {};
  if (stats && Exact) {
    const float inf = std::numeric_limits<float>::infinity();
    DirectVector sum[R], low[R], high[R];
    for (int r = 0; r < R; ++r) {
      sum[r] = DirectVector{};
      low[r] = DirectVector{} + inf;
      high[r] = DirectVector{} - inf;
    }
    for (int64_t i = 0; i < fan_in; ++i) {
      for (int r = 0; r < R; ++r) {
        const DirectVector v = DirectLoadAt<Packed>(at[r] + offsets[i], upper[r] + offsets[i]);
        sum[r] += v;
        low[r] = v < low[r] ? v : low[r];
        high[r] = v > high[r] ? v : high[r];
      }
    }
    for (int r = 0; r < R; ++r) mean[r] = low[r] == high[r] ? low[r] : sum[r] * inv;
  } else if (stats) {
    DirectVector sum[R] = {};
    for (int64_t i = 0; i < fan_in; ++i) {
      for (int r = 0; r < R; ++r) sum[r] += DirectLoadAt<Packed>(at[r] + offsets[i], upper[r] + offsets[i]);
    }
    for (int r = 0; r < R; ++r) mean[r] = sum[r] * inv;
  }
  // The attributes are settled before the loop: a select per patch element kept the compiler from
  // scheduling it (the common center = scale = 1 ran at half speed).
  DirectVector s1[R] = {}, s2[R] = {}, acc[R][MG] = {};
  if (g.center) {
    for (int64_t i = 0; i < fan_in; ++i) {
      const float* w = weights + i * MG;
      for (int r = 0; r < R; ++r) {
        const DirectVector d = DirectLoadAt<Packed>(at[r] + offsets[i], upper[r] + offsets[i]) - mean[r];
        s1[r] += d;
        s2[r] += d * d;
        for (int m = 0; m < MG; ++m) acc[r][m] += d * w[m];
      }
    }
  } else {
    for (int64_t i = 0; i < fan_in; ++i) {
      const float* w = weights + i * MG;
      for (int r = 0; r < R; ++r) {
        const DirectVector v = DirectLoadAt<Packed>(at[r] + offsets[i], upper[r] + offsets[i]);
        if (stats) {
          const DirectVector d = v - mean[r];
          s1[r] += d;
          s2[r] += d * d;
        }
        for (int m = 0; m < MG; ++m) acc[r][m] += v * w[m];
      }
    }
  }
  uint32_t inexact = 0;
  for (int r = 0; r < R; ++r) {
    DirectVector rstd = DirectVector{} + 1.0f, mean_d = {};
    if (stats) {
      mean_d = s1[r] * inv;
      DirectVector var = s2[r] * inv - mean_d * mean_d;
      var = var < 0.0f ? DirectVector{} : var;  // rounding below 0 is 0; NaN (a non-finite patch) stays NaN
      if (!Exact && DirectMaybeFlat(var, mean[r], fan_in, width[r], Packed ? width_high[r] : 0)) inexact |= 1u << r;
      if (g.scale) rstd = VectorIsa::ReciprocalSqrt(var + g.epsilon);
    }
    for (int m = 0; m < MG; ++m) {
      y[r][m] = g.center ? (acc[r][m] - mean_d * weight_sums[m]) * rstd : acc[r][m] * rstd;
      if (bias != nullptr) y[r][m] += bias[m];
    }
  }
  return inexact;
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

// Patch element i = c * K + kk: its offset in the padded input from the element lane 0 of an output reads
// first. The same for every group of a layer.
inline void DirectOffsets(const ConvGeometry& g, const Spatial3& s, const PaddedLayout& padded,
                          std::vector<int64_t>* offsets) {
  const int64_t phase_rows = padded.phases * padded.row;
  offsets->resize(static_cast<size_t>(g.fan_in));
  int64_t* out = offsets->data();
  for (int64_t c = 0; c < g.group_in_channels; ++c) {
    for (int64_t k0 = 0; k0 < s.kernel[0]; ++k0) {
      for (int64_t k1 = 0; k1 < s.kernel[1]; ++k1) {
        const int64_t row =
            c * padded.channel_stride + (k0 * s.dilation[0] * padded.extent[1] + k1 * s.dilation[1]) * phase_rows;
        for (int64_t k2 = 0; k2 < s.kernel[2]; ++k2) {
          const int64_t along = k2 * s.dilation[2];
          *out++ = row + (along % padded.phases) * padded.row + along / padded.phases;
        }
      }
    }
  }
}

// What computing and storing one panel's outputs needs besides their positions.
struct DirectPanel {
  const ConvGeometry* g;
  const int64_t* offsets;    // DirectOffsets
  const float* weights;      // [i][m]
  const float* weight_sums;  // of the panel's channels
  const float* bias;         // of the panel's channels, or null
  const Activation* activation;
  int64_t out_plane;
};

// Output vectors waiting to be computed together: where their patches start and their outputs go.
template <typename T, int R>
struct DirectPending {
  const float* at[R];
  T* y[R];
  int64_t width[R];
  // Packed (DirectRowsOf): the second row, in the upper half of the lanes, with as many outputs as the
  // first; y_high is null where there is none.
  const float* high[R];
  T* y_high[R];
  int count = 0;
};

// Computes and stores the first Count pending vectors (through the activation), and empties the list.
template <int MG, int Count, bool Packed, typename T, int R>
void DirectFlush(const DirectPanel& p, DirectPending<T, R>* pending) {
  const float *at[Count], *high[Count];
  int64_t width_high[Count];
  for (int r = 0; r < Count; ++r) {
    at[r] = pending->at[r];
    high[r] = pending->high[r];
    width_high[r] = pending->y_high[r] != nullptr ? pending->width[r] : 0;
  }
  DirectVector out[Count][MG];
  const uint32_t inexact = DirectOutputs<MG, Count, false, Packed>(*p.g, at, high, pending->width, width_high,
                                                                   p.offsets, p.weights, p.weight_sums, p.bias, out);
  for (int r = 0; r < Count; ++r) {
    if ((inexact >> r) & 1u) {
      const float* one[1] = {at[r]};
      const float* one_high[1] = {high[r]};
      DirectVector exact[1][MG];
      DirectOutputs<MG, 1, true, Packed>(*p.g, one, one_high, pending->width + r, width_high + r, p.offsets,
                                         p.weights, p.weight_sums, p.bias, exact);
      for (int m = 0; m < MG; ++m) out[r][m] = exact[0][m];
    }
    for (int m = 0; m < MG; ++m) {
      const DirectVector value = Activate(*p.activation, out[r][m]);
      DirectStoreLanes(pending->y[r] + m * p.out_plane, value, pending->width[r]);
      if (Packed && pending->y_high[r] != nullptr) {
        DirectStoreLanes(pending->y_high[r] + m * p.out_plane,
                         DirectUpperHalf(value, std::make_index_sequence<kDirectLanes>()), pending->width[r]);
      }
    }
  }
  pending->count = 0;
}

template <int MG, bool Packed, typename T, int R>
void DirectFlushRest(const DirectPanel& p, DirectPending<T, R>* pending) {
  static_assert(R <= 4, "a batch leaves at most three vectors");
  switch (pending->count) {
    case 0: break;
    case 1: DirectFlush<MG, 1, Packed>(p, pending); break;
    case 2: DirectFlush<MG, 2 < R ? 2 : 1, Packed>(p, pending); break;
    default: DirectFlush<MG, 3 < R ? 3 : 1, Packed>(p, pending); break;
  }
}

// Rows [row_begin, row_end) of one group's panel of MG output channels, from its padded input. Packed: rows
// of at most half a vector's outputs (the 7x7 maps of a network's last stage filled 7 of 16 lanes) go two
// to a vector, the second in the upper half of the lanes.
template <int MG, bool Packed, typename T>
void DirectRowsOf(const Job<T, float>& job, const Spatial3& s, const PaddedInput& padded, const int64_t* offsets,
                  const float* weights, int64_t n, int64_t first_channel, int64_t row_begin, int64_t row_end) {
  const ConvGeometry& g = *job.geometry;
  const DirectPanel panel{&g, offsets, weights, job.weight_sums + first_channel,
                          job.bias != nullptr ? job.bias + first_channel : nullptr, &job.activation,
                          g.output_plane};
  const int64_t phase_rows = padded.phases * padded.row;
  const int64_t out_last = s.output[2];
  // Output vectors are computed R at a time (DirectBatch), in row order; the last few together too.
  constexpr int R = DirectBatch<MG>();
  DirectPending<T, R> pending;
  auto row_at = [&](int64_t row) {
    const int64_t o0 = row / s.output[1];
    const int64_t o1 = row % s.output[1];
    return padded.data.data() + (o0 * s.stride[0] * padded.extent[1] + o1 * s.stride[1]) * phase_rows;
  };
  T* y_first = job.y + (n * g.out_channels + first_channel) * g.output_plane;
  for (int64_t row = row_begin; row < row_end; row += Packed ? 2 : 1) {
    const float* at = row_at(row);
    T* y_row = y_first + row * out_last;
    for (int64_t o2 = 0; o2 < out_last; o2 += kDirectLanes) {
      const int k = pending.count;
      pending.at[k] = at + o2;
      pending.y[k] = y_row + o2;
      pending.width[k] = std::min<int64_t>(kDirectLanes, out_last - o2);
      const bool second = Packed && row + 1 < row_end;
      pending.high[k] = second ? row_at(row + 1) : at;  // without a second row, lanes nobody stores
      pending.y_high[k] = second ? y_row + out_last : nullptr;
      if (++pending.count < R) continue;
      DirectFlush<MG, R, Packed>(panel, &pending);
    }
  }
  DirectFlushRest<MG, Packed>(panel, &pending);
}

template <int MG, typename T>
void DirectTaskOf(const Job<T, float>& job, int64_t task) {
  const ConvGeometry& g = *job.geometry;
  const Spatial3 s = RightAlign(g);
  const int64_t chunks = DirectChunks(g);
  const int64_t panels = DirectPanels(g);
  const int64_t blocks = DirectGroupBlocks(g);
  const int64_t per_block = DirectGroupsPerTask(g);
  const int64_t chunk = task % chunks;
  const int64_t panel_index = (task / chunks) % panels;
  const int64_t image_block = task / chunks / panels;
  const int64_t n = image_block / blocks;
  const int64_t group_begin = (image_block % blocks) * per_block;
  const int64_t group_end = std::min(g.group, group_begin + per_block);
  const int64_t rows = DirectRows(g);
  const int64_t row_begin = chunk * rows / chunks;
  const int64_t row_end = (chunk + 1) * rows / chunks;

  // Reused by the thread's next task; bounded by one image's group of input (DirectScratchFloats, the
  // buffer limit).
  thread_local DirectScratch scratch;
  PaddedInput& padded = scratch.padded;
  static_cast<PaddedLayout&>(padded) = DirectPaddedLayout(g, kDirectLanes);
  DirectOffsets(g, s, padded, &scratch.offsets);
  if (padded.phases > 1) PhaseSpans(s, padded, &scratch.spans);
  std::vector<float>& weights = scratch.weights;
  weights.resize(static_cast<size_t>(g.fan_in * MG));
  const PaddedRows read = RowsRead(s, padded, row_begin, row_end);
  // Rows of at most half a vector go two to a vector.
  const auto rows_of = s.output[2] <= kDirectHalf ? &DirectRowsOf<MG, true, T> : &DirectRowsOf<MG, false, T>;
  for (int64_t grp = group_begin; grp < group_end; ++grp) {
    FillPadded(job.x + (n * g.in_channels + grp * g.group_in_channels) * g.input_plane, g, s, read, scratch.spans,
               &padded, &scratch.converted);
    // W of the panel as [i][m].
    const float* panel = job.panels + (grp * panels + panel_index) * g.fan_in * kPanelRows;
    for (int64_t i = 0; i < g.fan_in; ++i) {
      for (int m = 0; m < MG; ++m) weights[static_cast<size_t>(i * MG + m)] = panel[i * kPanelRows + m];
    }
    rows_of(job, s, padded, scratch.offsets.data(), weights.data(), n,
            grp * g.group_out_channels + panel_index * kPanelRows, row_begin, row_end);
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
