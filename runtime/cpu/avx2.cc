// The AVX2 backend (float32 and float16 tensors, float32 arithmetic): the design of avx512.cc at 8 lanes.
//
// Prepare tasks reduce X over each group's channels to per-location moments, from which each strip's
// patch statistics follow exactly in K reads; that arithmetic is written once for both backends
// (location_math.h). The strip's im2col block is written once, centred on the provisional mean, and the
// epilogue applies the exact residual mean.
//
// A strip is up to 48 columns = 6 vectors of 8 output positions; a task's columns are spread evenly over
// its strips in whole vectors. Along the last spatial dim a vector's lanes read runs (usually one or two)
// of evenly spaced elements. With stride 1 or 2 a run is a window of 8 or 16 elements: read whole and
// masked with an AND where every channel's window lies inside X (stride 2 then deinterleaves), else with
// loads that touch only the lanes' elements (vmaskmovps for float32, a small bounce buffer for float16,
// which has no masked load), so nothing past the tensor is ever read. Other strides gather.
//
// The block is laid out as two halves of 24 columns, [half][row][24], so the micro-kernel streams one
// contiguous half: 4 output channels (half a weight panel) x 24 columns = 12 accumulators, plus 3 strip
// vectors and a broadcast, in AVX2's 16 registers. It measured at about 95% of the FMA units' peak on a
// 144-row block, which leaves a 6 x 16 shape (it would straddle the 8-channel panels) little to gain.
// Blocks of patch rows keep the strip in L1 while every weight panel of the chunk passes over it; the
// panels' rows are prefetched a call ahead, since large layers' weights live in L3.
//
// Everything that uses AVX2 sits in a target region and headers are included before it: functions shared
// with the rest of the library (headers, the standard library) are then compiled for the baseline ISA, so
// the linker can never pick an AVX2 copy for code that runs on any CPU.
#include <algorithm>
#include <cstdint>
#include <cstring>
#include <limits>
#include <type_traits>
#include <vector>

#include "aligned_buffer.h"
#include "backends.h"
#include "direct_plan.h"
#include "location_strip.h"
#include "strip.h"

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))

#include <immintrin.h>

#if defined(__clang__)
#pragma clang attribute push(__attribute__((target("avx2,fma,f16c"))), apply_to = function)
#else
#pragma GCC push_options
#pragma GCC target("avx2,fma,f16c")
#endif

