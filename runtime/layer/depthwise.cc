// Depthwise NormalizedConv backward for the PyTorch layer (see depthwise.h for why).
//
// Work is split by input channel: a thread owns channels [c0, c1) for the whole batch, so it alone writes
// their output channels, their input gradient and their weight gradient (no atomics, and the result does
// not depend on the thread count). Per image and channel the plane is copied once into a zero-padded
// buffer; every output row is then cut into blocks of columns, and each block walks the kernel taps, each
// tap one strided run of the padded row, with the block's statistics held in vector registers.
#include "depthwise.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <vector>

#include "common/checked_math.h"
#include "parallel.h"

namespace ncnn_onnx::layer {
namespace {

// Columns of an output row are processed in blocks of kBlock (see Block below).
constexpr int64_t kBlock = 16;

// Sizes as three dims (leading dims of lower ranks are 1), plus what the loops derive from them.
struct Shape {
  int64_t batch = 0, channels = 0, multiplier = 0;
  int64_t input[3] = {1, 1, 1}, output[3] = {1, 1, 1}, kernel[3] = {1, 1, 1};
  int64_t stride[3] = {1, 1, 1}, dilation[3] = {1, 1, 1}, pad[3] = {0, 0, 0};
  int64_t padded[3] = {1, 1, 1};  // extents of the zero-padded plane, wide enough for every window
  int64_t taps = 1, input_plane = 1, output_plane = 1, padded_plane = 1;
  // Floats allocated for a padded plane: kBlock strided columns past its end (zeros), so that every
  // block, a row's last one included, loads whole vectors.
  int64_t padded_size = 1;
  std::vector<int64_t> tap_offset;  // offset of each kernel tap in the padded plane
  // The taps in the order the backward pass adds their input gradients: the last dim slowest, so that
  // consecutive read-add-writes of the gradient plane fall on different rows. Neighbouring taps of one
  // row overlap but for one column, and a load overlapping the store just before it waited for that
  // store to retire (a third of a depthwise backward's time).
  std::vector<int64_t> backward_taps;
  float epsilon = 0;
  bool center = true, scale = true;
};

// Fills s from the call. Every size the kernels index with, the tensors' and the buffers' element counts
// included, is computed with overflow-checked arithmetic (common/checked_math.h), which throws
// InvalidArgument for a size that wraps.
int ReadShape(const NcnnOnnxDepthwiseCall& call, Shape* s) {
  if (call.rank < 1 || call.rank > 3 || call.batch < 0 || call.channels < 1 || call.multiplier < 1)
    return kBadShape;
  s->batch = call.batch;
  s->channels = call.channels;
  s->multiplier = call.multiplier;
  const int64_t lead = 3 - call.rank;
  for (int64_t d = 0; d < call.rank; ++d) {
    const int64_t t = lead + d;
    s->input[t] = call.input[d];
    s->output[t] = call.output[d];
    s->kernel[t] = call.kernel[d];
    s->stride[t] = call.stride[d];
    s->dilation[t] = call.dilation[d];
    s->pad[t] = call.pad_begin[d];
  }
  s->taps = 1;
  s->input_plane = s->output_plane = s->padded_plane = 1;
  const char* what = "a depthwise layer's size";
  for (int t = 0; t < 3; ++t) {
    if (s->input[t] < 1 || s->output[t] < 1 || s->kernel[t] < 1 || s->stride[t] < 1 || s->dilation[t] < 1 ||
        s->pad[t] < 0)
      return kBadShape;
    const int64_t reach = CheckedAdd(CheckedMul(s->output[t] - 1, s->stride[t], what),
                                     CheckedAdd(CheckedMul(s->kernel[t] - 1, s->dilation[t], what), 1, what), what);
    s->padded[t] = std::max(CheckedAdd(s->pad[t], s->input[t], what), reach);
    s->taps = CheckedMul(s->taps, s->kernel[t], what);
    s->input_plane = CheckedMul(s->input_plane, s->input[t], what);
    s->output_plane = CheckedMul(s->output_plane, s->output[t], what);
    s->padded_plane = CheckedMul(s->padded_plane, s->padded[t], what);
  }
  s->padded_size = CheckedAdd(s->padded_plane, CheckedMul(kBlock, s->stride[2], what), what);
  // The element counts of x, y, W and the weight-gradient lanes (BackwardBuffers).
  const int64_t planes = CheckedMul(s->batch, s->channels, what);
  CheckedMul(planes, s->input_plane, what);
  CheckedMul(CheckedMul(planes, s->multiplier, what), s->output_plane, what);
  CheckedMul(CheckedMul(CheckedMul(s->channels, s->multiplier, what), s->taps, what), kBlock, what);
  s->tap_offset.clear();
  for (int64_t k0 = 0; k0 < s->kernel[0]; ++k0)
    for (int64_t k1 = 0; k1 < s->kernel[1]; ++k1)
      for (int64_t k2 = 0; k2 < s->kernel[2]; ++k2)
        s->tap_offset.push_back((k0 * s->dilation[0] * s->padded[1] + k1 * s->dilation[1]) * s->padded[2] +
                                k2 * s->dilation[2]);
  s->backward_taps.clear();
  for (int64_t k2 = 0; k2 < s->kernel[2]; ++k2)
    for (int64_t k01 = 0; k01 < s->kernel[0] * s->kernel[1]; ++k01) s->backward_taps.push_back(k01 * s->kernel[2] + k2);
  s->epsilon = call.epsilon;
  s->center = call.center != 0;
  s->scale = call.scale != 0;
  return kOk;
}

// Calls fn(input_offset, padded_offset) for each input row (the last dim) of a plane: where the row
// starts in the input plane and in the zero-padded one.
template <typename RowFn>
void ForEachInputRow(const Shape& s, RowFn fn) {
  for (int64_t i0 = 0; i0 < s.input[0]; ++i0)
    for (int64_t i1 = 0; i1 < s.input[1]; ++i1)
      fn((i0 * s.input[1] + i1) * s.input[2], ((i0 + s.pad[0]) * s.padded[1] + i1 + s.pad[1]) * s.padded[2] + s.pad[2]);
}

// One input plane into the zero-padded buffer.
void FillPadded(const Shape& s, const float* plane, float* padded) {
  std::fill(padded, padded + s.padded_plane, 0.0f);
  const size_t row_bytes = static_cast<size_t>(s.input[2]) * sizeof(float);
  ForEachInputRow(s, [&](int64_t in, int64_t pad) { std::memcpy(padded + pad, plane + in, row_bytes); });
}

// The gradient of the padded plane back on the input plane (the padding's share is dropped).
void CropPadded(const Shape& s, const float* padded, float* plane) {
  const size_t row_bytes = static_cast<size_t>(s.input[2]) * sizeof(float);
  ForEachInputRow(s, [&](int64_t in, int64_t pad) { std::memcpy(plane + in, padded + pad, row_bytes); });
}

// A block of kBlock columns is one GCC/Clang vector value: its statistics stay in registers while the
// loops walk the kernel taps, and the compiler lowers the vector arithmetic to whatever the function's
// clone targets (AVX-512, AVX2, SSE2). A block at the end of a row holds fewer columns: its other lanes
// read whatever follows in the padded plane and are never stored nor summed.
typedef float Block __attribute__((vector_size(kBlock * sizeof(float))));

// Blocks kept in memory (one per output channel, or per channel and tap) live in float arrays: a
// std::vector of an over-aligned vector type is not guaranteed its alignment here, so they are copied
// in and out (the compiler turns the copies into unaligned vector loads and stores).
inline Block Get(const std::vector<float>& blocks, int64_t index) {
  Block v;
  std::memcpy(&v, blocks.data() + index * kBlock, sizeof v);
  return v;
}
inline void Put(std::vector<float>* blocks, int64_t index, Block v) {
  std::memcpy(blocks->data() + index * kBlock, &v, sizeof v);
}

inline Block Splat(float v) { return Block{} + v; }

// The block's values at one tap: `row` points at the tap's value for the block's first column. All
// kBlock lanes are read (the padded plane has room, Shape::padded_size), whether or not they are columns.
template <bool kUnitStride>
inline Block Load(const float* row, int64_t stride) {
  Block v;
  if (kUnitStride) {
    std::memcpy(&v, row, sizeof v);
  } else {
    for (int64_t i = 0; i < kBlock; ++i) v[i] = row[i * stride];
  }
  return v;
}

// `count` values from memory, zeros in the other lanes.
template <bool kFull>
inline Block LoadPart(const float* p, int64_t count) {
  Block v{};
  if (kFull) {
    std::memcpy(&v, p, sizeof v);
  } else {
    for (int64_t i = 0; i < count; ++i) v[i] = p[i];
  }
  return v;
}

template <bool kFull>
inline void Store(float* out, Block v, int64_t count) {
  if (kFull) {
    std::memcpy(out, &v, sizeof v);
  } else {
    for (int64_t i = 0; i < count; ++i) out[i] = v[i];
  }
}

// Per block column: the patch mean, the deviations' own mean `shift` (the corrected two-pass step) and
// 1/sqrt(var + eps) (1 without scaling).
struct BlockStatistics {
  Block mean, shift, rstd;
};

// Statistics of the kBlock columns whose first window corner is `base`, and `lin`
// (one block per output channel): the unscaled pre-bias outputs W . (v - mean) with centring, W . v
// without. w: the channel's weights (multiplier x taps); wsum: their per-output-channel sums.
template <bool kUnitStride>
BlockStatistics Statistics(const Shape& s, const float* base, const float* w, const float* wsum,
                           std::vector<float>* lin) {
  const int64_t st = s.stride[2];
  const int64_t* tap = s.tap_offset.data();
  const int64_t taps = s.taps;
  // Even and odd taps in two chains of sums, joined at the end: one chain waited on an add's latency at
  // every tap.
  const Block inf = Splat(std::numeric_limits<float>::infinity());
  Block sum0{}, sum1{}, low0 = inf, low1 = inf, high0 = -inf, high1 = -inf;
  int64_t t = 0;
  for (; t + 1 < taps; t += 2) {
    const Block v0 = Load<kUnitStride>(base + tap[t], st);
    const Block v1 = Load<kUnitStride>(base + tap[t + 1], st);
    sum0 += v0;
    sum1 += v1;
    low0 = v0 < low0 ? v0 : low0;
    low1 = v1 < low1 ? v1 : low1;
    high0 = v0 > high0 ? v0 : high0;
    high1 = v1 > high1 ? v1 : high1;
  }
  if (t < taps) {
    const Block v0 = Load<kUnitStride>(base + tap[t], st);
    sum0 += v0;
    low0 = v0 < low0 ? v0 : low0;
    high0 = v0 > high0 ? v0 : high0;
  }
  const Block low = low1 < low0 ? low1 : low0;
  const Block high = high1 > high0 ? high1 : high0;
  const float inv_taps = 1.0f / static_cast<float>(taps);
  BlockStatistics out;
  // An exactly flat patch: its value itself, since the rounded mean of equal values need not give it back.
  out.mean = low == high ? low : (sum0 + sum1) * inv_taps;
  Block s1{}, s2{};
  if (s.multiplier > 1) std::fill(lin->begin(), lin->end(), 0.0f);
  Block single{};  // lin of a layer with one output channel per input channel, kept in a register
  if (s.multiplier == 1 && s.center) {
    // The common case (one output channel per input channel, centred) in two chains as above.
    Block s1b{}, s2b{}, singleb{};
    for (t = 0; t + 1 < taps; t += 2) {
      const Block d0 = Load<kUnitStride>(base + tap[t], st) - out.mean;
      const Block d1 = Load<kUnitStride>(base + tap[t + 1], st) - out.mean;
      s1 += d0;
      s1b += d1;
      s2 += d0 * d0;
      s2b += d1 * d1;
      single += w[t] * d0;
      singleb += w[t + 1] * d1;
    }
    if (t < taps) {
      const Block d0 = Load<kUnitStride>(base + tap[t], st) - out.mean;
      s1 += d0;
      s2 += d0 * d0;
      single += w[t] * d0;
    }
    s1 += s1b;
    s2 += s2b;
    single += singleb;
  } else {
    for (t = 0; t < taps; ++t) {
      const Block v = Load<kUnitStride>(base + tap[t], st);
      const Block d = v - out.mean;
      s1 += d;
      s2 += d * d;
      const Block term = s.center ? d : v;
      if (s.multiplier == 1) {
        single += w[t] * term;
      } else {
        for (int64_t j = 0; j < s.multiplier; ++j) Put(lin, j, Get(*lin, j) + w[j * taps + t] * term);
      }
    }
  }
  if (s.multiplier == 1) Put(lin, 0, single);
  out.shift = s1 * inv_taps;
  Block var = s2 * inv_taps - out.shift * out.shift;
  var = var < 0.0f ? Splat(0.0f) : var;  // keeps NaN
  if (s.scale) {
    for (int64_t i = 0; i < kBlock; ++i) out.rstd[i] = 1.0f / std::sqrt(var[i] + s.epsilon);
  } else {
    out.rstd = Splat(1.0f);
  }
  if (s.center) {
    for (int64_t j = 0; j < s.multiplier; ++j) Put(lin, j, Get(*lin, j) - out.shift * wsum[j]);
  }
  return out;
}

// Calls fn(block_base, first_output, count) for every block of every output row of a padded plane;
// block_base is the block's first window corner, as an offset in the plane.
template <typename BlockFn>
void ForEachBlock(const Shape& s, BlockFn fn) {
  for (int64_t o0 = 0; o0 < s.output[0]; ++o0)
    for (int64_t o1 = 0; o1 < s.output[1]; ++o1) {
      const int64_t row = (o0 * s.stride[0] * s.padded[1] + o1 * s.stride[1]) * s.padded[2];
      const int64_t out_row = (o0 * s.output[1] + o1) * s.output[2];
      for (int64_t i0 = 0; i0 < s.output[2]; i0 += kBlock)
        fn(row + i0 * s.stride[2], out_row + i0, std::min(kBlock, s.output[2] - i0));
    }
}

std::vector<float> WeightSums(const Shape& s, const float* w) {
  std::vector<float> sums(static_cast<size_t>(s.multiplier));
  for (int64_t j = 0; j < s.multiplier; ++j) {
    float total = 0.0f;
    for (int64_t t = 0; t < s.taps; ++t) total += w[j * s.taps + t];
    sums[j] = total;
  }
  return sums;
}

// What the backward pass of one channel keeps: `lin` and `coef` (a block per output channel), the weight
// gradient per block column (multiplier x taps blocks, summed over the lanes at the end), and the weights
// centred per output channel (multiplier x taps; the weights themselves without centring).
struct BackwardBuffers {
  explicit BackwardBuffers(const Shape& s)
      : lin(static_cast<size_t>(s.multiplier * kBlock)), coef(lin.size()),
        grad_w(static_cast<size_t>(s.multiplier * s.taps * kBlock)), w_centred(static_cast<size_t>(s.multiplier * s.taps)) {}
  std::vector<float> lin, coef, grad_w, w_centred;
};

// With r = rstd (1 without scaling), g_j the output gradients and lin_j as above, per patch
//   dv_t = sum_j r g_j (W_jt - center * mean(W_j))  -  e (v_t - mean),   e = scale * r^3 sum_j g_j lin_j / K,
//   dW_jt += r g_j (v_t - mean, or v_t uncentred)
// (the formulas of _algorithm.backward for one channel per group). The weights are centred before the
// product, so a 1x1 depthwise patch (always flat) gets a gradient of exactly 0, as it should.
template <bool kUnitStride, bool kFull>
void BackwardBlock(const Shape& s, const float* base, int64_t count, const float* w, const float* wsum,
                   const float* gy, float* grad_base, BackwardBuffers* b) {
  const int64_t st = s.stride[2];
  typedef int32_t Lanes __attribute__((vector_size(kBlock * sizeof(int32_t))));
  Lanes lane;
  for (int i = 0; i < kBlock; ++i) lane[i] = i;
  const BlockStatistics stats = Statistics<kUnitStride>(s, base, w, wsum, &b->lin);
  Block e{};
  for (int64_t j = 0; j < s.multiplier; ++j) {
    const Block g = LoadPart<kFull>(gy + j * s.output_plane, count);
    Put(&b->coef, j, stats.rstd * g);
    e += g * Get(b->lin, j);
  }
  e = s.scale ? e * stats.rstd * stats.rstd * stats.rstd * (1.0f / static_cast<float>(s.taps)) : Block{};
  for (const int64_t t : s.backward_taps) {
    const Block v = Load<kUnitStride>(base + s.tap_offset[t], st);
    const Block centred = (v - stats.mean) - stats.shift;
    // Lanes past the row's end hold other rows' values, possibly inf: kept out of the weight gradient.
    const Block term = kFull ? (s.center ? centred : v) : (lane < static_cast<int32_t>(count) ? (s.center ? centred : v) : Block{});
    Block dv = -e * centred;
    for (int64_t j = 0; j < s.multiplier; ++j) {
      const Block coef = Get(b->coef, j);
      dv += coef * b->w_centred[j * s.taps + t];
      Put(&b->grad_w, j * s.taps + t, Get(b->grad_w, j * s.taps + t) + coef * term);
    }
    if (grad_base) {
      // Columns of one tap never share an input location, so the scatter has no conflicts.
      float* target = grad_base + s.tap_offset[t];
      if (kUnitStride && kFull) {
        Block sum;
        std::memcpy(&sum, target, sizeof sum);
        sum += dv;
        std::memcpy(target, &sum, sizeof sum);
      } else {
        for (int64_t i = 0; i < (kFull ? kBlock : count); ++i) target[kUnitStride ? i : i * st] += dv[i];
      }
    }
  }
}

template <bool kUnitStride>
void BackwardChannels(const Shape& s, const NcnnOnnxDepthwiseCall& call, int64_t c0, int64_t c1) {
  std::vector<float> padded(static_cast<size_t>(s.padded_size));
  std::vector<float> grad_padded(call.grad_x ? static_cast<size_t>(s.padded_size) : 0);
  BackwardBuffers b(s);
  const float inv_taps = 1.0f / static_cast<float>(s.taps);
  for (int64_t c = c0; c < c1; ++c) {
    const float* w = call.weight + c * s.multiplier * s.taps;
    const std::vector<float> wsum = WeightSums(s, w);
    for (int64_t j = 0; j < s.multiplier; ++j)
      for (int64_t t = 0; t < s.taps; ++t)
        b.w_centred[j * s.taps + t] = w[j * s.taps + t] - (s.center ? wsum[j] * inv_taps : 0.0f);
    std::fill(b.grad_w.begin(), b.grad_w.end(), 0.0f);
    for (int64_t img = 0; img < s.batch; ++img) {
      FillPadded(s, call.x + (img * s.channels + c) * s.input_plane, padded.data());
      std::fill(grad_padded.begin(), grad_padded.end(), 0.0f);
      const float* gy = call.grad_y + (img * s.channels + c) * s.multiplier * s.output_plane;
      ForEachBlock(s, [&](int64_t base, int64_t out, int64_t count) {
        float* grad_base = call.grad_x ? grad_padded.data() + base : nullptr;
        if (count == kBlock)
          BackwardBlock<kUnitStride, true>(s, padded.data() + base, count, w, wsum.data(), gy + out, grad_base, &b);
        else
          BackwardBlock<kUnitStride, false>(s, padded.data() + base, count, w, wsum.data(), gy + out, grad_base, &b);
      });
      if (call.grad_x) CropPadded(s, grad_padded.data(), call.grad_x + (img * s.channels + c) * s.input_plane);
    }
    if (call.grad_weight) {
      for (int64_t jt = 0; jt < s.multiplier * s.taps; ++jt) {
        float total = 0.0f;
        for (int64_t i = 0; i < kBlock; ++i) total += b.grad_w[jt * kBlock + i];
        call.grad_weight[c * s.multiplier * s.taps + jt] = total;
      }
    }
  }
}

NCNN_ONNX_CLONES void RunBackward(const Shape& s, const NcnnOnnxDepthwiseCall& call, int64_t c0, int64_t c1) {
  if (s.stride[2] == 1) BackwardChannels<true>(s, call, c0, c1);
  else BackwardChannels<false>(s, call, c0, c1);
}

}  // namespace
}  // namespace ncnn_onnx::layer

extern "C" {

__attribute__((visibility("default"))) int ncnn_onnx_depthwise_backward(const NcnnOnnxDepthwiseCall* call) {
  using namespace ncnn_onnx::layer;
  if (call == nullptr || call->x == nullptr || call->weight == nullptr || call->grad_y == nullptr) return kNullTensor;
  return Guarded([&] {
    Shape s;
    if (const int status = ReadShape(*call, &s); status != kOk) return status;
    if (s.batch == 0) return static_cast<int>(kOk);
    return Parallel(s.channels, call->threads, [&](int64_t c0, int64_t c1) { RunBackward(s, *call, c0, c1); });
  });
}

}  // extern "C"
