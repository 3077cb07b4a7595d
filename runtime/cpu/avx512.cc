// The AVX-512 backend (float32 and float16 tensors, float32 arithmetic).
//
// A strip is 48 columns = 3 vectors of 16 output positions. Its im2col block is built row by row in
// registers: along the last spatial dim a run of positions reads contiguous input (stride 1), so a row is
// a few masked loads whose masks also produce the zero padding; other strides gather. The column sums are
// taken while the rows are stored, the centring pass computes the residual mean and centred variance, and
// the micro-kernel (8 output channels x 48 positions, 24 accumulators) multiplies a weight panel by the
// centred block. The epilogue applies rstd, the mean correction and the bias and stores straight to Y.
//
// Everything that uses AVX-512 sits in a target region; headers are included before it (see portable_avx2.cc).
#include <algorithm>
#include <cstdint>
#include <vector>

#include "aligned_buffer.h"
#include "backends.h"
#include "strip.h"

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))

#include <immintrin.h>

#if defined(__clang__)
#pragma clang attribute push(__attribute__((target("avx512f,avx512bw,avx512vl,avx512dq,fma,f16c"))), \
                             apply_to = function)
#else
#pragma GCC push_options
#pragma GCC target("avx512f,avx512bw,avx512vl,avx512dq,fma,f16c")
#endif

