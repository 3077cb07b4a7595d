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

template <typename Acc>
struct Scratch {
  AlignedBuffer<Acc> strip;  // [fan_in][kStrip]
};

template <typename Acc>
Scratch<Acc>& ThreadScratch() {
  thread_local Scratch<Acc> scratch;
  return scratch;
}

// Per-column statistics of a packed strip, after which the strip holds v - mean' (centre) or v (no centre).
// y = (W.strip - correction * sum(W)) * rstd + b reproduces W.(v - mu*center)/sqrt(var + eps)^scale + b with
// no cancellation: mean' is the rounded first-pass mean and `correction` the exact mean of the small
// residuals v - mean' (the corrected two-pass algorithm).
template <typename Acc>
void Finish(const Acc* s1, const Acc* s2, Acc inv, const ConvGeometry& g, Acc* rstd, Acc* correction) {
  for (int64_t j = 0; j < kStrip; ++j) {
    const Acc r = s1[j] * inv;
    Acc var = s2[j] * inv - r * r;
    var = var > Acc(0) ? var : Acc(0);
    rstd[j] = g.scale ? Acc(1) / std::sqrt(var + static_cast<Acc>(g.epsilon)) : Acc(1);
    correction[j] = g.center ? r : Acc(0);
  }
}

template <typename Acc>
void Standardize(Acc* strip, int64_t fan_in, const ConvGeometry& g, Acc* rstd, Acc* correction) {
  const Acc inv = Acc(1) / static_cast<Acc>(fan_in);
  Acc mean[kStrip] = {}, s1[kStrip] = {}, s2[kStrip] = {};
  for (int64_t i = 0; i < fan_in; ++i) {
    for (int64_t j = 0; j < kStrip; ++j) mean[j] += strip[i * kStrip + j];
  }
  for (int64_t j = 0; j < kStrip; ++j) mean[j] *= inv;
  for (int64_t i = 0; i < fan_in; ++i) {
    Acc* row = strip + i * kStrip;
    for (int64_t j = 0; j < kStrip; ++j) {
      const Acc d = row[j] - mean[j];
      s1[j] += d;
      s2[j] += d * d;
      if (g.center) row[j] = d;
    }
  }
  Finish(s1, s2, inv, g, rstd, correction);
}