namespace ncnn_onnx::cpu {
namespace {

struct VectorIsa {
  static constexpr int kRegisters = 16;  // vector registers the compiler may allocate
  static constexpr int kLanes = 8;
  typedef float Vector __attribute__((vector_size(4 * kLanes)));
  typedef int32_t Compared __attribute__((vector_size(4 * kLanes)));  // what comparing Vectors gives
  static bool Any(Compared m) {
    const __m256i bits = reinterpret_cast<__m256i>(m);
    return !_mm256_testz_si256(bits, bits);
  }
  static Vector Sqrt(Vector v) { return reinterpret_cast<Vector>(_mm256_sqrt_ps(reinterpret_cast<__m256>(v))); }
  // 1/sqrt(x) to a few ulp: the 12-bit estimate and one Newton step (see avx512.cc). 0 and inf keep the
  // estimate, which is exact there.
  static Vector ReciprocalSqrt(Vector x) {
    const __m256 v = reinterpret_cast<__m256>(x);
    const __m256 r = _mm256_rsqrt_ps(v);
    const __m256 half_xr = _mm256_mul_ps(_mm256_mul_ps(v, _mm256_set1_ps(0.5f)), r);
    const __m256 step = _mm256_mul_ps(r, _mm256_fnmadd_ps(half_xr, r, _mm256_set1_ps(1.5f)));
    const __m256 exact = _mm256_or_ps(_mm256_cmp_ps(v, _mm256_setzero_ps(), _CMP_EQ_OQ),
                                      _mm256_cmp_ps(v, _mm256_set1_ps(__builtin_inff()), _CMP_EQ_OQ));
    return reinterpret_cast<Vector>(_mm256_blendv_ps(step, r, exact));
  }
  static void ToHalf(const Vector& v, Half* out) {
    const __m128i h = _mm256_cvtps_ph(reinterpret_cast<__m256>(v), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    _mm_storeu_si128(reinterpret_cast<__m128i*>(out), h);
  }
  // `count` (1..kLanes) consecutive values and zeros after them; nothing past them is read or written
  // (float16 has no masked load: the partial case goes through a small buffer).
  static Vector Load(const float* p, int64_t count) {
    return reinterpret_cast<Vector>(count == kLanes ? _mm256_loadu_ps(p) : _mm256_maskload_ps(p, Mask(count)));
  }
  static Vector Load(const Half* p, int64_t count) {
    alignas(16) Half h[kLanes] = {};
    const Half* from = p;
    if (count < kLanes) {
      std::memcpy(h, p, static_cast<size_t>(count) * sizeof(Half));
      from = h;
    }
    return reinterpret_cast<Vector>(_mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(from))));
  }
  static void Store(float* p, Vector v, int64_t count) {
    if (count == kLanes) {
      _mm256_storeu_ps(p, reinterpret_cast<__m256>(v));
    } else {
      _mm256_maskstore_ps(p, Mask(count), reinterpret_cast<__m256>(v));
    }
  }
  // vmaskmovps lanes: -1 for the first `count`.
  static __m256i Mask(int64_t count) {
    return _mm256_cmpgt_epi32(_mm256_set1_epi32(static_cast<int>(count)), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
  }
};

}  // namespace
}  // namespace ncnn_onnx::cpu

#include "activate.h"
#include "direct.h"
#include "location_math.h"