namespace ncnn_onnx::cpu {
namespace avx512 {

constexpr int64_t kLanes = 16;
constexpr int kVectors = 3;
constexpr int64_t kStrip = kLanes * kVectors;
static_assert(kStrip <= kMaxStripColumns, "StripMap holds at most kMaxStripColumns columns");

// Lanes of one vector that read consecutive input elements: lane l reads source[offset + l].
struct LoadOp {
  int64_t offset;
  __mmask16 mask;
};

// Lanes of one vector that land in consecutive elements of Y (one image): lane l goes to y[offset + l].
struct StoreOp {
  int64_t offset;
  __mmask16 mask;
};

struct Scratch {
  AlignedBuffer<float> strip;      // [fan_in][kStrip]
  std::vector<LoadOp> loads[kVectors];
  AlignedBuffer<int32_t> gather;   // [kernel_size][kStrip] offsets, for strided rows
  AlignedBuffer<uint16_t> gather_mask;  // [kernel_size][kVectors]
};

Scratch& ThreadScratch() {
  thread_local Scratch scratch;
  return scratch;
}

inline __mmask16 LaneMask(int64_t begin, int64_t end, int64_t vector) {
  // Lanes of `vector` whose strip column lies in [begin, end).
  const int64_t lo = std::max<int64_t>(begin - vector * kLanes, 0);
  const int64_t hi = std::min<int64_t>(end - vector * kLanes, kLanes);
  if (hi <= lo) return 0;
  const uint32_t bits = ((1u << (hi - lo)) - 1u) << lo;
  return static_cast<__mmask16>(bits);
}

template <typename T>
inline const T* At(const T* base, int64_t offset) {
  // Masked loads may start before the tensor (their masked-off lanes are never read); integer arithmetic
  // keeps that pointer formation defined.
  return reinterpret_cast<const T*>(reinterpret_cast<uintptr_t>(base) + static_cast<uintptr_t>(offset) * sizeof(T));
}

template <typename T>
inline T* At(T* base, int64_t offset) {
  return reinterpret_cast<T*>(reinterpret_cast<uintptr_t>(base) + static_cast<uintptr_t>(offset) * sizeof(T));
}

// One im2col row (one channel, one kernel offset) for the contiguous case.
inline __m512 LoadRow(const float* xc, const std::vector<LoadOp>& ops) {
  __m512 r = _mm512_setzero_ps();
  for (const LoadOp& op : ops) r = _mm512_mask_loadu_ps(r, op.mask, At(xc, op.offset));
  return r;
}

inline __m512 LoadRow(const Half* xc, const std::vector<LoadOp>& ops) {
  __m256i r = _mm256_setzero_si256();
  for (const LoadOp& op : ops) r = _mm256_mask_loadu_epi16(r, op.mask, At(xc, op.offset));
  return _mm512_cvtph_ps(r);
}

inline __m512 GatherRow(const float* xc, __m512i index, __mmask16 mask) {
  return _mm512_mask_i32gather_ps(_mm512_setzero_ps(), mask, index, xc, 4);
}

inline __m512 GatherRow(const Half* xc, __m512i index, __mmask16 mask) {
  // No 16-bit gather: gather the 32-bit words holding each half and keep the addressed half.
  alignas(64) int32_t idx[kLanes];
  _mm512_store_si512(idx, index);
  alignas(32) uint16_t h[kLanes];
  for (int l = 0; l < kLanes; ++l) h[l] = (mask >> l) & 1 ? xc[idx[l]] : 0;
  return _mm512_cvtph_ps(_mm256_load_si256(reinterpret_cast<const __m256i*>(h)));
}

// The load ops of one kernel offset for every run of the strip (last stride 1).
void BuildLoads(const ConvGeometry& g, const Spatial3& s, const StripMap& map, int64_t kk, Scratch& sc) {
  const int64_t k2 = kk % s.kernel[2];
  const int64_t k1 = (kk / s.kernel[2]) % s.kernel[1];
  const int64_t k0 = kk / (s.kernel[2] * s.kernel[1]);
  for (auto& ops : sc.loads) ops.clear();
  const int64_t image_stride = g.in_channels * g.input_plane;
  for (int r = 0; r < map.runs; ++r) {
    const Run& run = map.run[r];
    const int64_t i0 = run.row0 * s.stride[0] - s.pad[0] + k0 * s.dilation[0];
    const int64_t i1 = run.row1 * s.stride[1] - s.pad[1] + k1 * s.dilation[1];
    if (i0 < 0 || i0 >= s.input[0] || i1 < 0 || i1 >= s.input[1]) continue;
    const int64_t first = run.first - s.pad[2] + k2 * s.dilation[2];  // input index of column run.begin
    const int64_t lo = std::max<int64_t>(0, -first);
    const int64_t hi = std::min<int64_t>(run.length, s.input[2] - first);
    if (hi <= lo) continue;
    const int64_t source = run.image * image_stride + (i0 * s.input[1] + i1) * s.input[2] + first - run.begin;
    for (int v = 0; v < kVectors; ++v) {
      const __mmask16 mask = LaneMask(run.begin + lo, run.begin + hi, v);
      if (mask) sc.loads[v].push_back(LoadOp{source + v * kLanes, mask});
    }
  }
}

// Per-lane offsets and masks of one kernel offset (any last stride; offsets fit int32, checked by caller).
void BuildGather(const ConvGeometry& g, const Spatial3& s, const StripMap& map, int64_t kk, int32_t* offsets,
                 uint16_t* masks) {
  const int64_t k2 = kk % s.kernel[2];
  const int64_t k1 = (kk / s.kernel[2]) % s.kernel[1];
  const int64_t k0 = kk / (s.kernel[2] * s.kernel[1]);
  const int64_t image_stride = g.in_channels * g.input_plane;
  uint64_t valid = 0;  // bit j: strip column j reads an input element
  for (int64_t j = 0; j < kStrip; ++j) offsets[j] = 0;
  for (int r = 0; r < map.runs; ++r) {
    const Run& run = map.run[r];
    const int64_t i0 = run.row0 * s.stride[0] - s.pad[0] + k0 * s.dilation[0];
    const int64_t i1 = run.row1 * s.stride[1] - s.pad[1] + k1 * s.dilation[1];
    if (i0 < 0 || i0 >= s.input[0] || i1 < 0 || i1 >= s.input[1]) continue;
    const int64_t base = run.image * image_stride + (i0 * s.input[1] + i1) * s.input[2];
    for (int64_t t = 0; t < run.length; ++t) {
      const int64_t i2 = (run.first + t) * s.stride[2] - s.pad[2] + k2 * s.dilation[2];
      if (i2 < 0 || i2 >= s.input[2]) continue;
      offsets[run.begin + t] = static_cast<int32_t>(base + i2);
      valid |= uint64_t{1} << (run.begin + t);
    }
  }
  for (int v = 0; v < kVectors; ++v) masks[v] = static_cast<uint16_t>(valid >> (v * kLanes));
}

// Writes the strip's im2col block and returns its column sums (vectors 0..2).
template <typename T>
void PackStrip(const T* x_group, const ConvGeometry& g, const Spatial3& s, const StripMap& map, bool gather,
               Scratch& sc, float* strip, __m512 (&sum)[kVectors]) {
  const int64_t k_count = g.kernel_size;
  const int64_t channels = g.group_in_channels;
  const int64_t plane = g.input_plane;
  const int64_t row_step = k_count * kStrip;  // from channel c to c + 1 at one kernel offset
  __m512 even[kVectors], odd[kVectors];
  for (int v = 0; v < kVectors; ++v) even[v] = odd[v] = _mm512_setzero_ps();
  int32_t* gather_offsets = gather ? sc.gather.Reserve(static_cast<size_t>(kStrip)) : nullptr;
  alignas(8) uint16_t gather_masks[kVectors];
  for (int64_t kk = 0; kk < k_count; ++kk) {
    float* row = strip + kk * kStrip;
    const T* xc = x_group;
    if (!gather) {
      BuildLoads(g, s, map, kk, sc);
      const std::vector<LoadOp>& l0 = sc.loads[0];
      const std::vector<LoadOp>& l1 = sc.loads[1];
      const std::vector<LoadOp>& l2 = sc.loads[2];
      int64_t c = 0;
      // Two channels per step: two independent chains of sums.
      for (; c + 1 < channels; c += 2, xc += 2 * plane, row += 2 * row_step) {
        const __m512 a0 = LoadRow(xc, l0), a1 = LoadRow(xc, l1), a2 = LoadRow(xc, l2);
        const __m512 b0 = LoadRow(xc + plane, l0), b1 = LoadRow(xc + plane, l1), b2 = LoadRow(xc + plane, l2);
        _mm512_store_ps(row, a0);
        _mm512_store_ps(row + kLanes, a1);
        _mm512_store_ps(row + 2 * kLanes, a2);
        _mm512_store_ps(row + row_step, b0);
        _mm512_store_ps(row + row_step + kLanes, b1);
        _mm512_store_ps(row + row_step + 2 * kLanes, b2);
        even[0] = _mm512_add_ps(even[0], a0);
        even[1] = _mm512_add_ps(even[1], a1);
        even[2] = _mm512_add_ps(even[2], a2);
        odd[0] = _mm512_add_ps(odd[0], b0);
        odd[1] = _mm512_add_ps(odd[1], b1);
        odd[2] = _mm512_add_ps(odd[2], b2);
      }
      if (c < channels) {
        const __m512 a0 = LoadRow(xc, l0), a1 = LoadRow(xc, l1), a2 = LoadRow(xc, l2);
        _mm512_store_ps(row, a0);
        _mm512_store_ps(row + kLanes, a1);
        _mm512_store_ps(row + 2 * kLanes, a2);
        even[0] = _mm512_add_ps(even[0], a0);
        even[1] = _mm512_add_ps(even[1], a1);
        even[2] = _mm512_add_ps(even[2], a2);
      }
    } else {
      BuildGather(g, s, map, kk, gather_offsets, gather_masks);
      __m512i index[kVectors];
      for (int v = 0; v < kVectors; ++v) index[v] = _mm512_loadu_si512(gather_offsets + v * kLanes);
      for (int64_t c = 0; c < channels; ++c, xc += plane, row += row_step) {
        for (int v = 0; v < kVectors; ++v) {
          const __m512 a = GatherRow(xc, index[v], static_cast<__mmask16>(gather_masks[v]));
          _mm512_store_ps(row + v * kLanes, a);
          even[v] = _mm512_add_ps(even[v], a);
        }
      }
    }
  }
  for (int v = 0; v < kVectors; ++v) sum[v] = _mm512_add_ps(even[v], odd[v]);
}

// Centres the strip in place (when `center`) and returns per column rstd and the mean correction; see
// portable_impl.inc's Standardize for why y = (W.strip - correction * sum(W)) * rstd + b is exact.
void Standardize(float* strip, int64_t fan_in, const __m512 (&sum)[kVectors], const ConvGeometry& g, int vectors,
                 __m512 (&rstd)[kVectors], __m512 (&correction)[kVectors]) {
  const __m512 inv = _mm512_set1_ps(1.0f / static_cast<float>(fan_in));
  __m512 mean[kVectors], s1[kVectors], s2[kVectors], t1[kVectors], t2[kVectors];
  for (int v = 0; v < kVectors; ++v) {
    mean[v] = _mm512_mul_ps(sum[v], inv);
    s1[v] = s2[v] = t1[v] = t2[v] = _mm512_setzero_ps();
  }
  int64_t i = 0;
  float* row = strip;
  if (g.center) {
    for (; i + 1 < fan_in; i += 2, row += 2 * kStrip) {
      for (int v = 0; v < kVectors; ++v) {
        const __m512 d = _mm512_sub_ps(_mm512_load_ps(row + v * kLanes), mean[v]);
        const __m512 e = _mm512_sub_ps(_mm512_load_ps(row + kStrip + v * kLanes), mean[v]);
        _mm512_store_ps(row + v * kLanes, d);
        _mm512_store_ps(row + kStrip + v * kLanes, e);
        s1[v] = _mm512_add_ps(s1[v], d);
        s2[v] = _mm512_fmadd_ps(d, d, s2[v]);
        t1[v] = _mm512_add_ps(t1[v], e);
        t2[v] = _mm512_fmadd_ps(e, e, t2[v]);
      }
    }
    for (; i < fan_in; ++i, row += kStrip) {
      for (int v = 0; v < kVectors; ++v) {
        const __m512 d = _mm512_sub_ps(_mm512_load_ps(row + v * kLanes), mean[v]);
        _mm512_store_ps(row + v * kLanes, d);
        s1[v] = _mm512_add_ps(s1[v], d);
        s2[v] = _mm512_fmadd_ps(d, d, s2[v]);
      }
    }
  } else if (g.scale) {
    for (; i < fan_in; ++i, row += kStrip) {
      for (int v = 0; v < kVectors; ++v) {
        const __m512 d = _mm512_sub_ps(_mm512_load_ps(row + v * kLanes), mean[v]);
        s1[v] = _mm512_add_ps(s1[v], d);
        s2[v] = _mm512_fmadd_ps(d, d, s2[v]);
      }
    }
  }
  (void)vectors;
  const __m512 eps = _mm512_set1_ps(g.epsilon);
  const __m512 one = _mm512_set1_ps(1.0f);
  for (int v = 0; v < kVectors; ++v) {
    const __m512 r = _mm512_mul_ps(_mm512_add_ps(s1[v], t1[v]), inv);
    __m512 var = _mm512_fnmadd_ps(r, r, _mm512_mul_ps(_mm512_add_ps(s2[v], t2[v]), inv));
    var = _mm512_max_ps(var, _mm512_setzero_ps());
    rstd[v] = g.scale ? _mm512_div_ps(one, _mm512_sqrt_ps(_mm512_add_ps(var, eps))) : one;
    correction[v] = g.center ? r : _mm512_setzero_ps();
  }
}

// acc[m][v] = sum_k a[k * kPanelRows + m] * b[k * kStrip + v * kLanes ...]
template <int MR, int NV>
inline void MicroKernel(int64_t fan_in, const float* __restrict a, const float* __restrict b,
                        __m512 (&acc)[kPanelRows][kVectors]) {
  __m512 c[MR][NV];
#pragma GCC unroll 8
  for (int m = 0; m < MR; ++m)
#pragma GCC unroll 3
    for (int v = 0; v < NV; ++v) c[m][v] = _mm512_setzero_ps();
#pragma GCC unroll 2
  for (int64_t k = 0; k < fan_in; ++k) {
    __m512 bv[NV];
#pragma GCC unroll 3
    for (int v = 0; v < NV; ++v) bv[v] = _mm512_load_ps(b + k * kStrip + v * kLanes);
    const float* ak = a + k * kPanelRows;
#pragma GCC unroll 8
    for (int m = 0; m < MR; ++m) {
      const __m512 am = _mm512_set1_ps(ak[m]);
#pragma GCC unroll 3
      for (int v = 0; v < NV; ++v) c[m][v] = _mm512_fmadd_ps(am, bv[v], c[m][v]);
    }
  }
#pragma GCC unroll 8
  for (int m = 0; m < MR; ++m)
#pragma GCC unroll 3
    for (int v = 0; v < NV; ++v) acc[m][v] = c[m][v];
}

template <int MR>
void MicroKernelRows(int vectors, int64_t fan_in, const float* a, const float* b, __m512 (&acc)[kPanelRows][kVectors]) {
  switch (vectors) {
    case 1: MicroKernel<MR, 1>(fan_in, a, b, acc); break;
    case 2: MicroKernel<MR, 2>(fan_in, a, b, acc); break;
    default: MicroKernel<MR, 3>(fan_in, a, b, acc); break;
  }
}

void Multiply(int rows, int vectors, int64_t fan_in, const float* a, const float* b, __m512 (&acc)[kPanelRows][kVectors]) {
  switch (rows) {
    case 1: MicroKernelRows<1>(vectors, fan_in, a, b, acc); break;
    case 2: MicroKernelRows<2>(vectors, fan_in, a, b, acc); break;
    case 3: MicroKernelRows<3>(vectors, fan_in, a, b, acc); break;
    case 4: MicroKernelRows<4>(vectors, fan_in, a, b, acc); break;
    case 5: MicroKernelRows<5>(vectors, fan_in, a, b, acc); break;
    case 6: MicroKernelRows<6>(vectors, fan_in, a, b, acc); break;
    case 7: MicroKernelRows<7>(vectors, fan_in, a, b, acc); break;
    default: MicroKernelRows<8>(vectors, fan_in, a, b, acc); break;
  }
}

inline void StoreLanes(float* p, __mmask16 mask, __m512 v) {
  if (mask == 0xffff) {
    _mm512_storeu_ps(p, v);
  } else {
    _mm512_mask_storeu_ps(p, mask, v);
  }
}

inline void StoreLanes(Half* p, __mmask16 mask, __m512 v) {
  const __m256i h = _mm512_cvtps_ph(v, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  _mm256_mask_storeu_epi16(p, mask, h);
}

template <typename T>
void RunTask(const Job<T, float>& job, int64_t task) {
  const ConvGeometry& g = *job.geometry;
  const Plan& plan = job.plan;
  const TaskIndex t = Locate(plan, task);
  const Spatial3 s = RightAlign(g);
  const int64_t fan_in = g.fan_in;
  const int64_t out_plane = g.output_plane;
  const int64_t per_group = g.group_out_channels;
  // Stride 1 along the last dim reads contiguous runs; other strides gather with 32-bit offsets.
  const bool gather = s.stride[2] != 1;
  const T* x_group = job.x + t.group * g.group_in_channels * g.input_plane;
  Scratch& sc = ThreadScratch();
  float* strip = sc.strip.Reserve(static_cast<size_t>(fan_in * kStrip));
  StripMap map;
  const int64_t tile_begin = t.tile * plan.tile_columns;
  const int64_t tile_end = std::min(tile_begin + plan.tile_columns, plan.columns);
  const int64_t panel_begin = t.chunk * plan.chunk_panels;
  const int64_t panel_end = std::min(panel_begin + plan.chunk_panels, plan.panels);
  for (int64_t first = tile_begin; first < tile_end; first += kStrip) {
    const int64_t width = std::min(kStrip, tile_end - first);
    const int vectors = static_cast<int>((width + kLanes - 1) / kLanes);
    MapStrip(g, s, first, width, &map);
    __m512 sum[kVectors], rstd[kVectors], correction[kVectors];
    PackStrip(x_group, g, s, map, gather, sc, strip, sum);
    Standardize(strip, fan_in, sum, g, vectors, rstd, correction);
    StoreOp stores[kVectors][kMaxStripColumns];
    int store_count[kVectors] = {0, 0, 0};
    for (int sg = 0; sg < map.segments; ++sg) {
      const Segment& seg = map.segment[sg];
      for (int v = 0; v < vectors; ++v) {
        const __mmask16 mask = LaneMask(seg.begin, seg.end, v);
        if (mask) stores[v][store_count[v]++] = StoreOp{seg.y_offset - seg.begin + v * kLanes, mask};
      }
    }
    for (int64_t panel = panel_begin; panel < panel_end; ++panel) {
      const float* a = job.panels + (t.group * plan.panels + panel) * fan_in * kPanelRows;
      const int rows = static_cast<int>(std::min(kPanelRows, per_group - panel * kPanelRows));
      __m512 acc[kPanelRows][kVectors];
      Multiply(rows, vectors, fan_in, a, strip, acc);
      for (int m = 0; m < rows; ++m) {
        const int64_t channel = t.group * per_group + panel * kPanelRows + m;
        const __m512 w_sum = _mm512_set1_ps(job.weight_sums[channel]);
        const __m512 bias = _mm512_set1_ps(job.bias != nullptr ? job.bias[channel] : 0.0f);
        T* y_channel = job.y + channel * out_plane;
        for (int v = 0; v < vectors; ++v) {
          const __m512 centred = _mm512_fnmadd_ps(correction[v], w_sum, acc[m][v]);
          const __m512 out = _mm512_fmadd_ps(centred, rstd[v], bias);
          for (int k = 0; k < store_count[v]; ++k) StoreLanes(At(y_channel, stores[v][k].offset), stores[v][k].mask, out);
        }
      }
    }
  }
}

void RunFloat(const Job<float, float>& job, int64_t task) { RunTask(job, task); }
void RunHalf(const Job<Half, float>& job, int64_t task) { RunTask(job, task); }

}  // namespace avx512
}  // namespace ncnn_onnx::cpu

#if defined(__clang__)
#pragma clang attribute pop
#else
#pragma GCC pop_options
#endif

namespace ncnn_onnx::cpu {
namespace avx512 {

// Strided rows gather with 32-bit offsets from the group's first channel of image 0.
bool Accepts(const ConvGeometry& g) {
  return g.stride[g.ndim - 1] == 1 || g.batch * g.in_channels * g.input_plane <= INT32_MAX;
}

}  // namespace avx512

Backend Avx512Backend() {
  Backend b = PortableBackend();  // float64 stays portable: it is for reference use
  b.isa = Isa::kAvx512;
  b.name = "avx512";
  b.f32 = {avx512::kStrip, &avx512::RunFloat, &avx512::Accepts};
  b.f16 = {avx512::kStrip, &avx512::RunHalf, &avx512::Accepts};
  return b;
}

}  // namespace ncnn_onnx::cpu

#else

namespace ncnn_onnx::cpu {
Backend Avx512Backend() { return PortableBackend(); }
}  // namespace ncnn_onnx::cpu

#endif