// Builds the strip's im2col block (zero padding included).
template <typename T, typename Acc>
void PackStrip(const T* x_group, const ConvGeometry& g, const Spatial3& s, const StripMap& map, Acc* strip) {
  const int64_t k_count = g.kernel_size;
  const int64_t channels = g.group_in_channels;
  const int64_t plane = g.input_plane;
  const int64_t image_stride = g.in_channels * plane;
  for (int64_t kk = 0; kk < k_count; ++kk) {
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
    for (int64_t c = 0; c < channels; ++c) {
      Acc* row = strip + (c * k_count + kk) * kStrip;
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

// acc[r][j] = sum_k a[k * kPanelRows + r] * b[k * kStrip + j]. (Blocking k to keep the strip in L1
// measured no faster on AVX2: the strip streams from L2 fast enough for 8 FMAs per step.)
template <typename Acc>
void MicroKernel(int64_t fan_in, const Acc* __restrict a, const Acc* __restrict b, Acc* __restrict acc) {
  for (int64_t i = 0; i < kRows * kStrip; ++i) acc[i] = Acc(0);
  for (int64_t k = 0; k < fan_in; ++k) {
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

// The statistics passes in the same vector types (the scalar template above stays scalar: 16 separate
// accumulators that the compiler does not pack into vectors).
inline void Standardize(float* strip, int64_t fan_in, const ConvGeometry& g, float* rstd, float* correction) {
  const float inv = 1.0f / static_cast<float>(fan_in);
  Float8 total[2] = {}, s1[2] = {}, s2[2] = {};
  for (int64_t i = 0; i < fan_in; ++i) {
    for (int h = 0; h < 2; ++h) {
      Float8 v;
      std::memcpy(&v, strip + i * kStrip + 8 * h, sizeof v);
      total[h] += v;
    }
  }
  const Float8 mean[2] = {total[0] * inv, total[1] * inv};
  for (int64_t i = 0; i < fan_in; ++i) {
    for (int h = 0; h < 2; ++h) {
      float* p = strip + i * kStrip + 8 * h;
      Float8 v;
      std::memcpy(&v, p, sizeof v);
      const Float8 d = v - mean[h];
      s1[h] += d;
      s2[h] += d * d;
      if (g.center) std::memcpy(p, &d, sizeof d);
    }
  }
  float s1_lanes[kStrip], s2_lanes[kStrip];
  std::memcpy(s1_lanes, s1, sizeof s1_lanes);
  std::memcpy(s2_lanes, s2, sizeof s2_lanes);
  Finish(s1_lanes, s2_lanes, inv, g, rstd, correction);
}

inline void MicroKernel(int64_t fan_in, const float* __restrict a, const float* __restrict b, float* __restrict acc) {
  Float8 c[kRows][2] = {};
  for (int64_t k = 0; k < fan_in; ++k) {
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
  Scratch<Acc>& scratch = ThreadScratch<Acc>();
  Acc* strip = scratch.strip.Reserve(static_cast<size_t>(fan_in * kStrip));
  StripMap map;
  const int64_t tile_begin = t.tile * plan.tile_columns;
  const int64_t tile_end = std::min(tile_begin + plan.tile_columns, plan.columns);
  const int64_t panel_begin = t.chunk * plan.chunk_panels;
  const int64_t panel_end = std::min(panel_begin + plan.chunk_panels, plan.panels);
  for (int64_t first = tile_begin; first < tile_end; first += kStrip) {
    const int64_t width = std::min(kStrip, tile_end - first);
    MapStrip(g, s, first, width, &map);
    Acc rstd[kStrip], correction[kStrip];
    PackStrip(x_group, g, s, map, strip);
    Standardize(strip, fan_in, g, rstd, correction);
    int64_t y_offset[kStrip];
    for (int sg = 0; sg < map.segments; ++sg) {
      const Segment& seg = map.segment[sg];
      for (int64_t j = seg.begin; j < seg.end; ++j) y_offset[j] = seg.y_offset + (j - seg.begin);
    }
    for (int64_t panel = panel_begin; panel < panel_end; ++panel) {
      const Acc* a = job.panels + (t.group * plan.panels + panel) * fan_in * kPanelRows;
      const int64_t channels = std::min(kPanelRows, per_group - panel * kPanelRows);
      for (int64_t half = 0; half < channels; half += kRows) {
        Acc acc[kRows * kStrip];
        MicroKernel(fan_in, a + half, strip, acc);
        for (int64_t r = 0; r < std::min(kRows, channels - half); ++r) {
          const int64_t channel = t.group * per_group + panel * kPanelRows + half + r;
          const Acc w_sum = job.weight_sums[channel];
          const Acc b = job.bias != nullptr ? job.bias[channel] : Acc(0);
          T* y_channel = job.y + channel * out_plane;
          const Acc* acc_r = acc + r * kStrip;
          for (int64_t j = 0; j < width; ++j) {
            StoreValue(y_channel + y_offset[j], (acc_r[j] - correction[j] * w_sum) * rstd[j] + b);
          }
        }
      }
    }
  }
}

void RunFloat(const Job<float, float>& job, int64_t task) { RunTask(job, task); }
void RunHalf(const Job<Half, float>& job, int64_t task) { RunTask(job, task); }
void RunDouble(const Job<double, double>& job, int64_t task) { RunTask(job, task); }

}  // namespace portable_baseline

Backend PortableBackend() {
  Backend b;
  b.isa = Isa::kPortable;
  b.name = "portable";
  b.f32 = {portable_baseline::kStrip, &portable_baseline::RunFloat};
  b.f16 = {portable_baseline::kStrip, &portable_baseline::RunHalf};
  b.f64 = {portable_baseline::kStrip, &portable_baseline::RunDouble};
  return b;
}

}  // namespace ncnn_onnx::cpu
