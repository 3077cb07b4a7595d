// The portable backend: plain C++ that compilers vectorize, compiled for the baseline ISA, for CPUs without
// AVX2. Also the only float64 path of every backend (float64 is for reference use), accumulating in double.
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>

#include "aligned_buffer.h"
#include "backends.h"
#include "strip.h"

namespace ncnn_onnx::cpu {
namespace {

// The direct kernel's vectors: 4 floats, one SSE register on x86-64 (no square root across lanes in the
// portable vector types, so lane by lane).
struct VectorIsa {
  static constexpr int kRegisters = 16;  // vector registers the compiler may allocate
  static constexpr int kLanes = 4;
  typedef float Vector __attribute__((vector_size(4 * kLanes)));
  typedef int32_t Compared __attribute__((vector_size(4 * kLanes)));  // what comparing Vectors gives
  static bool Any(Compared m) {
    for (int l = 0; l < kLanes; ++l) {
      if (m[l] != 0) return true;
    }
    return false;
  }
  static Vector Sqrt(Vector v) {
    for (int l = 0; l < kLanes; ++l) v[l] = std::sqrt(v[l]);
    return v;
  }
  static Vector ReciprocalSqrt(Vector v) { return (Vector{} + 1.0f) / Sqrt(v); }
  static void ToHalf(const Vector& v, Half* out) {
    for (int l = 0; l < kLanes; ++l) out[l] = FloatToHalf(v[l]);
  }
};

}  // namespace
}  // namespace ncnn_onnx::cpu

#include "activate.h"
#include "direct.h"