namespace ncnn_onnx::cpu {
namespace avx2 {

constexpr int64_t kLanes = 8;
constexpr int kVectors = 6;
constexpr int64_t kStrip = kLanes * kVectors;
constexpr int kHalfVectors = 3;                          // micro-kernel columns: 24
constexpr int64_t kHalfColumns = kLanes * kHalfVectors;
constexpr int64_t kKernelRows = 4;                       // micro-kernel output channels
constexpr int64_t kBlockRows = 144;                      // patch rows per strip block: 27 KiB
constexpr int64_t kPanelFloats = kPanelRows * kStrip;    // partial sums of one panel: [channel][column]
static_assert(kStrip <= kMaxStripColumns, "StripMap holds at most kMaxStripColumns columns");
static_assert(kBlockRows >= kStripStatsMaxChannels, "a pointwise group with statistics in the strip is one block");
static_assert(kHalfVectors * 2 == kVectors, "a strip is two micro-kernel halves");

// A vmaskmovps mask (-1: the element is read or written). Plain integers, not __m256i: these structs live
// in std::vector, whose code (compiled outside the target region) allocated __m256i members with plain,
// 16-byte aligned operator new, and the aligned stores into them faulted.
struct LaneMask {
  int32_t lane[kLanes];
  __m256i Get() const { return _mm256_loadu_si256(reinterpret_cast<const __m256i*>(lane)); }
};

// Lanes of one vector that read evenly spaced elements of one input row (see RowSpan): lane l reads
// x_offset + S * l, S being the last stride (1 or 2; other strides gather).
struct LoadOp {
  LaneMask lo, hi;  // the lanes' elements among the window's first 8 and, when S = 2, its second 8
  int64_t x_offset;
  int64_t stats_offset;
  uint32_t bits;    // the lanes
};

struct StoreOp {
  LaneMask mask;
  int64_t offset;  // of lane 0 in Y, for output channel 0
  bool full;
};

struct Scratch {
  AlignedBuffer<float> strip;        // one block: [half][rows][kHalfColumns]
  AlignedBuffer<float> partial;      // [panel of the chunk][kPanelFloats]
  std::vector<LoadOp> loads;         // rows with stride 1 or 2: ops of (kernel offset kk, vector v) ...
  std::vector<int32_t> load_begin;   // ... are loads[load_begin[kk * kVectors + v] .. next)
  AlignedBuffer<int32_t> x_index;      // other strides: [kernel_size][kStrip] offsets into x ...
  AlignedBuffer<int32_t> stats_index;  // ... and into the location statistics
  AlignedBuffer<int32_t> gather_mask;  // ... and lane masks (-1: reads X)
};

Scratch& ThreadScratch() {
  thread_local Scratch scratch;
  return scratch;
}

inline __m256 Native(Lanes v) { return reinterpret_cast<__m256>(v); }
inline Lanes AsLanes(__m256 v) { return reinterpret_cast<Lanes>(v); }
using Stats = ColumnStats<kVectors>;

inline __m256i MaskFromBits(uint32_t bits) {
  const __m256i lane_bit = _mm256_setr_epi32(1, 2, 4, 8, 16, 32, 64, 128);
  return _mm256_cmpeq_epi32(_mm256_and_si256(_mm256_set1_epi32(static_cast<int>(bits)), lane_bit), lane_bit);
}

inline LaneMask MaskOf(uint32_t bits) {
  LaneMask m;
  _mm256_storeu_si256(reinterpret_cast<__m256i*>(m.lane), MaskFromBits(bits));
  return m;
}

// Where X lies: a window is read whole only inside it.
struct Bounds {
  uintptr_t begin, end;
};

// The even elements of a, then those of b.
inline __m256 Deinterleave(__m256 a, __m256 b) {
  const __m256 even = _mm256_shuffle_ps(a, b, _MM_SHUFFLE(2, 0, 2, 0));  // a0 a2 b0 b2 | a4 a6 b4 b6
  return _mm256_castpd_ps(_mm256_permute4x64_pd(_mm256_castps_pd(even), _MM_SHUFFLE(3, 1, 2, 0)));
}

// Lane l = p[S * l], from a window of S * 8 elements that lies inside the tensor.
template <int S>
inline __m256 ReadWindow(const float* p) {
  if constexpr (S == 1) {
    return _mm256_loadu_ps(p);
  } else {
    return Deinterleave(_mm256_loadu_ps(p), _mm256_loadu_ps(p + kLanes));
  }
}

template <int S>
inline __m256 ReadWindow(const Half* p) {
  if constexpr (S == 1) {
    return _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p)));
  } else {
    const __m256i h = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p));
    return Deinterleave(_mm256_cvtph_ps(_mm256_castsi256_si128(h)), _mm256_cvtph_ps(_mm256_extracti128_si256(h, 1)));
  }
}

// A LoadOp's masks in registers.
struct ElementMasks {
  __m256i lo, hi;
  uint32_t bits;
};

inline ElementMasks MasksOf(const LoadOp& op) { return ElementMasks{op.lo.Get(), op.hi.Get(), op.bits}; }

// Lane l = p[S * l] for the lanes in m, touching no other element (the window may leave the tensor);
// other lanes are +0.
template <int S>
inline __m256 ReadLanes(const float* p, const ElementMasks& m) {
  if constexpr (S == 1) {
    return _mm256_maskload_ps(p, m.lo);
  } else {
    return Deinterleave(_mm256_maskload_ps(p, m.lo), _mm256_maskload_ps(At(p, kLanes), m.hi));
  }
}

template <int S>
inline __m256 ReadLanes(const Half* p, const ElementMasks& m) {
  // No 16-bit masked load: the lanes' halves one by one.
  alignas(16) Half h[kLanes] = {};
  for (int l = 0; l < kLanes; ++l) {
    if ((m.bits >> l) & 1) h[l] = *At(p, S * l);
  }
  return _mm256_cvtph_ps(_mm_load_si128(reinterpret_cast<const __m128i*>(h)));
}

