// The AVX-512 backend (float32 and float16 tensors, float32 arithmetic).
//
// Prepare tasks reduce X over each group's channels to per-location moments, from which each strip's
// patch statistics follow exactly in K reads (location_math.h, shared with avx2.cc). The strip's im2col
// block is then written once, already centred on the provisional mean mu'; the exact residual mean
// r = mean(v - mu') enters the epilogue as y = (W.(v - mu') - r sum(W)) * rstd + b.
//
// A strip is up to 48 columns = 3 vectors of 16 output positions; a task's columns are spread evenly over
// its strips in whole vectors (location_strip.h). Along the last spatial dim a run of positions reads
// contiguous input (stride 1), so each row is a few masked loads whose masks also produce the zero
// padding; with stride 2 each load reads a window of twice the lanes and keeps its even elements (a stem
// or a downsampling layer; gathers cost as much as the product there). Other strides gather. The
// micro-kernel multiplies 8 output channels by up to 48 columns with 24 accumulators; the epilogue stores
// straight to Y. The next weight panel's rows are prefetched a call
// ahead, since large layers' weights live in L3.
//
// Everything that uses AVX-512 sits in a target region; headers are included before it (see avx2.cc).
#include <algorithm>
#include <cstdint>
#include <cstring>
#include <limits>
#include <vector>

#include "aligned_buffer.h"
#include "backends.h"
#include "direct_plan.h"
#include "location_strip.h"
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
namespace {

struct VectorIsa {
  static constexpr int kRegisters = 32;  // vector registers the compiler may allocate
  static constexpr int kLanes = 16;
  typedef float Vector __attribute__((vector_size(4 * kLanes)));
  typedef int32_t Compared __attribute__((vector_size(4 * kLanes)));  // what comparing Vectors gives
  static bool Any(Compared m) {
    const __m512i bits = reinterpret_cast<__m512i>(m);
    return _mm512_test_epi32_mask(bits, bits) != 0;
  }
  static Vector Sqrt(Vector v) { return reinterpret_cast<Vector>(_mm512_sqrt_ps(reinterpret_cast<__m512>(v))); }
  // 1/sqrt(x) to about an ulp: the 14-bit estimate and one Newton step, a few cycles where a division and
  // a square root cost about twenty per vector. 0 and inf keep the estimate, which is exact there (the
  // step would make NaN of them).
  static Vector ReciprocalSqrt(Vector x) {
    const __m512 v = reinterpret_cast<__m512>(x);
    const __m512 r = _mm512_rsqrt14_ps(v);
    const __m512 half_xr = _mm512_mul_ps(_mm512_mul_ps(v, _mm512_set1_ps(0.5f)), r);
    const __m512 step = _mm512_mul_ps(r, _mm512_fnmadd_ps(half_xr, r, _mm512_set1_ps(1.5f)));
    const __mmask16 exact = _mm512_fpclass_ps_mask(v, 0x02 | 0x04 | 0x08);  // +0, -0, +inf
    return reinterpret_cast<Vector>(_mm512_mask_mov_ps(step, exact, r));
  }
  static void ToHalf(const Vector& v, Half* out) {
    const __m256i h = _mm512_cvtps_ph(reinterpret_cast<__m512>(v), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(out), h);
  }
  // `count` (1..kLanes) consecutive values and zeros after them; nothing past them is read or written.
  static Vector Load(const float* p, int64_t count) {
    return reinterpret_cast<Vector>(_mm512_maskz_loadu_ps(Mask(count), p));
  }
  static Vector Load(const Half* p, int64_t count) {
    return reinterpret_cast<Vector>(_mm512_cvtph_ps(_mm256_maskz_loadu_epi16(Mask(count), p)));
  }
  static void Store(float* p, Vector v, int64_t count) {
    _mm512_mask_storeu_ps(p, Mask(count), reinterpret_cast<__m512>(v));
  }
  static __mmask16 Mask(int64_t count) { return static_cast<__mmask16>((1u << count) - 1u); }
};

}  // namespace
}  // namespace ncnn_onnx::cpu

