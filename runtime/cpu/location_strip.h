// The instruction-set-independent half of the location-statistics backends (avx2.cc, avx512.cc): where each
// row of a strip's im2col block reads X and the location statistics, and which geometries the 32-bit
// gathers can index. Each backend turns these spans and offsets into loads of its own vector width.
//
// Included before a backend's target region, so everything here is compiled for the baseline ISA.
#pragma once

#include <algorithm>
#include <cstdint>

#include "../common/geometry.h"
#include "backends.h"
#include "strip.h"

namespace ncnn_onnx::cpu {

// Input locations per prepare task (of one image and group).
constexpr int64_t kStatsChunk = 1024;

inline void KernelOffset(const Spatial3& s, int64_t kk, int64_t (&k)[3]) {
  k[2] = kk % s.kernel[2];
  k[1] = (kk / s.kernel[2]) % s.kernel[1];
  k[0] = kk / (s.kernel[2] * s.kernel[1]);
}

// The kernel offset after k (the last dim moves fastest), without KernelOffset's divisions: the load
// tables are rebuilt for every strip, and a 7x7 stem has as few channels as it has offsets.
inline void NextKernelOffset(const Spatial3& s, int64_t (&k)[3]) {
  if (++k[2] < s.kernel[2]) return;
  k[2] = 0;
  if (++k[1] < s.kernel[1]) return;
  k[1] = 0;
  ++k[0];
}

template <typename T>
inline T* At(T* base, int64_t offset) {
  // A masked access may start before the tensor (its masked-off lanes are never touched); integer
  // arithmetic keeps forming that address defined.
  return reinterpret_cast<T*>(reinterpret_cast<uintptr_t>(base) + static_cast<uintptr_t>(offset) * sizeof(T));
}

// Bits of the lanes of vector `vector` (Lanes columns each) whose strip column lies in [begin, end).
template <int Lanes>
inline uint32_t LaneBits(int64_t begin, int64_t end, int64_t vector) {
  static_assert(Lanes <= 16, "the bits fit a 32-bit mask");
  const int64_t lo = std::max<int64_t>(begin - vector * Lanes, 0);
  const int64_t hi = std::min<int64_t>(end - vector * Lanes, Lanes);
  if (hi <= lo) return 0;
  return ((1u << (hi - lo)) - 1u) << lo;
}

// The start of the input row (of the image's spatial plane) that `run` reads at kernel offset k, or -1
// where that row lies in the padding.
inline int64_t InputRow(const Spatial3& s, const Run& run, const int64_t (&k)[3]) {
  const int64_t i0 = run.row0 * s.stride[0] - s.pad[0] + k[0] * s.dilation[0];
  const int64_t i1 = run.row1 * s.stride[1] - s.pad[1] + k[1] * s.dilation[1];
  if (i0 < 0 || i0 >= s.input[0] || i1 < 0 || i1 >= s.input[1]) return -1;
  return (i0 * s.input[1] + i1) * s.input[2];
}

// The element bits of a stride-2 window that lanes `lanes` read: lane l reads element 2 l (both backends
// load such a window whole and keep its even elements; the caller passes the half-vector of lanes the
// window covers).
inline uint32_t EvenElements(uint32_t lanes) {
  uint32_t bits = 0;
  for (int l = 0; l < 16; ++l) bits |= ((lanes >> l) & 1u) << (2 * l);
  return bits;
}

// Strip columns [begin, end) of one row lie in one input row, evenly spaced: column j reads x at
// x_offset + stride * j (from the group's first channel of image 0) and each statistics map at
// stats_offset + stride * j (from the group's maps of image 0), stride being the last spatial stride.
// Columns in no span read padding.
struct RowSpan {
  int64_t begin, end;
  int64_t x_offset, stats_offset;
};

// The spans of kernel offset k in a strip; returns how many (at most map.runs). Stride: the last stride,
// a constant so that its divisions are shifts.
template <int Stride>
inline int RowSpans(const ConvGeometry& g, const Spatial3& s, const StripMap& map, const int64_t (&k)[3],
                    RowSpan* out) {
  const int64_t x_image = g.in_channels * g.input_plane;
  const int64_t stats_image = g.group * 3 * g.input_plane;
  constexpr int64_t stride = Stride;
  int count = 0;
  for (int r = 0; r < map.runs; ++r) {
    const Run& run = map.run[r];
    const int64_t row = InputRow(s, run, k);
    if (row < 0) continue;
    const int64_t first = run.first * stride - s.pad[2] + k[2] * s.dilation[2];  // input index of column run.begin
    // Columns t of the run with 0 <= first + stride * t < input: the divisions round towards zero, so
    // the numerators are kept non-negative.
    const int64_t lo = first >= 0 ? 0 : (-first + stride - 1) / stride;
    const int64_t hi =
        first >= s.input[2] ? 0 : std::min<int64_t>(run.length, (s.input[2] - first + stride - 1) / stride);
    if (hi <= lo) continue;
    const int64_t spatial = row + first - stride * run.begin;
    out[count++] = RowSpan{run.begin + lo, run.begin + hi, run.image * x_image + spatial,
                           run.image * stats_image + spatial};
  }
  return count;
}

// Per-column offsets of kernel offset kk for any last stride: x_index[j] and stats_index[j] (j < columns,
// the caller's strip width) as in RowSpan, 0 where column j reads padding or lies past the strip. Returns
// bit j set where column j reads an input element. The offsets fit 32 bits where LocationStatsAccepted holds.
inline uint64_t ColumnOffsets(const ConvGeometry& g, const Spatial3& s, const StripMap& map, int64_t kk,
                              int64_t columns, int32_t* x_index, int32_t* stats_index) {
  const int64_t x_image = g.in_channels * g.input_plane;
  const int64_t stats_image = g.group * 3 * g.input_plane;
  int64_t k[3];
  KernelOffset(s, kk, k);
  std::fill(x_index, x_index + columns, 0);
  std::fill(stats_index, stats_index + columns, 0);
  uint64_t valid = 0;
  for (int r = 0; r < map.runs; ++r) {
    const Run& run = map.run[r];
    const int64_t row = InputRow(s, run, k);
    if (row < 0) continue;
    for (int64_t t = 0; t < run.length; ++t) {
      const int64_t i2 = (run.first + t) * s.stride[2] - s.pad[2] + k[2] * s.dilation[2];
      if (i2 < 0 || i2 >= s.input[2]) continue;
      const int64_t spatial = row + i2;
      const int64_t j = run.begin + t;
      x_index[j] = static_cast<int32_t>(run.image * x_image + spatial);
      stats_index[j] = static_cast<int32_t>(run.image * stats_image + spatial);
      valid |= uint64_t{1} << j;
    }
  }
  return valid;
}

// Kernel offsets a strip's per-offset tables (loads, gather offsets) and its smallest block are sized by;
// longer kernels (31x31 is 961) go to the portable backend, whose scratch does not grow with the kernel.
constexpr int64_t kMaxKernelOffsets = 1024;

// The geometries these backends take: kernels of at most kMaxKernelOffsets offsets, and rows whose last
// stride is not 1 gather with 32-bit offsets from image 0 of the group, into X and the location statistics.
inline bool LocationStatsAccepted(const ConvGeometry& g) {
  if (g.kernel_size > kMaxKernelOffsets) return false;
  const int64_t stats = g.batch * g.group * 3 * g.input_plane;
  const int64_t x = g.batch * g.in_channels * g.input_plane;
  return g.stride[g.ndim - 1] == 1 || std::max(stats, x) <= INT32_MAX;
}

// Channels per group a strip block always holds whole (both backends' blocks are at least this many rows).
constexpr int64_t kStripStatsMaxChannels = 128;

// Pointwise layers (one kernel offset) whose group's channels fit one strip block, read by loads: a strip's
// columns are then their own input locations, and their statistics come from the strip's block itself
// (StripStatistics in location_math.h) in L1. A prepare pass would read X once more for the same numbers;
// pointwise layers with few channels are bound by memory, not by their product.
inline bool StatisticsInStrip(const ConvGeometry& g) {
  return g.kernel_size == 1 && g.group_in_channels <= kStripStatsMaxChannels && g.stride[g.ndim - 1] <= 2;
}

inline int64_t LocationStatsTasks(const ConvGeometry& g) {
  if (StatisticsInStrip(g)) return 0;
  return g.batch * g.group * ((g.input_plane + kStatsChunk - 1) / kStatsChunk);
}

// A backend routine of this design: prepare tasks fill the location statistics, then strips of
// `strip_columns` run.
template <typename T>
Routine<T, float> LocationStatsRoutine(int64_t strip_columns, void (*run)(const Job<T, float>&, int64_t),
                                       void (*prepare)(const Job<T, float>&, int64_t)) {
  return {strip_columns, run, &LocationStatsAccepted, &LocationStatsTasks, prepare};
}

// The plan fixes how many tiles there are; their columns are spread evenly in whole vectors, and a tile's
// over its strips, so no strip is left with a sliver: every strip sweeps all weight panels of the chunk,
// and one with a vector or two is bound by the weights' bandwidth, not by its FMAs.
struct TileStrips {
  int64_t first_vector;  // of the tile, counted over the group's columns
  int64_t vectors;
  int64_t strips;
};

inline TileStrips SpreadTile(const Plan& plan, int64_t tile, int64_t lanes, int64_t strip_vectors) {
  const int64_t all_vectors = (plan.columns + lanes - 1) / lanes;
  TileStrips t;
  t.first_vector = tile * all_vectors / plan.tiles;
  t.vectors = (tile + 1) * all_vectors / plan.tiles - t.first_vector;
  t.strips = (t.vectors + strip_vectors - 1) / strip_vectors;
  return t;
}

struct StripSpan {
  int64_t first;  // column
  int64_t width;  // columns: vectors * lanes, less in the group's last strip
  int vectors;
};

inline StripSpan StripOf(const Plan& plan, const TileStrips& t, int64_t index, int64_t lanes) {
  const int64_t first_vector = t.first_vector + index * t.vectors / t.strips;
  const int64_t vectors = t.first_vector + (index + 1) * t.vectors / t.strips - first_vector;
  StripSpan span;
  span.first = first_vector * lanes;
  span.width = std::min(vectors * lanes, plan.columns - span.first);
  span.vectors = static_cast<int>(vectors);
  return span;
}

// The weight rows the multiply after panel `panel`'s (rows [row_begin, row_begin + rows)) reads: the next
// panel's, or the first panel's of the next block; `a` itself after the last. They stream in from L2 or L3
// while this panel computes, since large layers' weights do not fit L2.
template <typename T>
inline const float* NextPanelRows(const Job<T, float>& job, const TaskIndex& t, int64_t panel, int64_t panel_begin,
                                  int64_t panel_end, int64_t row_begin, int64_t rows, bool last_block,
                                  const float* a) {
  const int64_t fan_in = job.geometry->fan_in;
  if (panel + 1 < panel_end) return a + fan_in * kPanelRows;
  if (last_block) return a;
  return job.panels + ((t.group * job.plan.panels + panel_begin) * fan_in + row_begin + rows) * kPanelRows;
}

// Where the columns after this strip go in Y, for output channel 0 (usually the next strip's, in this
// task): every output channel is a store stream of its own, more than the hardware prefetcher follows.
inline int64_t YAhead(const StripMap& map) {
  const Segment& tail = map.segment[map.segments - 1];
  return tail.y_offset + (tail.end - tail.begin);
}

// The input locations of prepare task `task` and where their channels and statistics maps start.
struct StatsChunk {
  int64_t begin, end;    // input locations
  int64_t x_offset;      // of channel 0 of the image and group, in X
  int64_t stats_offset;  // of the group's m map of the image, in the location statistics
};

inline StatsChunk LocateStatsChunk(const ConvGeometry& g, int64_t task) {
  const int64_t plane = g.input_plane;
  const int64_t chunks = (plane + kStatsChunk - 1) / kStatsChunk;
  const int64_t chunk = task % chunks;
  const int64_t image_group = task / chunks;  // n * group + g
  const int64_t n = image_group / g.group;
  const int64_t grp = image_group % g.group;
  StatsChunk c;
  c.begin = chunk * kStatsChunk;
  c.end = std::min(plane, c.begin + kStatsChunk);
  c.x_offset = (n * g.in_channels + grp * g.group_in_channels) * plane;
  c.stats_offset = image_group * 3 * plane;
  return c;
}

}  // namespace ncnn_onnx::cpu