// One row of the location statistics for the lanes of `count` ops (masked-off lanes read as +0, so the
// disjoint ops combine with an OR).
template <int S>
inline __m256 StatsRow(const float* base, const LoadOp* op, int count) {
  if (count == 0) return _mm256_setzero_ps();
  if (S == 1 && count == 1 && op->bits == 0xffu) return _mm256_loadu_ps(At(base, op->stats_offset));
  __m256 r = ReadLanes<S>(At(base, op->stats_offset), MasksOf(*op));
  for (int i = 1; i < count; ++i) r = _mm256_or_ps(r, ReadLanes<S>(At(base, op[i].stats_offset), MasksOf(op[i])));
  return r;
}

inline __m256 Gather(const float* base, const int32_t* index, const int32_t* mask) {
  const __m256i lanes = _mm256_load_si256(reinterpret_cast<const __m256i*>(mask));
  return _mm256_mask_i32gather_ps(_mm256_setzero_ps(), base, _mm256_load_si256(reinterpret_cast<const __m256i*>(index)),
                                  _mm256_castsi256_ps(lanes), 4);
}

inline __m256 Gather(const Half* base, const int32_t* index, const int32_t* mask) {
  // No 16-bit gather: the addressed halves one by one.
  alignas(16) Half h[kLanes];
  for (int l = 0; l < kLanes; ++l) h[l] = mask[l] ? base[index[l]] : Half{0};
  return _mm256_cvtph_ps(_mm_load_si128(reinterpret_cast<const __m128i*>(h)));
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
        const uint32_t bits = LaneBits<kLanes>(spans[r].begin, spans[r].end, v);
        if (!bits) continue;
        const int64_t lane0 = stride * v * kLanes;
        const uint32_t lo = stride == 1 ? bits : EvenElements(bits & 0xfu);
        const uint32_t hi = stride == 1 ? 0u : EvenElements(bits >> 4);
        sc.loads.push_back(
            LoadOp{MaskOf(lo), MaskOf(hi), spans[r].x_offset + lane0, spans[r].stats_offset + lane0, bits});
      }
    }
  }
  sc.load_begin.back() = static_cast<int32_t>(sc.loads.size());
}

// Per-lane offsets and masks of every kernel offset for a strip with a last stride > 2.
void BuildGathers(const ConvGeometry& g, const Spatial3& s, const StripMap& map, Scratch& sc) {
  const size_t entries = static_cast<size_t>(g.kernel_size * kStrip);
  int32_t* x_index = sc.x_index.Reserve(entries);
  int32_t* stats_index = sc.stats_index.Reserve(entries);
  int32_t* mask = sc.gather_mask.Reserve(entries);
  for (int64_t kk = 0; kk < g.kernel_size; ++kk) {
    const uint64_t valid = ColumnOffsets(g, s, map, kk, kStrip, x_index + kk * kStrip, stats_index + kk * kStrip);
    for (int64_t j = 0; j < kStrip; ++j) mask[kk * kStrip + j] = (valid >> j) & 1 ? -1 : 0;
  }
}

// Where vector v of a block row lands: [half][row][kHalfColumns].
inline int64_t BlockOffset(int v, int64_t half_stride) {
  return (v / kHalfVectors) * half_stride + (v % kHalfVectors) * kLanes;
}