namespace ncnn_onnx::cpu {
namespace portable_baseline {

constexpr int64_t kStrip = 16;  // columns per strip
constexpr int64_t kRows = 4;    // output channels per micro-kernel call (half a weight panel)

template <typename T>
inline float LoadValue(const T* p) {
  return static_cast<float>(*p);
}
inline double LoadValue(const double* p) { return *p; }
inline float LoadValue(const Half* p) { return HalfToFloat(*p); }

template <typename T, typename Acc>
inline void StoreValue(T* p, Acc v) {
  *p = static_cast<T>(v);
}
inline void StoreValue(Half* p, float v) { *p = FloatToHalf(v); }

// Patch rows per block: a strip is packed, standardized and multiplied in blocks of this many rows, so the
// scratch stays bounded whatever the patch length (a model's kernel may be millions of values long).
constexpr int64_t kBlockRows = 4096;

template <typename Acc>
struct Scratch {
  AlignedBuffer<Acc> strip;    // one block: [rows][kStrip]
  AlignedBuffer<Acc> partial;  // sums of every panel of the chunk between blocks: [panel][kPanelRows][kStrip]
};

template <typename Acc>
Scratch<Acc>& ThreadScratch() {
  thread_local Scratch<Acc> scratch;
  return scratch;
}

// Per-column sums over the rows of a strip, gathered block by block.
template <typename Acc>
struct ColumnSums {
  Acc total[kStrip] = {}, low[kStrip] = {}, high[kStrip] = {};
  Acc s1[kStrip] = {}, s2[kStrip] = {};
};

// First pass: the column totals, and the smallest and largest value (an exactly flat patch is recognised
// by them and gets its value itself as the mean, so its centred values are exactly 0 and its output
// exactly B for every epsilon; the rounded total / I need not give back that value).
template <typename Acc>
void AddTotals(const Acc* strip, int64_t rows, bool first_block, ColumnSums<Acc>& c) {
  if (first_block) {
    for (int64_t j = 0; j < kStrip; ++j) c.low[j] = c.high[j] = strip[j];
  }
  for (int64_t i = 0; i < rows; ++i) {
    const Acc* row = strip + i * kStrip;
    for (int64_t j = 0; j < kStrip; ++j) {
      c.total[j] += row[j];
      c.low[j] = row[j] < c.low[j] ? row[j] : c.low[j];
      c.high[j] = row[j] > c.high[j] ? row[j] : c.high[j];
    }
  }
}

template <typename Acc>
void Means(const ColumnSums<Acc>& c, int64_t fan_in, Acc* mean) {
  for (int64_t j = 0; j < kStrip; ++j) mean[j] = c.low[j] == c.high[j] ? c.low[j] : c.total[j] / static_cast<Acc>(fan_in);
}

// Second pass: sums of v - mean and (v - mean)^2 (the corrected two-pass algorithm); with `centre` the rows
// are left holding v - mean.
template <typename Acc>
void AddDeviations(Acc* strip, int64_t rows, const Acc* mean, bool centre, ColumnSums<Acc>& c) {
  for (int64_t i = 0; i < rows; ++i) {
    Acc* row = strip + i * kStrip;
    for (int64_t j = 0; j < kStrip; ++j) {
      const Acc d = row[j] - mean[j];
      c.s1[j] += d;
      c.s2[j] += d * d;
      if (centre) row[j] = d;
    }
  }
}

template <typename Acc>
void Centre(Acc* strip, int64_t rows, const Acc* mean) {
  for (int64_t i = 0; i < rows; ++i) {
    for (int64_t j = 0; j < kStrip; ++j) strip[i * kStrip + j] -= mean[j];
  }
}

// y = (W.strip - correction * sum(W)) * rstd + b reproduces W.(v - mu*center)/sqrt(var + eps)^scale + b with
// no cancellation: the strip is centred on the first-pass mean and `correction` is the exact mean of the
// small residuals v - mean (the corrected two-pass algorithm).
template <typename Acc>
void Finish(const ColumnSums<Acc>& c, int64_t fan_in, const ConvGeometry& g, Acc* rstd, Acc* correction) {
  const Acc inv = Acc(1) / static_cast<Acc>(fan_in);
  for (int64_t j = 0; j < kStrip; ++j) {
    const Acc r = c.s1[j] * inv;
    Acc var = c.s2[j] * inv - r * r;
    var = var < Acc(0) ? Acc(0) : var;  // rounding below 0 is 0; a NaN stays NaN (non-finite patches)
    rstd[j] = g.scale ? Acc(1) / std::sqrt(var + static_cast<Acc>(g.epsilon)) : Acc(1);
    correction[j] = g.center ? r : Acc(0);
  }
}

// Writes patch rows [row_begin, row_begin + rows) of the strip's im2col block (zero padding included); row
// i = c * kernel_size + kk.
template <typename T, typename Acc>
void PackRows(const T* x_group, const ConvGeometry& g, const Spatial3& s, const StripMap& map, int64_t row_begin,
              int64_t rows, Acc* strip) {
  const int64_t k_count = g.kernel_size;
  const int64_t plane = g.input_plane;
  const int64_t image_stride = g.in_channels * plane;
  const int64_t row_end = row_begin + rows;
  // A block inside one channel's rows covers only part of the kernel: visit just those offsets, or a
  // kernel of millions of offsets would be walked once per block.
  const bool one_channel = row_begin / k_count == (row_end - 1) / k_count;
  const int64_t kk_begin = one_channel ? row_begin % k_count : 0;
  const int64_t kk_end = one_channel ? kk_begin + rows : k_count;
  for (int64_t kk = kk_begin; kk < kk_end; ++kk) {
    // Channels c whose row c * k_count + kk lies in the block.
    const int64_t c_first = row_begin <= kk ? 0 : (row_begin - kk + k_count - 1) / k_count;
    const int64_t c_end = row_end <= kk ? 0 : (row_end - kk + k_count - 1) / k_count;
    if (c_first >= c_end) continue;
    const int64_t k2 = kk % s.kernel[2];
    const int64_t k1 = (kk / s.kernel[2]) % s.kernel[1];
    const int64_t k0 = kk / (s.kernel[2] * s.kernel[1]);
    int64_t offset[kStrip];
    for (int64_t j = 0; j < kStrip; ++j) offset[j] = -1;
    for (int r = 0; r < map.runs; ++r) {
      const Run& run = map.run[r];
      const int64_t i0 = run.row0 * s.stride[0] - s.pad[0] + k0 * s.dilation[0];
      const int64_t i1 = run.row1 * s.stride[1] - s.pad[1] + k1 * s.dilation[1];
      if (i0 < 0 || i0 >= s.input[0] || i1 < 0 || i1 >= s.input[1]) continue;
      const int64_t base = run.image * image_stride + (i0 * s.input[1] + i1) * s.input[2];
      for (int64_t t = 0; t < run.length; ++t) {
        const int64_t i2 = (run.first + t) * s.stride[2] - s.pad[2] + k2 * s.dilation[2];
        if (i2 >= 0 && i2 < s.input[2]) offset[run.begin + t] = base + i2;
      }
    }
    // Inside the image with stride 1 a row is 16 consecutive inputs: a plain copy the compiler vectorizes.
    bool contiguous = offset[0] >= 0;
    for (int64_t j = 1; j < kStrip; ++j) contiguous = contiguous && offset[j] == offset[0] + j;
    for (int64_t c = c_first; c < c_end; ++c) {
      Acc* row = strip + (c * k_count + kk - row_begin) * kStrip;
      const T* xc = x_group + c * plane;
      if (contiguous) {
        const T* src = xc + offset[0];
        for (int64_t j = 0; j < kStrip; ++j) row[j] = static_cast<Acc>(LoadValue(src + j));
      } else {
        for (int64_t j = 0; j < kStrip; ++j) {
          row[j] = offset[j] >= 0 ? static_cast<Acc>(LoadValue(xc + offset[j])) : Acc(0);
        }
      }
    }
  }
}

// acc[r][j] (+)= sum_k a[k * kPanelRows + r] * b[k * kStrip + j]. (Blocking k to keep the strip in L1
// measured no faster on AVX2: the strip streams from L2 fast enough for 8 FMAs per step.)
template <typename Acc>
void MicroKernel(int64_t rows, const Acc* __restrict a, const Acc* __restrict b, bool accumulate,
                 Acc* __restrict acc) {
  if (!accumulate) {
    for (int64_t i = 0; i < kRows * kStrip; ++i) acc[i] = Acc(0);
  }
  for (int64_t k = 0; k < rows; ++k) {
    const Acc* bk = b + k * kStrip;
    const Acc* ak = a + k * kPanelRows;
    for (int64_t r = 0; r < kRows; ++r) {
      const Acc av = ak[r];
      for (int64_t j = 0; j < kStrip; ++j) acc[r * kStrip + j] += av * bk[j];
    }
  }
}

#if defined(__GNUC__) || defined(__clang__)
// The float product (float32 and float16 tensors) in GCC/Clang vector types of 8 floats: two SSE registers
// in this baseline build. Written out this way the 4 x 16 accumulators stay in registers and every step is
// whole-vector multiply-adds; the scalar loop above was compiled to shuffles with the accumulators spilled
// to the stack (measured in an AVX2 build at a tenth of the speed).
typedef float Float8 __attribute__((vector_size(32)));
static_assert(kStrip == 16, "the float kernels cover a strip with two vectors of 8");

inline void MicroKernel(int64_t rows, const float* __restrict a, const float* __restrict b, bool accumulate,
                        float* __restrict acc) {
  Float8 c[kRows][2] = {};
  if (accumulate) std::memcpy(c, acc, sizeof c);
  for (int64_t k = 0; k < rows; ++k) {
    Float8 b0, b1;  // memcpy, not a cast: the strip is only float-aligned as far as the types say
    std::memcpy(&b0, b + k * kStrip, sizeof b0);
    std::memcpy(&b1, b + k * kStrip + 8, sizeof b1);
    const float* ak = a + k * kPanelRows;
    for (int r = 0; r < kRows; ++r) {
      const Float8 av = Float8{} + ak[r];
      c[r][0] += av * b0;
      c[r][1] += av * b1;
    }
  }
  std::memcpy(acc, c, sizeof c);
}
#endif

template <typename T, typename Acc>
void RunTask(const Job<T, Acc>& job, int64_t task) {
  const ConvGeometry& g = *job.geometry;
  const Plan& plan = job.plan;
  const TaskIndex t = Locate(plan, task);
  const Spatial3 s = RightAlign(g);
  const int64_t fan_in = g.fan_in;
  const int64_t out_plane = g.output_plane;
  const int64_t per_group = g.group_out_channels;
  const T* x_group = job.x + t.group * g.group_in_channels * g.input_plane;
  const int64_t block_rows = std::min(fan_in, kBlockRows);
  // One block: packed once, its passes read it in place. Several: each pass packs every block again
  // (patches this long are rare and their product dominates).
  const bool one_block = block_rows == fan_in;
  const int64_t panel_begin = t.chunk * plan.chunk_panels;
  const int64_t panel_end = std::min(panel_begin + plan.chunk_panels, plan.panels);
  Scratch<Acc>& scratch = ThreadScratch<Acc>();
  Acc* strip = scratch.strip.Reserve(static_cast<size_t>(block_rows * kStrip));
  Acc* partial = scratch.partial.Reserve(static_cast<size_t>(std::max<int64_t>(panel_end - panel_begin, 1) *
                                                             kPanelRows * kStrip));
  StripMap map;
  const int64_t tile_begin = t.tile * plan.tile_columns;
  const int64_t tile_end = std::min(tile_begin + plan.tile_columns, plan.columns);
  for (int64_t first = tile_begin; first < tile_end; first += kStrip) {
    const int64_t width = std::min(kStrip, tile_end - first);
    MapStrip(g, s, first, width, &map);
    ColumnSums<Acc> sums;
    for (int64_t row = 0; row < fan_in; row += block_rows) {
      const int64_t rows = std::min(block_rows, fan_in - row);
      PackRows(x_group, g, s, map, row, rows, strip);
      AddTotals(strip, rows, row == 0, sums);
    }
    Acc mean[kStrip], rstd[kStrip], correction[kStrip];
    Means(sums, fan_in, mean);
    for (int64_t row = 0; row < fan_in; row += block_rows) {
      const int64_t rows = std::min(block_rows, fan_in - row);
      if (!one_block) PackRows(x_group, g, s, map, row, rows, strip);
      AddDeviations(strip, rows, mean, one_block && g.center, sums);
    }
    Finish(sums, fan_in, g, rstd, correction);
    for (int64_t row = 0; row < fan_in; row += block_rows) {
      const int64_t rows = std::min(block_rows, fan_in - row);
      if (!one_block) {
        PackRows(x_group, g, s, map, row, rows, strip);
        if (g.center) Centre(strip, rows, mean);
      }
      for (int64_t panel = panel_begin; panel < panel_end; ++panel) {
        const Acc* a = job.panels + ((t.group * plan.panels + panel) * fan_in + row) * kPanelRows;
        const int64_t channels = std::min(kPanelRows, per_group - panel * kPanelRows);
        Acc* acc = partial + (panel - panel_begin) * kPanelRows * kStrip;
        for (int64_t half = 0; half < channels; half += kRows) {
          MicroKernel(rows, a + half, strip, row > 0, acc + half * kStrip);
        }
      }
    }
    int64_t y_offset[kStrip];
    for (int sg = 0; sg < map.segments; ++sg) {
      const Segment& seg = map.segment[sg];
      for (int64_t j = seg.begin; j < seg.end; ++j) y_offset[j] = seg.y_offset + (j - seg.begin);
    }
    for (int64_t panel = panel_begin; panel < panel_end; ++panel) {
      const int64_t channels = std::min(kPanelRows, per_group - panel * kPanelRows);
      const Acc* acc = partial + (panel - panel_begin) * kPanelRows * kStrip;
      for (int64_t r = 0; r < channels; ++r) {
        const int64_t channel = t.group * per_group + panel * kPanelRows + r;
        const Acc w_sum = job.weight_sums[channel];
        const Acc b = job.bias != nullptr ? job.bias[channel] : Acc(0);
        T* y_channel = job.y + channel * out_plane;
        const Acc* acc_r = acc + r * kStrip;
        for (int64_t j = 0; j < width; ++j) {
          StoreValue(y_channel + y_offset[j], Activate(job.activation, (acc_r[j] - correction[j] * w_sum) * rstd[j] + b));
        }
      }
    }
  }
}

void RunFloat(const Job<float, float>& job, int64_t task) { RunTask(job, task); }
void RunHalf(const Job<Half, float>& job, int64_t task) { RunTask(job, task); }
void RunDouble(const Job<double, double>& job, int64_t task) { RunTask(job, task); }

}  // namespace portable_baseline

void HalvesToFloats(const Half* src, int64_t count, float* dst) {
  for (int64_t i = 0; i < count; ++i) dst[i] = HalfToFloat(src[i]);
}

Backend PortableBackend() {
  Backend b;
  b.isa = Isa::kPortable;
  b.name = "portable";
  b.f32 = {portable_baseline::kStrip, &portable_baseline::RunFloat};
  b.f16 = {portable_baseline::kStrip, &portable_baseline::RunHalf};
  b.f64 = {portable_baseline::kStrip, &portable_baseline::RunDouble};
  b.direct_f32 = &DirectTask<float>;
  b.direct_f16 = &DirectTask<Half>;
  return b;
}

}  // namespace ncnn_onnx::cpu