#include "activate.h"
#include "direct.h"
#include "location_math.h"

namespace ncnn_onnx::cpu {
namespace avx512 {

constexpr int64_t kLanes = 16;
constexpr int kVectors = 3;
constexpr int64_t kStrip = kLanes * kVectors;
constexpr int64_t kBlockRows = 128;    // patch rows per strip block: 24 KiB, half of L1
constexpr int64_t kPanelFloats = kPanelRows * kStrip;
static_assert(kStrip <= kMaxStripColumns, "StripMap holds at most kMaxStripColumns columns");
static_assert(kBlockRows >= kStripStatsMaxChannels, "a pointwise group with statistics in the strip is one block");

inline __m512 Native(Lanes v) { return reinterpret_cast<__m512>(v); }
inline Lanes AsLanes(__m512 v) { return reinterpret_cast<Lanes>(v); }
using Stats = ColumnStats<kVectors>;

// Lanes of one vector that read evenly spaced elements: lane l reads x[x_offset + S * l] (from the group's
// first channel of image 0) and the location statistics at stats_offset + S * l (from the group's maps of
// image 0), S being the last stride (1 or 2). lo and hi are the elements those lanes take of the
// window's first and second kLanes (with S = 1 lo is the lane mask itself).
struct LoadOp {
  int64_t x_offset;
  int64_t stats_offset;
  __mmask16 mask;
  __mmask16 lo, hi;
};

// Lanes of one vector that land in consecutive elements of Y (one image): lane l goes to y[offset + l].
struct StoreOp {
  int64_t offset;
  __mmask16 mask;
};

// The usual case: at most two runs meet in a vector, so its row is two masked loads without a loop or
// branch (an unused second load has mask 0 and the first one's address).
struct LoadPair {
  int64_t x_offset[2];
  int64_t stats_offset[2];
  __mmask16 mask[2];
  __mmask16 lo[2], hi[2];
};

struct Scratch {
  AlignedBuffer<float> strip;        // one block of the im2col strip: [rows][kStrip]
  AlignedBuffer<float> partial;      // partial sums of every panel of the chunk: [panel][kPanelFloats]
  std::vector<LoadOp> loads;         // rows with stride 1 or 2: ops of (kernel offset kk, vector v) ...
  std::vector<int32_t> load_begin;   // ... are loads[load_begin[kk * kVectors + v] .. next)
  std::vector<LoadPair> pairs;       // the same as pairs [kk * kVectors + v], when `paired`
  bool paired = false;
  AlignedBuffer<int32_t> x_index;    // other strides: [kernel_size][kStrip] offsets into x ...
  AlignedBuffer<int32_t> stats_index;  // ... and into the location statistics
  std::vector<uint16_t> gather_mask;   // [kernel_size][kVectors]
};

Scratch& ThreadScratch() {
  thread_local Scratch scratch;
  return scratch;
}

inline __mmask16 LaneMask(int64_t begin, int64_t end, int64_t vector) {
  return static_cast<__mmask16>(LaneBits<kLanes>(begin, end, vector));
}

inline __m512 Window(const float* p, __mmask16 elements) { return _mm512_maskz_loadu_ps(elements, p); }

inline __m512 Window(const Half* p, __mmask16 elements) {
  return _mm512_cvtph_ps(_mm256_maskz_loadu_epi16(elements, p));
}

// `old` with lanes `mask` replaced by p[S * l]. Only the lanes' own elements are touched (a masked-off
// element never faults), so a run may start or end anywhere, even past the tensor's ends.
template <int S, typename T>
inline __m512 ReadRun(__m512 old, const T* p, __mmask16 mask, __mmask16 lo, __mmask16 hi) {
  if constexpr (S == 1) {
    return _mm512_mask_mov_ps(old, mask, Window(p, mask));
  } else {
    static_assert(S == 2, "strided loads read windows of two vectors");
    const __m512i even = _mm512_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30);
    return _mm512_mask_mov_ps(old, mask, _mm512_permutex2var_ps(Window(p, lo), even, Window(At(p, kLanes), hi)));
  }
}

// One row of the strip (16 lanes): the ops of one (kernel offset, vector) fill disjoint lanes, the rest is 0.
template <int S, typename T>
inline __m512 LoadX(const T* base, const LoadOp* op, const LoadOp* end) {
  __m512 r = _mm512_setzero_ps();
  for (; op != end; ++op) r = ReadRun<S>(r, At(base, op->x_offset), op->mask, op->lo, op->hi);
  return r;
}

template <int S, typename T>
inline __m512 LoadX(const T* base, const LoadPair& p) {
  const __m512 first = ReadRun<S>(_mm512_setzero_ps(), At(base, p.x_offset[0]), p.mask[0], p.lo[0], p.hi[0]);
  return ReadRun<S>(first, At(base, p.x_offset[1]), p.mask[1], p.lo[1], p.hi[1]);
}

template <int S>
inline __m512 LoadStats(const float* base, const LoadPair& p) {
  const __m512 first = ReadRun<S>(_mm512_setzero_ps(), At(base, p.stats_offset[0]), p.mask[0], p.lo[0], p.hi[0]);
  return ReadRun<S>(first, At(base, p.stats_offset[1]), p.mask[1], p.lo[1], p.hi[1]);
}

template <int S>
inline __m512 LoadStats(const float* base, const LoadOp* op, const LoadOp* end) {
  __m512 r = _mm512_setzero_ps();
  for (; op != end; ++op) r = ReadRun<S>(r, At(base, op->stats_offset), op->mask, op->lo, op->hi);
  return r;
}

inline __m512 Gather(const float* base, __m512i index, __mmask16 mask) {
  return _mm512_mask_i32gather_ps(_mm512_setzero_ps(), mask, index, base, 4);
}

inline __m512 Gather(const Half* base, __m512i index, __mmask16 mask) {
  // No 16-bit gather: read the addressed halves one by one.
  alignas(64) int32_t idx[kLanes];
  _mm512_store_si512(idx, index);
  alignas(32) uint16_t h[kLanes];
  for (int l = 0; l < kLanes; ++l) h[l] = (mask >> l) & 1 ? base[idx[l]] : 0;
  return _mm512_cvtph_ps(_mm256_load_si256(reinterpret_cast<const __m256i*>(h)));
}

// Load ops of every kernel offset for a strip whose last stride is 1 or 2.
template <int S>
void BuildLoads(const ConvGeometry& g, const Spatial3& s, const StripMap& map, Scratch& sc) {
  constexpr int64_t stride = S;
  sc.loads.clear();
  sc.load_begin.assign(static_cast<size_t>(g.kernel_size * kVectors + 1), 0);
  RowSpan spans[kMaxStripColumns];
  int64_t k[3] = {0, 0, 0};
  for (int64_t kk = 0; kk < g.kernel_size; ++kk, NextKernelOffset(s, k)) {
    const int count = RowSpans<S>(g, s, map, k, spans);
    for (int v = 0; v < kVectors; ++v) {
      sc.load_begin[static_cast<size_t>(kk * kVectors + v)] = static_cast<int32_t>(sc.loads.size());
      for (int r = 0; r < count; ++r) {
        const __mmask16 mask = LaneMask(spans[r].begin, spans[r].end, v);
        if (!mask) continue;
        const int64_t lane0 = stride * v * kLanes;
        const __mmask16 lo = stride == 1 ? mask : static_cast<__mmask16>(EvenElements(mask & 0xffu));
        const __mmask16 hi = stride == 1 ? 0 : static_cast<__mmask16>(EvenElements(mask >> 8u));
        sc.loads.push_back(LoadOp{spans[r].x_offset + lane0, spans[r].stats_offset + lane0, mask, lo, hi});
      }
    }
  }
  sc.load_begin.back() = static_cast<int32_t>(sc.loads.size());
  sc.paired = true;
  sc.pairs.resize(static_cast<size_t>(g.kernel_size * kVectors));
  for (size_t i = 0; i + 1 < sc.load_begin.size(); ++i) {
    const int32_t begin = sc.load_begin[i], end = sc.load_begin[i + 1];
    if (end - begin > 2) {
      sc.paired = false;
      return;
    }
    LoadPair& pair = sc.pairs[i];
    for (int k = 0; k < 2; ++k) {
      pair.x_offset[k] = pair.stats_offset[k] = 0;
      pair.mask[k] = pair.lo[k] = pair.hi[k] = 0;
      if (end == begin) continue;  // no op at all (the strip reads only padding here): loads may be empty
      // An unused second slot repeats the first op's offsets under an empty mask.
      const LoadOp& op = sc.loads[static_cast<size_t>(begin + std::min(k, end - begin - 1))];
      pair.x_offset[k] = op.x_offset;
      pair.stats_offset[k] = op.stats_offset;
      const bool used = begin + k < end;
      pair.mask[k] = used ? op.mask : 0;
      pair.lo[k] = used ? op.lo : 0;
      pair.hi[k] = used ? op.hi : 0;
    }
  }
}

// Per-lane offsets of every kernel offset for a strip with a last stride > 2 (offsets fit int32:
// LocationStatsAccepted).
void BuildGathers(const ConvGeometry& g, const Spatial3& s, const StripMap& map, Scratch& sc) {
  const size_t entries = static_cast<size_t>(g.kernel_size * kStrip);
  int32_t* x_index = sc.x_index.Reserve(entries);
  int32_t* stats_index = sc.stats_index.Reserve(entries);
  sc.gather_mask.assign(static_cast<size_t>(g.kernel_size * kVectors), 0);
  for (int64_t kk = 0; kk < g.kernel_size; ++kk) {
    const uint64_t valid = ColumnOffsets(g, s, map, kk, kStrip, x_index + kk * kStrip, stats_index + kk * kStrip);
    for (int v = 0; v < kVectors; ++v) {
      sc.gather_mask[static_cast<size_t>(kk * kVectors + v)] = static_cast<uint16_t>(valid >> (v * kLanes));
    }
  }
}

// Even tiling leaves many strips one or two vectors short: the vectors past the strip are neither
// loaded nor written, since the micro-kernel never reads them.
template <int NV, int S, typename T>
void PackPaired(const T* x_group, const ConvGeometry& g, const Scratch& sc, const Stats& st, int64_t c_begin,
                int64_t c_end, float* row) {
  const LoadPair* pairs = sc.pairs.data();
  for (int64_t c = c_begin; c < c_end; ++c) {
    const T* xc = x_group + c * g.input_plane;
    const LoadPair* p = pairs;
    for (int64_t kk = 0; kk < g.kernel_size; ++kk, row += kStrip, p += kVectors) {
#pragma GCC unroll 3
      for (int v = 0; v < NV; ++v) {
        _mm512_store_ps(row + v * kLanes, _mm512_sub_ps(LoadX<S>(xc, p[v]), Native(st.mean[v])));
      }
    }
  }
}

// Writes rows [c_begin * kernel_size, c_end * kernel_size) of the strip's im2col block (row i = c *
// kernel_size + kk), centred on st.mean, to `block`; of each row only the strip's vectors. S: the last
// stride when it is 1 or 2 (loads), else 0 (gathers).
template <int S, typename T>
void PackBlock(const T* x_group, const ConvGeometry& g, const Scratch& sc, const Stats& st, int64_t c_begin,
               int64_t c_end, int vectors, float* block) {
  const int64_t plane = g.input_plane;
  float* row = block;
  if constexpr (S == 0) {
    for (int64_t c = c_begin; c < c_end; ++c) {
      const T* xc = x_group + c * plane;
      for (int64_t kk = 0; kk < g.kernel_size; ++kk, row += kStrip) {
        for (int v = 0; v < vectors; ++v) {
          const __m512i index = _mm512_loadu_si512(sc.x_index.data() + kk * kStrip + v * kLanes);
          const __mmask16 mask = static_cast<__mmask16>(sc.gather_mask[static_cast<size_t>(kk * kVectors + v)]);
          _mm512_store_ps(row + v * kLanes, _mm512_sub_ps(Gather(xc, index, mask), Native(st.mean[v])));
        }
      }
    }
  } else if (sc.paired) {
    switch (vectors) {
      case 1: PackPaired<1, S>(x_group, g, sc, st, c_begin, c_end, block); break;
      case 2: PackPaired<2, S>(x_group, g, sc, st, c_begin, c_end, block); break;
      default: PackPaired<3, S>(x_group, g, sc, st, c_begin, c_end, block); break;
    }
  } else {
    const LoadOp* ops = sc.loads.data();
    const int32_t* begin = sc.load_begin.data();
    for (int64_t c = c_begin; c < c_end; ++c) {
      const T* xc = x_group + c * plane;
      for (int64_t kk = 0; kk < g.kernel_size; ++kk, row += kStrip) {
        const int32_t* b = begin + kk * kVectors;
        for (int v = 0; v < vectors; ++v) {
          const __m512 value = LoadX<S>(xc, ops + b[v], ops + b[v + 1]);
          _mm512_store_ps(row + v * kLanes, _mm512_sub_ps(value, Native(st.mean[v])));
        }
      }
    }
  }
}

// acc[m][v] (+)= sum_k a[k * kPanelRows + m] * b[k * kStrip + v * kLanes ...]; `acc` holds the partial
// sums of earlier row blocks when `accumulate`.
template <int MR, int NV>
inline void MicroKernel(int64_t rows, const float* __restrict a, const float* __restrict b, bool accumulate,
                        __m512 (&acc)[kPanelRows][kVectors], const float* next) {
  __m512 c[MR][NV];
#pragma GCC unroll 8
  for (int m = 0; m < MR; ++m)
#pragma GCC unroll 3
    for (int v = 0; v < NV; ++v) c[m][v] = accumulate ? acc[m][v] : _mm512_setzero_ps();
#pragma GCC unroll 2
  for (int64_t k = 0; k < rows; ++k) {
    __m512 bv[NV];
#pragma GCC unroll 3
    for (int v = 0; v < NV; ++v) bv[v] = _mm512_load_ps(b + k * kStrip + v * kLanes);
    const float* ak = a + k * kPanelRows;
    _mm_prefetch(reinterpret_cast<const char*>(next + k * kPanelRows), _MM_HINT_T0);
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
void MicroKernelColumns(int vectors, int64_t rows, const float* a, const float* b, bool accumulate,
                        __m512 (&acc)[kPanelRows][kVectors], const float* next) {
  switch (vectors) {
    case 1: MicroKernel<MR, 1>(rows, a, b, accumulate, acc, next); break;
    case 2: MicroKernel<MR, 2>(rows, a, b, accumulate, acc, next); break;
    default: MicroKernel<MR, 3>(rows, a, b, accumulate, acc, next); break;
  }
}

// channels: output channels of the panel (1..8); vectors: strip vectors (1..3); rows: patch rows (k);
// next: the weight rows to prefetch, one per patch row.
void Multiply(int channels, int vectors, int64_t rows, const float* a, const float* b, bool accumulate,
              __m512 (&acc)[kPanelRows][kVectors], const float* next) {
  switch (channels) {
    case 1: MicroKernelColumns<1>(vectors, rows, a, b, accumulate, acc, next); break;
    case 2: MicroKernelColumns<2>(vectors, rows, a, b, accumulate, acc, next); break;
    case 3: MicroKernelColumns<3>(vectors, rows, a, b, accumulate, acc, next); break;
    case 4: MicroKernelColumns<4>(vectors, rows, a, b, accumulate, acc, next); break;
    case 5: MicroKernelColumns<5>(vectors, rows, a, b, accumulate, acc, next); break;
    case 6: MicroKernelColumns<6>(vectors, rows, a, b, accumulate, acc, next); break;
    case 7: MicroKernelColumns<7>(vectors, rows, a, b, accumulate, acc, next); break;
    default: MicroKernelColumns<8>(vectors, rows, a, b, accumulate, acc, next); break;
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

// One task; S: the last stride when it is 1 or 2 (loads), else 0 (gathers).
template <int S, typename T>
void RunTask(const Job<T, float>& job, int64_t task) {
  const ConvGeometry& g = *job.geometry;
  const Plan& plan = job.plan;
  const TaskIndex t = Locate(plan, task);
  const Spatial3 s = RightAlign(g);
  const int64_t fan_in = g.fan_in;
  const int64_t plane = g.input_plane;
  const int64_t out_plane = g.output_plane;
  const int64_t per_group = g.group_out_channels;
  const T* x_group = job.x + t.group * g.group_in_channels * plane;
  const float* stats_group = job.location_stats + t.group * 3 * plane;
  Scratch& sc = ThreadScratch();
  const int64_t block_channels = std::max<int64_t>(1, kBlockRows / g.kernel_size);
  float* strip = sc.strip.Reserve(static_cast<size_t>(std::min(block_channels, g.group_in_channels) * g.kernel_size * kStrip));
  const int64_t panel_count = std::min(plan.chunk_panels, plan.panels);
  float* partial = sc.partial.Reserve(static_cast<size_t>(std::max<int64_t>(panel_count, 1) * kPanelFloats));
  StripMap map;
  const TileStrips tile = SpreadTile(plan, t.tile, kLanes, kVectors);
  const int64_t panel_begin = t.chunk * plan.chunk_panels;
  const int64_t panel_end = std::min(panel_begin + plan.chunk_panels, plan.panels);
  // A pointwise layer's strips take their statistics from their own blocks (StripStatistics).
  const bool in_strip = S != 0 && StatisticsInStrip(g);
  for (int64_t strip_index = 0; strip_index < tile.strips; ++strip_index) {
    const StripSpan span = StripOf(plan, tile, strip_index, kLanes);
    const int vectors = span.vectors;
    MapStrip(g, s, span.first, span.width, &map);
    Stats st;
    if constexpr (S != 0) {
      BuildLoads<S>(g, s, map, sc);
      const LoadOp* ops = sc.loads.data();
      const int32_t* begin = sc.load_begin.data();
      if (in_strip) {
        st = Stats{};  // raw rows first (PackBlock centres on st.mean), statistics below
      } else if (sc.paired) {
        const LoadPair* pairs = sc.pairs.data();
        st = ColumnStatistics<kVectors>(g, vectors, [&](int which, int64_t kk, int v) {
          return AsLanes(LoadStats<S>(stats_group + which * plane, pairs[kk * kVectors + v]));
        });
      } else {
        st = ColumnStatistics<kVectors>(g, vectors, [&](int which, int64_t kk, int v) {
          const int32_t* b = begin + kk * kVectors + v;
          return AsLanes(LoadStats<S>(stats_group + which * plane, ops + b[0], ops + b[1]));
        });
      }
    } else {
      BuildGathers(g, s, map, sc);
      st = ColumnStatistics<kVectors>(g, vectors, [&](int which, int64_t kk, int v) {
        const __m512i index = _mm512_loadu_si512(sc.stats_index.data() + kk * kStrip + v * kLanes);
        const __mmask16 mask = static_cast<__mmask16>(sc.gather_mask[static_cast<size_t>(kk * kVectors + v)]);
        return AsLanes(Gather(stats_group + which * plane, index, mask));
      });
    }
    const int64_t y_ahead = YAhead(map);
    StoreOp stores[kVectors][kMaxStripColumns];
    int store_count[kVectors] = {0, 0, 0};
    for (int sg = 0; sg < map.segments; ++sg) {
      const Segment& seg = map.segment[sg];
      for (int v = 0; v < vectors; ++v) {
        const __mmask16 mask = LaneMask(seg.begin, seg.end, v);
        if (mask) stores[v][store_count[v]++] = StoreOp{seg.y_offset - seg.begin + v * kLanes, mask};
      }
    }
    // The strip is built and consumed a block of channels at a time, small enough to stay in L1 while
    // every weight panel of the chunk multiplies it; partial sums wait in `partial` between blocks.
    for (int64_t c_begin = 0; c_begin < g.group_in_channels; c_begin += block_channels) {
      const int64_t c_end = std::min(g.group_in_channels, c_begin + block_channels);
      const int64_t row_begin = c_begin * g.kernel_size;
      const int64_t rows = (c_end - c_begin) * g.kernel_size;
      const bool first_block = c_begin == 0;
      const bool last_block = c_end == g.group_in_channels;
      PackBlock<S>(x_group, g, sc, st, c_begin, c_end, vectors, strip);
      if (in_strip) {
        st = StripStatistics<kVectors>(g, vectors, [&](int64_t c, int v) { return strip + c * kStrip + v * kLanes; });
      }
      for (int64_t panel = panel_begin; panel < panel_end; ++panel) {
        const float* a = job.panels + ((t.group * plan.panels + panel) * fan_in + row_begin) * kPanelRows;
        const int channels = static_cast<int>(std::min(kPanelRows, per_group - panel * kPanelRows));
        auto& acc = *reinterpret_cast<__m512(*)[kPanelRows][kVectors]>(partial + (panel - panel_begin) * kPanelFloats);
        const float* next = NextPanelRows(job, t, panel, panel_begin, panel_end, row_begin, rows, last_block, a);
        Multiply(channels, vectors, rows, a, strip, !first_block, acc, next);
        if (!last_block) continue;
        for (int m = 0; m < channels; ++m) {
          const int64_t channel = t.group * per_group + panel * kPanelRows + m;
          const __m512 w_sum = _mm512_set1_ps(job.weight_sums[channel]);
          const __m512 bias = _mm512_set1_ps(job.bias != nullptr ? job.bias[channel] : 0.0f);
          T* y_channel = job.y + channel * out_plane;
          const char* ahead = reinterpret_cast<const char*>(At(y_channel, y_ahead));
          for (size_t line = 0; line < kStrip * sizeof(T); line += 64) _mm_prefetch(ahead + line, _MM_HINT_T0);
          for (int v = 0; v < vectors; ++v) {
            const __m512 centred = _mm512_fnmadd_ps(Native(st.correction[v]), w_sum, acc[m][v]);
            const __m512 value = _mm512_fmadd_ps(centred, Native(st.rstd[v]), bias);
            const __m512 out = Native(Activate(job.activation, AsLanes(value)));
            for (int k = 0; k < store_count[v]; ++k) {
              StoreLanes(At(y_channel, stores[v][k].offset), stores[v][k].mask, out);
            }
          }
        }
      }
    }
  }
}

void PrepareFloat(const Job<float, float>& job, int64_t task) { LocationMoments(job, task); }
void PrepareHalf(const Job<Half, float>& job, int64_t task) { LocationMoments(job, task); }
template <typename T>
void Run(const Job<T, float>& job, int64_t task) {
  switch (job.geometry->stride[job.geometry->ndim - 1]) {
    case 1: RunTask<1>(job, task); break;
    case 2: RunTask<2>(job, task); break;
    default: RunTask<0>(job, task); break;
  }
}

void RunFloat(const Job<float, float>& job, int64_t task) { Run(job, task); }
void RunHalf(const Job<Half, float>& job, int64_t task) { Run(job, task); }

}  // namespace avx512
}  // namespace ncnn_onnx::cpu

#if defined(__clang__)
#pragma clang attribute pop
#else
#pragma GCC pop_options
#endif

namespace ncnn_onnx::cpu {

Backend Avx512Backend() {
  Backend b = PortableBackend();  // float64 stays portable: it is for reference use
  b.isa = Isa::kAvx512;
  b.name = "avx512";
  b.f32 = LocationStatsRoutine<float>(avx512::kStrip, &avx512::RunFloat, &avx512::PrepareFloat);
  b.f16 = LocationStatsRoutine<Half>(avx512::kStrip, &avx512::RunHalf, &avx512::PrepareHalf);
  b.direct_f32 = &DirectTask<float>;
  b.direct_f16 = &DirectTask<Half>;
  return b;
}

}  // namespace ncnn_onnx::cpu

#else

namespace ncnn_onnx::cpu {
Backend Avx512Backend() { return PortableBackend(); }
}  // namespace ncnn_onnx::cpu

#endif