// One column vector of the block, for `channels` channels: out[c * row_stride] = (the lanes that `count`
// ops read from channel c of x, 0 elsewhere) - mean. The ops are the same for every channel, so what
// they need is settled once, outside the loop over channels: whether every window lies inside the
// tensor, so that whole loads and an AND do. Where the windows may leave it, and for float32 with stride
// 1 (where vmaskmovps is as fast), the loads touch only the lanes' elements.
template <int S, typename T>
void FillColumn(const T* x, int64_t plane, int64_t channels, const LoadOp* ops, int count, const Bounds& bounds,
                __m256 mean, float* out, int64_t row_stride) {
  bool inside = S == 2 || std::is_same_v<T, Half>;
  for (int i = 0; i < count && inside; ++i) {
    inside = reinterpret_cast<uintptr_t>(At(x, ops[i].x_offset)) >= bounds.begin &&
             reinterpret_cast<uintptr_t>(At(x, ops[i].x_offset + (channels - 1) * plane + S * kLanes)) <= bounds.end;
  }
  if (count == 0) {
    const __m256 padding = _mm256_sub_ps(_mm256_setzero_ps(), mean);
    for (int64_t c = 0; c < channels; ++c) _mm256_store_ps(out + c * row_stride, padding);
  } else if (count == 1 && ops[0].bits == 0xffu && (S == 1 || inside)) {
    // Every lane reads X (with stride 1 the window is exactly the lanes' elements).
    for (int64_t c = 0; c < channels; ++c) {
      _mm256_store_ps(out + c * row_stride, _mm256_sub_ps(ReadWindow<S>(At(x, ops[0].x_offset + c * plane)), mean));
    }
  } else if (count <= 2 && inside) {
    // An unused second op reads the first one's window under an empty mask.
    const LoadOp& second = ops[count - 1];
    const __m256 lanes0 = _mm256_castsi256_ps(MaskFromBits(ops[0].bits));
    const __m256 lanes1 = _mm256_castsi256_ps(MaskFromBits(count == 2 ? second.bits : 0u));
    for (int64_t c = 0; c < channels; ++c) {
      // Masked-off lanes may hold anything, NaN included: the ANDs clear them.
      const __m256 v0 = _mm256_and_ps(ReadWindow<S>(At(x, ops[0].x_offset + c * plane)), lanes0);
      const __m256 v1 = _mm256_and_ps(ReadWindow<S>(At(x, second.x_offset + c * plane)), lanes1);
      _mm256_store_ps(out + c * row_stride, _mm256_sub_ps(_mm256_or_ps(v0, v1), mean));
    }
  } else if (count <= 2) {
    const ElementMasks m0 = MasksOf(ops[0]);
    const ElementMasks none{_mm256_setzero_si256(), _mm256_setzero_si256(), 0u};
    const ElementMasks m1 = count == 2 ? MasksOf(ops[1]) : none;
    for (int64_t c = 0; c < channels; ++c) {
      const __m256 v0 = ReadLanes<S>(At(x, ops[0].x_offset + c * plane), m0);
      const __m256 v1 = ReadLanes<S>(At(x, ops[count - 1].x_offset + c * plane), m1);
      _mm256_store_ps(out + c * row_stride, _mm256_sub_ps(_mm256_or_ps(v0, v1), mean));
    }
  } else {
    // Three or more runs in a vector (output rows narrower than a vector): rare, kept simple.
    for (int64_t c = 0; c < channels; ++c) {
      __m256 value = _mm256_setzero_ps();
      for (int i = 0; i < count; ++i) {
        value = _mm256_or_ps(value, ReadLanes<S>(At(x, ops[i].x_offset + c * plane), MasksOf(ops[i])));
      }
      _mm256_store_ps(out + c * row_stride, _mm256_sub_ps(value, mean));
    }
  }
}

// Writes channels [c_begin, c_end) of the strip's im2col block (row i = c * kernel_size + kk, counted from
// c_begin), centred on st.mean, for the first `vectors` vectors. S: the last stride, 1 or 2 (loads), or 0
// (gathers).
template <int S, typename T>
void PackBlock(const T* x_group, const ConvGeometry& g, const Scratch& sc, const Stats& st,
               const Bounds& bounds, int64_t c_begin, int64_t c_end, int vectors, int64_t half_stride, float* block) {
  const int64_t plane = g.input_plane;
  const int64_t channels = c_end - c_begin;
  const int64_t row_stride = g.kernel_size * kHalfColumns;  // from one channel to the next
  const T* x_first = x_group + c_begin * plane;
  for (int64_t kk = 0; kk < g.kernel_size; ++kk) {
    for (int v = 0; v < vectors; ++v) {
      float* out = block + kk * kHalfColumns + BlockOffset(v, half_stride);
      const __m256 mean = Native(st.mean[v]);
      if constexpr (S == 0) {
        const int32_t* index = sc.x_index.data() + kk * kStrip + v * kLanes;
        const int32_t* mask = sc.gather_mask.data() + kk * kStrip + v * kLanes;
        for (int64_t c = 0; c < channels; ++c) {
          _mm256_store_ps(out + c * row_stride, _mm256_sub_ps(Gather(x_first + c * plane, index, mask), mean));
        }
      } else {
        const int32_t begin = sc.load_begin[static_cast<size_t>(kk * kVectors + v)];
        const int count = sc.load_begin[static_cast<size_t>(kk * kVectors + v + 1)] - begin;
        FillColumn<S>(x_first, plane, channels, sc.loads.data() + begin, count, bounds, mean, out, row_stride);
      }
    }
  }
}

