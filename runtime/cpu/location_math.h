// The arithmetic the vector backends (avx2.cc, avx512.cc) share, written once on GCC vector types of
// VectorIsa::kLanes floats:
//   - prepare tasks: per input location and group, the channel mean m (summed in double), the residual
//     s = sum_c (x - m) and q = sum_c (x - m)^2;
//   - a strip's column statistics from those maps: with a provisional mean mu' and t = m - mu',
//         sum_i (v_i - mu')   = sum_k (cg t_k + s_k)                 (padded locations: m = s = q = 0)
//         sum_i (v_i - mu')^2 = sum_k (q_k + 2 t_k s_k + cg t_k^2)
//     all sums of small, exactly formed terms, so no cancellation (docs/architecture.md, "Numerics").
// What stays per backend is how a strip's rows are loaded (masked loads and gathers on AVX-512; windows,
// deinterleaving and vmaskmovps on AVX2, which has no masked float16 load) and the micro-kernel's shape,
// which follows the register file (32 zmm: 8 channels x 3 vectors; 16 ymm: 4 channels x 3 vectors).
//
// Included inside each backend's target region after it defines `VectorIsa` (lane count, vector type,
// square root, partial loads and stores), as direct.h is: everything here has internal linkage.
#pragma once

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <utility>

#include "job.h"
#include "location_strip.h"

