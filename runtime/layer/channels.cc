// Per-location channel statistics: standardize, its backward, and centre (see channels.h for why and what).
//
// Work items are tiles of positions of one (image, group): a tile is read once from memory and its
// passes over the group's channels run in cache, with the statistics of its positions in small arrays
// that the compiler vectorizes along the (contiguous) positions. Each item writes only its own tile, so
// the result does not depend on the thread count.
#include "channels.h"

#include <algorithm>
#include <cmath>

#include "common/checked_math.h"
#include "parallel.h"

namespace ncnn_onnx::layer {
namespace {

// Positions per tile: the most that keeps a tile of x and one of the gradient within 384 KiB (a share of
// the 1-2 MiB L2 of current x86 server cores), in whole vectors, at most kMaxTile (the statistics arrays
// live on the stack). Wide tiles matter more than small ones: each channel row of a tile is one run of
// memory, and runs of a few cache lines (a 96 KiB tile) left the prefetcher idle, 20% slower.
constexpr int64_t kMaxTile = 2048;
constexpr int64_t kTileBytes = 384 * 1024;

struct Shape {
  int64_t batch = 0, groups = 0, channels = 0, positions = 0;  // channels: per group
  int64_t tile = 0, tiles = 0;
  float epsilon = 0;
  bool center = true, scale = true;
};

int ReadShape(const NcnnOnnxChannelsCall& call, Shape* s) {
  if (call.batch < 0 || call.groups < 1 || call.group_channels < 1 || call.positions < 0) return kBadShape;
  const char* what = "the size of a layer's channel statistics";
  // Element count of x (and of every other tensor), so that no index below can wrap.
  CheckedMul(CheckedMul(CheckedMul(call.batch, call.groups, what), call.group_channels, what), call.positions, what);
  s->batch = call.batch;
  s->groups = call.groups;
  s->channels = call.group_channels;
  s->positions = call.positions;
  const int64_t fit = kTileBytes / (2 * static_cast<int64_t>(sizeof(float)) * s->channels);
  s->tile = std::clamp<int64_t>(fit / 16 * 16, 16, kMaxTile);
  s->tiles = (s->positions + s->tile - 1) / s->tile;
  s->epsilon = call.epsilon;
  s->center = call.center != 0;
  s->scale = call.scale != 0;
  return kOk;
}

// The statistics of one tile: per position the pivot (first channel's value), the mean of the values
// shifted by it, and rstd (1 when scale is off).
struct TileStatistics {
  float pivot[kMaxTile], mean[kMaxTile], rstd[kMaxTile];
};

void Statistics(const Shape& s, const float* x, int64_t count, TileStatistics* st) {
  const int64_t plane = s.positions;
  const float inv = 1.0f / static_cast<float>(s.channels);
  float* pivot = st->pivot;
  float* mean = st->mean;
  float* rstd = st->rstd;
  std::copy(x, x + count, pivot);
  std::fill(mean, mean + count, 0.0f);
  for (int64_t c = 1; c < s.channels; ++c) {
    const float* row = x + c * plane;
    for (int64_t t = 0; t < count; ++t) mean[t] += row[t] - pivot[t];
  }
  for (int64_t t = 0; t < count; ++t) mean[t] *= inv;
  if (!s.scale) {
    std::fill(rstd, rstd + count, 1.0f);
    return;
  }
  std::fill(rstd, rstd + count, 0.0f);  // the sum of squared deviations, first
  for (int64_t c = 0; c < s.channels; ++c) {
    const float* row = x + c * plane;
    for (int64_t t = 0; t < count; ++t) {
      const float d = (row[t] - pivot[t]) - mean[t];
      rstd[t] += d * d;
    }
  }
  for (int64_t t = 0; t < count; ++t) rstd[t] = 1.0f / std::sqrt(rstd[t] * inv + s.epsilon);
}

// Calls fn(offset, map_offset, count) for each tile of items [i0, i1): where the tile's first element
// is in its group's first channel of x, where it is in the (image, group, position) maps, and its
// number of positions.
template <typename Fn>
void ForEachTile(const Shape& s, int64_t i0, int64_t i1, Fn fn) {
  for (int64_t i = i0; i < i1; ++i) {
    const int64_t plane_set = i / s.tiles;  // image * groups + group
    const int64_t p0 = (i % s.tiles) * s.tile;
    fn(plane_set * s.channels * s.positions + p0, plane_set * s.positions + p0, std::min(s.tile, s.positions - p0));
  }
}

NCNN_ONNX_CLONES void Forward(const Shape& s, const NcnnOnnxChannelsCall& call, int64_t i0, int64_t i1) {
  TileStatistics st;
  ForEachTile(s, i0, i1, [&](int64_t offset, int64_t, int64_t count) {
    Statistics(s, call.x + offset, count, &st);
    for (int64_t c = 0; c < s.channels; ++c) {
      const float* row = call.x + offset + c * s.positions;
      float* out = call.out + offset + c * s.positions;
      if (s.center) {
        for (int64_t t = 0; t < count; ++t) out[t] = ((row[t] - st.pivot[t]) - st.mean[t]) * st.rstd[t];
      } else {
        for (int64_t t = 0; t < count; ++t) out[t] = row[t] * st.rstd[t];
      }
    }
  });
}

NCNN_ONNX_CLONES void Backward(const Shape& s, const NcnnOnnxChannelsCall& call, int64_t i0, int64_t i1) {
  TileStatistics st;
  float mean_g[kMaxTile], coeff[kMaxTile];
  const float inv = 1.0f / static_cast<float>(s.channels);
  ForEachTile(s, i0, i1, [&](int64_t offset, int64_t, int64_t count) {
    Statistics(s, call.x + offset, count, &st);
    std::fill(mean_g, mean_g + count, 0.0f);
    std::fill(coeff, coeff + count, 0.0f);
    for (int64_t c = 0; c < s.channels; ++c) {
      const float* row = call.x + offset + c * s.positions;
      const float* g = call.grad_out + offset + c * s.positions;
      for (int64_t t = 0; t < count; ++t) {
        mean_g[t] += g[t];
        // u = x - mu when centring (its deviations, centred before the product), else x itself.
        coeff[t] += g[t] * (s.center ? (row[t] - st.pivot[t]) - st.mean[t] : row[t]);
      }
    }
    for (int64_t t = 0; t < count; ++t) {
      mean_g[t] = s.center ? mean_g[t] * inv : 0.0f;
      coeff[t] = s.scale ? coeff[t] * st.rstd[t] * st.rstd[t] * inv : 0.0f;
    }
    for (int64_t c = 0; c < s.channels; ++c) {
      const float* row = call.x + offset + c * s.positions;
      const float* g = call.grad_out + offset + c * s.positions;
      float* out = call.grad_x + offset + c * s.positions;
      for (int64_t t = 0; t < count; ++t) {
        const float d = (row[t] - st.pivot[t]) - st.mean[t];
        out[t] = ((g[t] - mean_g[t]) - d * coeff[t]) * st.rstd[t];
      }
    }
  });
}

// The channel sum in double: exact for equal values (and far from rounding for any), so m of a flat
// location is its value and x - m is exactly 0 there.
NCNN_ONNX_CLONES void Centre(const Shape& s, const NcnnOnnxChannelsCall& call, int64_t i0, int64_t i1) {
  double sum[kMaxTile];
  float m[kMaxTile], res[kMaxTile], sq[kMaxTile];
  ForEachTile(s, i0, i1, [&](int64_t offset, int64_t map_offset, int64_t count) {
    std::fill(sum, sum + count, 0.0);
    for (int64_t c = 0; c < s.channels; ++c) {
      const float* row = call.x + offset + c * s.positions;
      for (int64_t t = 0; t < count; ++t) sum[t] += row[t];
    }
    const double channels = static_cast<double>(s.channels);
    for (int64_t t = 0; t < count; ++t) m[t] = static_cast<float>(sum[t] / channels);
    std::fill(res, res + count, 0.0f);
    std::fill(sq, sq + count, 0.0f);
    for (int64_t c = 0; c < s.channels; ++c) {
      const float* row = call.x + offset + c * s.positions;
      float* out = call.out == nullptr ? nullptr : call.out + offset + c * s.positions;
      for (int64_t t = 0; t < count; ++t) {
        const float d = row[t] - m[t];
        res[t] += d;
        sq[t] += d * d;
        if (out != nullptr) out[t] = d;
      }
    }
    std::copy(m, m + count, call.mean + map_offset);
    if (call.residual != nullptr) std::copy(res, res + count, call.residual + map_offset);
    if (call.squares != nullptr) std::copy(sq, sq + count, call.squares + map_offset);
  });
}

template <typename Required, typename Fn>
int Checked(const NcnnOnnxChannelsCall* call, Required required, Fn fn) {
  if (call == nullptr || call->x == nullptr) return kNullTensor;
  if (!required(*call)) return kNullTensor;
  return Guarded([&] {
    Shape s;
    if (const int status = ReadShape(*call, &s); status != kOk) return status;
    const int64_t items = s.batch * s.groups * s.tiles;
    if (items == 0) return static_cast<int>(kOk);
    return Parallel(items, call->threads, [&](int64_t i0, int64_t i1) { fn(s, i0, i1); });
  });
}

}  // namespace
}  // namespace ncnn_onnx::layer

extern "C" {

__attribute__((visibility("default"))) int ncnn_onnx_standardize_forward(const NcnnOnnxChannelsCall* call) {
  using namespace ncnn_onnx::layer;
  return Checked(
      call, [](const NcnnOnnxChannelsCall& c) { return c.out != nullptr; },
      [&](const Shape& s, int64_t i0, int64_t i1) { Forward(s, *call, i0, i1); });
}

__attribute__((visibility("default"))) int ncnn_onnx_standardize_backward(const NcnnOnnxChannelsCall* call) {
  using namespace ncnn_onnx::layer;
  return Checked(
      call, [](const NcnnOnnxChannelsCall& c) { return c.grad_out != nullptr && c.grad_x != nullptr; },
      [&](const Shape& s, int64_t i0, int64_t i1) { Backward(s, *call, i0, i1); });
}

__attribute__((visibility("default"))) int ncnn_onnx_centre(const NcnnOnnxChannelsCall* call) {
  using namespace ncnn_onnx::layer;
  return Checked(
      call, [](const NcnnOnnxChannelsCall& c) { return c.mean != nullptr; },
      [&](const Shape& s, int64_t i0, int64_t i1) { Centre(s, *call, i0, i1); });
}

}  // extern "C"