// acc[m][v] (+)= sum_k a[k * kPanelRows + m] * b[k * kHalfColumns + v * kLanes ...] for MR channels and NV
// vectors; acc rows are kStrip floats apart and hold the partial sums of earlier blocks when `accumulate`.
template <int MR, int NV>
inline void MicroKernel(int64_t rows, const float* __restrict a, const float* __restrict b, bool accumulate,
                        float* __restrict acc, const float* next) {
  __m256 c[MR][NV];
#pragma GCC unroll 8
  for (int m = 0; m < MR; ++m)
#pragma GCC unroll 3
    for (int v = 0; v < NV; ++v) {
      c[m][v] = accumulate ? _mm256_load_ps(acc + m * kStrip + v * kLanes) : _mm256_setzero_ps();
    }
#pragma GCC unroll 2
  for (int64_t k = 0; k < rows; ++k) {
    __m256 bv[NV];
#pragma GCC unroll 3
    for (int v = 0; v < NV; ++v) bv[v] = _mm256_load_ps(b + k * kHalfColumns + v * kLanes);
    const float* ak = a + k * kPanelRows;
    _mm_prefetch(reinterpret_cast<const char*>(next + k * kPanelRows), _MM_HINT_T0);
#pragma GCC unroll 8
    for (int m = 0; m < MR; ++m) {
      const __m256 am = _mm256_broadcast_ss(ak + m);
#pragma GCC unroll 3
      for (int v = 0; v < NV; ++v) c[m][v] = _mm256_fmadd_ps(am, bv[v], c[m][v]);
    }
  }
#pragma GCC unroll 8
  for (int m = 0; m < MR; ++m)
#pragma GCC unroll 3
    for (int v = 0; v < NV; ++v) _mm256_store_ps(acc + m * kStrip + v * kLanes, c[m][v]);
}

template <int NV>
void MultiplyRows(int channels, int64_t rows, const float* a, const float* b, bool accumulate, float* acc,
                  const float* next) {
  switch (channels) {
    case 1: MicroKernel<1, NV>(rows, a, b, accumulate, acc, next); break;
    case 2: MicroKernel<2, NV>(rows, a, b, accumulate, acc, next); break;
    case 3: MicroKernel<3, NV>(rows, a, b, accumulate, acc, next); break;
    default: MicroKernel<4, NV>(rows, a, b, accumulate, acc, next); break;
  }
}