namespace ncnn_onnx::cpu {
namespace {

using Lanes = VectorIsa::Vector;

// Sums that must be exact for equal values are taken in double, as two halves of kLanes / 2 doubles:
// one native register each (a vector of kLanes doubles would be twice the register width, which GCC
// lowers through memory).
constexpr int kHalfLanes = VectorIsa::kLanes / 2;
typedef float HalfLanes __attribute__((vector_size(4 * kHalfLanes)));
typedef double HalfWide __attribute__((vector_size(8 * kHalfLanes)));

struct Wide {
  HalfWide low = {}, high = {};
};

template <int kOffset, size_t... I>
inline HalfLanes Part(Lanes v, std::index_sequence<I...>) {
  return __builtin_shufflevector(v, v, (kOffset + static_cast<int>(I))...);
}

template <size_t... I>
inline Lanes Join(HalfLanes low, HalfLanes high, std::index_sequence<I...>) {
  return __builtin_shufflevector(low, high, static_cast<int>(I)...);
}

inline Wide Widen(Lanes v) {
  return Wide{__builtin_convertvector(Part<0>(v, std::make_index_sequence<kHalfLanes>()), HalfWide),
              __builtin_convertvector(Part<kHalfLanes>(v, std::make_index_sequence<kHalfLanes>()), HalfWide)};
}

inline Wide operator+(const Wide& x, const Wide& y) { return Wide{x.low + y.low, x.high + y.high}; }
inline Wide operator*(double a, const Wide& x) { return Wide{a * x.low, a * x.high}; }

// w / divisor, rounded to float.
inline Lanes Quotient(const Wide& w, double divisor) {
  return Join(__builtin_convertvector(w.low / divisor, HalfLanes), __builtin_convertvector(w.high / divisor, HalfLanes),
              std::make_index_sequence<VectorIsa::kLanes>());
}

// Location statistics of one image, group and chunk of input locations (job.location_stats).
template <typename T>
void LocationMoments(const Job<T, float>& job, int64_t task) {
  constexpr int64_t kLanes = VectorIsa::kLanes;
  const ConvGeometry& g = *job.geometry;
  const int64_t plane = g.input_plane;
  const StatsChunk chunk = LocateStatsChunk(g, task);
  const int64_t cg = g.group_in_channels;
  const T* x = job.x + chunk.x_offset;
  float* out = job.location_stats + chunk.stats_offset;
  for (int64_t l = chunk.begin; l < chunk.end; l += kLanes) {
    const int64_t count = std::min(kLanes, chunk.end - l);
    // The channel mean in double: exact where every channel holds the same value, which a flat patch
    // needs (see ColumnStatistics). The second pass needs the mean first.
    Wide total;
    for (int64_t c = 0; c < cg; ++c) total = total + Widen(VectorIsa::Load(x + c * plane + l, count));
    const Lanes m = Quotient(total, static_cast<double>(cg));
    Lanes s = {}, q = {};
    for (int64_t c = 0; c < cg; ++c) {
      const Lanes d = VectorIsa::Load(x + c * plane + l, count) - m;
      s += d;
      q += d * d;
    }
    VectorIsa::Store(out + l, m, count);
    VectorIsa::Store(out + plane + l, s, count);
    VectorIsa::Store(out + 2 * plane + l, q, count);
  }
}

template <int kVectors>
struct ColumnStats {
  Lanes mean[kVectors];        // mu', what the strip is centred on (0 without centring)
  Lanes rstd[kVectors];        // 1/sqrt(var + eps), or 1 without scaling
  Lanes correction[kVectors];  // r = mean(v - mu'), or 0 without centring
};

// The statistics of a strip's columns, kVectors vectors of them, of which the first `vectors` are real
// (the others get those of an all-zero patch, never used); `row(which, kk, v)` loads m (0), s (1) or
// q (2) of kernel offset kk for vector v as Lanes, zero where the patch reads padding.
template <int kVectors, typename RowLoader>
ColumnStats<kVectors> ColumnStatistics(const ConvGeometry& g, int vectors, const RowLoader& row) {
  const float cg = static_cast<float>(g.group_in_channels);
  const float inv = 1.0f / static_cast<float>(g.fan_in);
  ColumnStats<kVectors> st;
  for (int v = 0; v < kVectors; ++v) {
    if (v >= vectors) {
      st.mean[v] = st.correction[v] = Lanes{};
      st.rstd[v] = Lanes{} + 1.0f;
      continue;
    }
    // The mean in double: cg * m_k + s_k and the sum of K such terms are then exact for an exactly flat
    // patch, whose mean so equals its value and whose output is exactly B for every epsilon.
    Wide total;
    for (int64_t kk = 0; kk < g.kernel_size; ++kk) {
      total = total + (static_cast<double>(g.group_in_channels) * Widen(row(0, kk, v)) + Widen(row(1, kk, v)));
    }
    const Lanes mean = Quotient(total, static_cast<double>(g.fan_in));
    Lanes first = {}, second = {};
    for (int64_t kk = 0; kk < g.kernel_size; ++kk) {
      const Lanes t = row(0, kk, v) - mean;
      const Lanes s = row(1, kk, v);
      first += cg * t + s;
      second += (cg * (t * t) + row(2, kk, v)) + (t + t) * s;
    }
    const Lanes r = first * inv;
    Lanes var = second * inv - r * r;
    var = var < 0.0f ? Lanes{} : var;  // rounding below 0 is 0; NaN (a non-finite patch) stays NaN
    st.mean[v] = g.center ? mean : Lanes{};
    st.correction[v] = g.center ? r : Lanes{};
    st.rstd[v] = g.scale ? (Lanes{} + 1.0f) / VectorIsa::Sqrt(var + g.epsilon) : Lanes{} + 1.0f;
  }
  return st;
}

// The statistics of a pointwise strip (StatisticsInStrip) from its own block, then the block centred in
// place: `row(c, v)` points at vector v of channel c's row, which holds the raw values (0 past the strip
// and where the column reads padding). The moments are LocationMoments' and the statistics
// ColumnStatistics', so the bits are those of the prepare pass.
template <int kVectors, typename RowAt>
ColumnStats<kVectors> StripStatistics(const ConvGeometry& g, int vectors, const RowAt& row) {
  const int64_t cg = g.group_in_channels;
  Lanes m[kVectors] = {}, s[kVectors] = {}, q[kVectors] = {};
  // Channels outer, the strip's vectors inner: their sums are independent chains, each an add's latency
  // long per channel, which one vector at a time would wait out (vectors past the strip's are computed
  // on whatever the block holds there and never used).
  Wide total[kVectors];
  for (int64_t c = 0; c < cg; ++c) {
#pragma GCC unroll 4
    for (int v = 0; v < kVectors; ++v) total[v] = total[v] + Widen(VectorIsa::Load(row(c, v), VectorIsa::kLanes));
  }
#pragma GCC unroll 4
  for (int v = 0; v < kVectors; ++v) m[v] = Quotient(total[v], static_cast<double>(cg));
  for (int64_t c = 0; c < cg; ++c) {
#pragma GCC unroll 4
    for (int v = 0; v < kVectors; ++v) {
      const Lanes d = VectorIsa::Load(row(c, v), VectorIsa::kLanes) - m[v];
      s[v] += d;
      q[v] += d * d;
    }
  }
  const ColumnStats<kVectors> st = ColumnStatistics<kVectors>(g, vectors, [&](int which, int64_t, int v) {
    return which == 0 ? m[v] : (which == 1 ? s[v] : q[v]);
  });
  if (g.center) {
    for (int v = 0; v < vectors; ++v) {
      for (int64_t c = 0; c < cg; ++c) {
        VectorIsa::Store(row(c, v), VectorIsa::Load(row(c, v), VectorIsa::kLanes) - st.mean[v], VectorIsa::kLanes);
      }
    }
  }
  return st;
}

}  // namespace
}  // namespace ncnn_onnx::cpu