// One weight panel (channels: 1..8) times one half of the strip (vectors: 1..3) over `rows` patch rows.
// A single vector gives 4 channels too few independent sums to cover the FMA latency, so it takes the
// whole panel at once.
void Multiply(int channels, int vectors, int64_t rows, const float* a, const float* b, bool accumulate, float* acc,
              const float* next) {
  if (vectors == 1 && channels > 4) {
    switch (channels) {
      case 5: MicroKernel<5, 1>(rows, a, b, accumulate, acc, next); break;
      case 6: MicroKernel<6, 1>(rows, a, b, accumulate, acc, next); break;
      case 7: MicroKernel<7, 1>(rows, a, b, accumulate, acc, next); break;
      default: MicroKernel<8, 1>(rows, a, b, accumulate, acc, next); break;
    }
    return;
  }
  for (int m0 = 0; m0 < channels; m0 += static_cast<int>(kKernelRows)) {
    const int count = std::min(channels - m0, static_cast<int>(kKernelRows));
    switch (vectors) {
      case 1: MultiplyRows<1>(count, rows, a + m0, b, accumulate, acc + m0 * kStrip, next); break;
      case 2: MultiplyRows<2>(count, rows, a + m0, b, accumulate, acc + m0 * kStrip, next); break;
      default: MultiplyRows<3>(count, rows, a + m0, b, accumulate, acc + m0 * kStrip, next); break;
    }
  }
}

inline void Store(float* p, const StoreOp& op, __m256 v) {
  if (op.full) {
    _mm256_storeu_ps(p, v);
  } else {
    _mm256_maskstore_ps(p, op.mask.Get(), v);
  }
}

inline void Store(Half* p, const StoreOp& op, __m256 v) {
  const __m128i h = _mm256_cvtps_ph(v, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  if (op.full) {
    _mm_storeu_si128(reinterpret_cast<__m128i*>(p), h);
    return;
  }
  // No 16-bit masked store: write the lanes one by one, never past the tensor.
  alignas(16) Half lanes[kLanes];
  _mm_store_si128(reinterpret_cast<__m128i*>(lanes), h);
  for (int l = 0; l < kLanes; ++l) {
    if (op.mask.lane[l]) *At(p, l) = lanes[l];
  }
}

// One task; S: the last stride when it is 1 or 2 (strided loads), else 0 (gathers).
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
  const Bounds bounds{reinterpret_cast<uintptr_t>(job.x),
                      reinterpret_cast<uintptr_t>(job.x + g.batch * g.in_channels * plane)};
  Scratch& sc = ThreadScratch();
  const int64_t block_channels = std::min(g.group_in_channels, std::max<int64_t>(1, kBlockRows / g.kernel_size));
  const int64_t half_stride = block_channels * g.kernel_size * kHalfColumns;
  float* strip = sc.strip.Reserve(static_cast<size_t>(2 * half_stride));
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
    const int64_t first = span.first;
    const int64_t width = span.width;
    MapStrip(g, s, first, width, &map);
    Stats st;
    if constexpr (S != 0) {
      BuildLoads<S>(g, s, map, sc);
      const LoadOp* ops = sc.loads.data();
      const int32_t* begin = sc.load_begin.data();
      if (in_strip) {
        st = Stats{};  // raw rows first (PackBlock centres on st.mean), statistics below
      } else {
        st = ColumnStatistics<kVectors>(g, vectors, [&](int which, int64_t kk, int v) {
          const int32_t* b = begin + kk * kVectors + v;
          return AsLanes(StatsRow<S>(stats_group + which * plane, ops + b[0], b[1] - b[0]));
        });
      }
    } else {
      BuildGathers(g, s, map, sc);
      st = ColumnStatistics<kVectors>(g, vectors, [&](int which, int64_t kk, int v) {
        const int64_t at = kk * kStrip + v * kLanes;
        return AsLanes(Gather(stats_group + which * plane, sc.stats_index.data() + at, sc.gather_mask.data() + at));
      });
    }
    // Segments are disjoint and non-empty: at most one store op per lane.
    StoreOp stores[kVectors][kLanes];
    int store_count[kVectors] = {};
    for (int sg = 0; sg < map.segments; ++sg) {
      const Segment& seg = map.segment[sg];
      for (int v = 0; v < vectors; ++v) {
        const uint32_t bits = LaneBits<kLanes>(seg.begin, seg.end, v);
        if (!bits) continue;
        stores[v][store_count[v]++] = StoreOp{MaskOf(bits), seg.y_offset - seg.begin + v * kLanes, bits == 0xffu};
      }
    }
    const int64_t y_ahead = YAhead(map);
    // Blocks of channels small enough to stay in L1 while every weight panel of the chunk multiplies them;
    // partial sums wait in `partial` between blocks.
    for (int64_t c_begin = 0; c_begin < g.group_in_channels; c_begin += block_channels) {
      const int64_t c_end = std::min(g.group_in_channels, c_begin + block_channels);
      const int64_t row_begin = c_begin * g.kernel_size;
      const int64_t rows = (c_end - c_begin) * g.kernel_size;
      const bool first_block = c_begin == 0;
      const bool last_block = c_end == g.group_in_channels;
      PackBlock<S>(x_group, g, sc, st, bounds, c_begin, c_end, vectors, half_stride, strip);
      if (in_strip) {
        st = StripStatistics<kVectors>(g, vectors, [&](int64_t c, int v) {
          return strip + (v / kHalfVectors) * half_stride + c * kHalfColumns + (v % kHalfVectors) * kLanes;
        });
      }
      for (int64_t panel = panel_begin; panel < panel_end; ++panel) {
        const float* a = job.panels + ((t.group * plan.panels + panel) * fan_in + row_begin) * kPanelRows;
        const int channels = static_cast<int>(std::min(kPanelRows, per_group - panel * kPanelRows));
        float* acc = partial + (panel - panel_begin) * kPanelFloats;
        const float* next = NextPanelRows(job, t, panel, panel_begin, panel_end, row_begin, rows, last_block, a);
        for (int v0 = 0; v0 < vectors; v0 += kHalfVectors) {
          Multiply(channels, std::min(vectors - v0, kHalfVectors), rows, a, strip + (v0 / kHalfVectors) * half_stride,
                   !first_block, acc + v0 * kLanes, next);
        }
        if (!last_block) continue;
        for (int m = 0; m < channels; ++m) {
          const int64_t channel = t.group * per_group + panel * kPanelRows + m;
          const __m256 w_sum = _mm256_set1_ps(job.weight_sums[channel]);
          const __m256 bias = _mm256_set1_ps(job.bias != nullptr ? job.bias[channel] : 0.0f);
          T* y_channel = job.y + channel * out_plane;
          const char* ahead = reinterpret_cast<const char*>(At(y_channel, y_ahead));
          for (size_t line = 0; line < kStrip * sizeof(T); line += 64) _mm_prefetch(ahead + line, _MM_HINT_T0);
          for (int v = 0; v < vectors; ++v) {
            const __m256 sum = _mm256_load_ps(acc + m * kStrip + v * kLanes);
            const __m256 centred = _mm256_fnmadd_ps(Native(st.correction[v]), w_sum, sum);
            const __m256 out = Native(Activate(job.activation, AsLanes(_mm256_fmadd_ps(centred, Native(st.rstd[v]), bias))));
            for (int k = 0; k < store_count[v]; ++k) Store(At(y_channel, stores[v][k].offset), stores[v][k], out);
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

}  // namespace avx2
}  // namespace ncnn_onnx::cpu

#if defined(__clang__)
#pragma clang attribute pop
#else
#pragma GCC pop_options
#endif

namespace ncnn_onnx::cpu {

Backend Avx2Backend() {
  Backend b = PortableBackend();  // float64 stays portable: it is for reference use
  b.isa = Isa::kAvx2;
  b.name = "avx2";
  b.f32 = LocationStatsRoutine<float>(avx2::kStrip, &avx2::RunFloat, &avx2::PrepareFloat);
  b.f16 = LocationStatsRoutine<Half>(avx2::kStrip, &avx2::RunHalf, &avx2::PrepareHalf);
  b.direct_f32 = &DirectTask<float>;
  b.direct_f16 = &DirectTask<Half>;
  return b;
}

}  // namespace ncnn_onnx::cpu

#else

namespace ncnn_onnx::cpu {
Backend Avx2Backend() { return PortableBackend(); }
}  // namespace ncnn_onnx::cpu

#endif
