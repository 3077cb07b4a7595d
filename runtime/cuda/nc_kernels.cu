// CUDA kernels of ncnn_onnx::NormalizedConv.
//
// 1. Location statistics: for every sample, group and input location, the mean m of the group's channels
//    and q = sum_c (x - m)^2, two passes in float64 (the numerics contract forbids E[v^2] - mu^2).
// 2. Patch statistics from those: a patch is K locations of cg channels, so
//        mu = cg * sum_k m_k / I,   I * var = sum_k (q_k + cg * (m_k - mu)^2)
//    (a padded location has m = q = 0), exact in float64 at K reads per patch instead of I. The mean is
//    stored as a float pair hi + lo: on a near-flat bright patch (mean 200, spread 0.01) float32 rounding
//    of the mean alone would shift every centred value by up to 8e-6, which rstd (up to 316) turns into a
//    visible error.
// 3. Normalized implicit GEMM: each block gathers a tile of patch values into shared memory, centres them
//    there ((v - hi) - lo, exact for v near the mean) and multiplies them with a tile of W. Float32 uses
//    CUDA cores and applies rstd per output; float16 scales by rstd in shared memory (values of order 1)
//    and multiplies on tensor cores with float32 accumulation.
#include "nc_kernels.h"

#include <cuda_fp16.h>
#include <mma.h>

#include <algorithm>
#include <iterator>
#include <type_traits>

namespace ncnn_onnx {
namespace cuda {
namespace {

constexpr int kStatsThreads = 256;

// The geometry with the derived sizes the kernels index with, passed by value.
struct Dims {
  int64_t n, c, m, g, cg, mg, k_count, fan_in, positions, volume;
  int64_t in[3], out[3], k[3], s[3], d[3], pb[3];
  float eps;
  bool center, scale;
};

Dims MakeDims(const ConvGeometry& geo) {
  Dims d{};
  d.n = geo.batch;
  d.c = geo.in_channels;
  d.m = geo.out_channels;
  d.g = geo.group;
  d.cg = geo.group_in_channels;
  d.mg = geo.group_out_channels;
  d.k_count = geo.kernel_size;
  d.fan_in = geo.fan_in;
  d.positions = geo.output_plane;
  d.volume = geo.input_plane;
  for (int i = 0; i < 3; ++i) {
    d.in[i] = geo.input[i];
    d.out[i] = geo.output[i];
    d.k[i] = geo.kernel[i];
    d.s[i] = geo.stride[i];
    d.d[i] = geo.dilation[i];
    d.pb[i] = geo.pad_begin[i];
  }
  d.eps = geo.epsilon;
  d.center = geo.center;
  d.scale = geo.scale;
  return d;
}

// Sizes of the two scratch regions: location statistics (2 doubles per (n, g, location)) first, then
// patch statistics (3 floats per (n, g, position)).
__host__ __device__ inline int64_t LocationCount(const Dims& d) { return d.n * d.g * d.volume; }
__host__ __device__ inline int64_t PositionCount(const Dims& d) { return d.n * d.g * d.positions; }
int64_t CeilDiv(int64_t a, int64_t b) { return (a + b - 1) / b; }

__device__ __forceinline__ float Load(const float* p, int64_t i) { return p[i]; }
__device__ __forceinline__ float Load(const __half* p, int64_t i) { return __half2float(p[i]); }
__device__ __forceinline__ void Store(float* p, int64_t i, float v) { p[i] = v; }
__device__ __forceinline__ void Store(__half* p, int64_t i, float v) { p[i] = __float2half(v); }

__device__ __forceinline__ bool Inside(const Dims& d, int64_t z, int64_t y, int64_t x) {
  return z >= 0 && z < d.in[0] && y >= 0 && y < d.in[1] && x >= 0 && x < d.in[2];
}

// 32 locations x 8 slices of the channels per block: a large group (512 channels of a 7x7 map) would
// otherwise leave a few threads looping over every channel twice.
constexpr int kLocationsPerBlock = 32;
constexpr int kChannelSlices = 8;

template <typename T>
__global__ void LocationStatisticsKernel(Dims d, const T* __restrict__ x, double* __restrict__ locations) {
  __shared__ double partial[kChannelSlices][kLocationsPerBlock];
  __shared__ double mean[kLocationsPerBlock];
  const int lane = threadIdx.x;
  const int slice = threadIdx.y;
  const int64_t index = static_cast<int64_t>(blockIdx.x) * kLocationsPerBlock + lane;  // (n * G + g) * V + l
  const int64_t total = LocationCount(d);
  const bool active = index < total;
  // Channel c of group g in sample n starts at (n * C + g * cg + c) * V = (ng * cg + c) * V.
  const T* p = x;
  if (active) p = x + (index / d.volume) * d.cg * d.volume + index % d.volume;

  double sum = 0.0;
  if (active) {
    for (int64_t c = slice; c < d.cg; c += kChannelSlices) sum += Load(p, c * d.volume);
  }
  partial[slice][lane] = sum;
  __syncthreads();
  if (slice == 0) {
    double all = 0.0;
    for (int s = 0; s < kChannelSlices; ++s) all += partial[s][lane];
    mean[lane] = all / static_cast<double>(d.cg);
  }
  __syncthreads();
  const double m = mean[lane];
  double squares = 0.0;
  if (active) {
    for (int64_t c = slice; c < d.cg; c += kChannelSlices) {
      const double dev = Load(p, c * d.volume) - m;
      squares += dev * dev;
    }
  }
  __syncthreads();  // every thread has read mean[] and partial[] is free again
  partial[slice][lane] = squares;
  __syncthreads();
  if (slice == 0 && active) {
    double all = 0.0;
    for (int s = 0; s < kChannelSlices; ++s) all += partial[s][lane];
    locations[index] = m;
    locations[total + index] = all;
  }
}

// Input coordinates of the first element of output position p's window (negative inside the padding).
struct Corner {
  int64_t z, y, x;
};

__device__ __forceinline__ Corner CornerOf(const Dims& d, int64_t p) {
  const int64_t ox = p % d.out[2];
  const int64_t rest = p / d.out[2];
  const int64_t oy = rest % d.out[1];
  const int64_t oz = rest / d.out[1];
  return {oz * d.s[0] - d.pb[0], oy * d.s[1] - d.pb[1], ox * d.s[2] - d.pb[2]};
}

// stats layout: mu_hi[NGP], mu_lo[NGP], rstd[NGP], index (n * G + g) * P + p.
__global__ void PatchStatisticsKernel(Dims d, const double* __restrict__ locations, float* __restrict__ stats) {
  const int64_t index = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  const int64_t total = PositionCount(d);
  if (index >= total) return;
  const int64_t ng = index / d.positions;
  const Corner corner = CornerOf(d, index % d.positions);
  const double* m = locations + ng * d.volume;
  const double* q = locations + LocationCount(d) + ng * d.volume;
  const double cg = static_cast<double>(d.cg);

  double sum = 0.0;
  for (int64_t kz = 0; kz < d.k[0]; ++kz) {
    const int64_t z = corner.z + kz * d.d[0];
    for (int64_t ky = 0; ky < d.k[1]; ++ky) {
      const int64_t y = corner.y + ky * d.d[1];
      for (int64_t kx = 0; kx < d.k[2]; ++kx) {
        const int64_t x = corner.x + kx * d.d[2];
        if (Inside(d, z, y, x)) sum += m[(z * d.in[1] + y) * d.in[2] + x];
      }
    }
  }
  const double mean = cg * sum / static_cast<double>(d.fan_in);
  double deviation = 0.0;
  for (int64_t kz = 0; kz < d.k[0]; ++kz) {
    const int64_t z = corner.z + kz * d.d[0];
    for (int64_t ky = 0; ky < d.k[1]; ++ky) {
      const int64_t y = corner.y + ky * d.d[1];
      for (int64_t kx = 0; kx < d.k[2]; ++kx) {
        const int64_t x = corner.x + kx * d.d[2];
        if (Inside(d, z, y, x)) {
          const int64_t l = (z * d.in[1] + y) * d.in[2] + x;
          const double dm = m[l] - mean;
          deviation += q[l] + cg * dm * dm;
        } else {
          deviation += cg * mean * mean;
        }
      }
    }
  }
  const double var = deviation / static_cast<double>(d.fan_in);
  const float hi = static_cast<float>(mean);
  stats[index] = hi;
  stats[total + index] = static_cast<float>(mean - static_cast<double>(hi));
  stats[2 * total + index] = d.scale ? static_cast<float>(1.0 / sqrt(var + static_cast<double>(d.eps))) : 1.0f;
}

// Patch element i (i = c * K + kernel offset): its offset from the window's first element and its
// coordinates inside the window; invalid from `end` (the block's last element) on, where it reads as 0 and
// is not centred. Coordinates are 32-bit (LaunchLimitError keeps them in range), offsets 64-bit.
struct Tap {
  int64_t offset;
  int z, y, x;
  bool valid;
};

__device__ __forceinline__ Tap TapOf(const Dims& d, int64_t i, int64_t end) {
  if (i >= end) return {0, 0, 0, 0, false};
  int64_t off = i % d.k_count;
  const int kx = static_cast<int>(off % d.k[2]);
  off /= d.k[2];
  const int ky = static_cast<int>(off % d.k[1]);
  const int kz = static_cast<int>(off / d.k[1]);
  const int z = kz * static_cast<int>(d.d[0]);
  const int y = ky * static_cast<int>(d.d[1]);
  const int x = kx * static_cast<int>(d.d[2]);
  return {(i / d.k_count) * d.volume + (z * d.in[1] + y) * d.in[2] + x, z, y, x, true};
}

// GEMM column j = n * P + p: the element offset of its window's first element (outside the tensor where
// the window starts in the padding), that corner's coordinates, where its outputs go and its statistics;
// stat < 0 past the last column.
struct Column {
  int64_t origin, y_offset, stat;
  int z, y, x;
};

__device__ __forceinline__ Column ColumnOf(const Dims& d, int64_t group, int64_t j) {
  Column col{0, 0, -1, 0, 0, 0};
  if (j >= d.n * d.positions) return col;
  const int64_t n = j / d.positions;
  const int64_t p = j % d.positions;
  const Corner corner = CornerOf(d, p);
  col.origin = (n * d.c + group * d.cg) * d.volume + (corner.z * d.in[1] + corner.y) * d.in[2] + corner.x;
  col.y_offset = n * d.m * d.positions + p;
  col.stat = (n * d.g + group) * d.positions + p;
  col.z = static_cast<int>(corner.z);
  col.y = static_cast<int>(corner.y);
  col.x = static_cast<int>(corner.x);
  return col;
}

// Where (column, tap) reads: kUncounted past the block's last patch row or column (the element contributes
// 0), kPadding inside the padding (it reads 0 and is centred like any value), else its index in X.
constexpr int64_t kUncounted = -1;
constexpr int64_t kPadding = -2;

__device__ __forceinline__ int64_t SourceIndex(const Dims& d, const Column& col, const Tap& tap) {
  if (col.stat < 0 || !tap.valid) return kUncounted;
  const int z = col.z + tap.z;
  const int y = col.y + tap.y;
  const int xx = col.x + tap.x;
  const bool inside = static_cast<unsigned>(z) < static_cast<unsigned>(d.in[0]) &&
                      static_cast<unsigned>(y) < static_cast<unsigned>(d.in[1]) &&
                      static_cast<unsigned>(xx) < static_cast<unsigned>(d.in[2]);
  return inside ? col.origin + tap.offset : kPadding;
}

// The value that enters the product. Applied when the prefetched value is stored to shared memory, not
// when it is loaded: arithmetic on a load right after it would stall the warp until the load returns.
__device__ __forceinline__ float Centre(const Dims& d, float raw, bool counted, float hi, float lo) {
  if (!counted) return 0.0f;
  return d.center ? (raw - hi) - lo : raw;
}

// Split-K: when the output tiles alone cannot fill the GPU (batch 1, 512 channels of 7x7: 8 blocks), the
// patch rows are cut into `count` chunks of `rows` (a multiple of both kernels' k tiles); each chunk's
// block writes its raw sums to `partial` ([chunk][M][N * P]) and ReduceSplitsKernel adds them in a fixed
// order, so results stay deterministic.
struct Split {
  int64_t count = 1;
  int64_t rows = 0;
  float* partial = nullptr;
};

// Both products compute 64 output channels x kTileN columns per block of 256 threads. Each k step gathers its
// tile of patch values into registers while the previous tile is multiplied from shared memory, which
// hides the gathers' memory latency. A thread gathers one column (its window and statistics stay in
// registers) for kRowsPerThread rows of the step.
constexpr int kTileM = 64;
constexpr int kFloatTileN = 256;  // float32: 8 x 8 outputs per thread, enough arithmetic per shared load
constexpr int kHalfTileN = 128;
constexpr int kThreads = 256;

// Column data the epilogue needs, per column of the block.
template <int kTileN>
struct BlockColumns {
  int64_t y_offset[kTileN];
  int64_t stat[kTileN];
  float rstd[kTileN];
};

// The gathering side of a block: this thread's column and its statistics.
struct Gatherer {
  Column col;
  float hi, lo;
};

template <int kTileN>
__device__ __forceinline__ Gatherer SetUpColumns(const Dims& d, int64_t group, int64_t j0, const float* stats,
                                                 BlockColumns<kTileN>& block) {
  const int tid = threadIdx.x;
  const int64_t total = PositionCount(d);
  Gatherer g;
  g.col = ColumnOf(d, group, j0 + tid % kTileN);
  const bool valid = g.col.stat >= 0;
  g.hi = valid ? stats[g.col.stat] : 0.0f;
  g.lo = valid ? stats[total + g.col.stat] : 0.0f;
  if (tid < kTileN) {
    block.y_offset[tid] = g.col.y_offset;
    block.stat[tid] = g.col.stat;
    block.rstd[tid] = valid ? stats[2 * total + g.col.stat] : 0.0f;
  }
  return g;
}

// What a block of the product covers: its group, its chunk of patch rows [k_begin, k_end) and the first
// output channel and column of its tile.
struct Block {
  int64_t group, chunk, k_begin, k_end, m0, j0;
};

__device__ __forceinline__ Block BlockOf(const Dims& d, const Split& split, int tile_rows, int tile_columns) {
  Block block;
  block.group = blockIdx.z % d.g;
  block.chunk = blockIdx.z / d.g;
  block.k_begin = block.chunk * split.rows;
  block.k_end = min(d.fan_in, block.k_begin + split.rows);
  block.m0 = static_cast<int64_t>(blockIdx.y) * tile_rows;
  block.j0 = static_cast<int64_t>(blockIdx.x) * tile_columns;
  return block;
}

// This thread's weights of the step at k0: patch element k0 + tid % kK of the tile rows tid / kK + r * stride.
template <typename T, int kRows, int kK>
__device__ __forceinline__ void FetchWeights(const Dims& d, const Block& block, const T* w_group, int64_t k0,
                                             T (&wr)[kRows]) {
  const int64_t i = k0 + threadIdx.x % kK;
#pragma unroll
  for (int r = 0; r < kRows; ++r) {
    const int64_t m = block.m0 + threadIdx.x / kK + r * (kThreads / kK);
    wr[r] = T{};
    if (m < d.mg && i < block.k_end) wr[r] = w_group[m * d.fan_in + i];
  }
}

// This thread's raw patch values of the step (rows row0 + r * kRowStep of its column); returns the mask
// of those that belong to the patch (Centre needs it when they are stored).
template <typename T, int kRows, int kRowStep>
__device__ __forceinline__ unsigned FetchPatch(const Dims& d, const Column& col, const Tap* taps, int row0,
                                               const T* x, T (&xr)[kRows]) {
  unsigned counted = 0;
#pragma unroll
  for (int r = 0; r < kRows; ++r) {
    const int64_t source = SourceIndex(d, col, taps[row0 + r * kRowStep]);
    counted |= static_cast<unsigned>(source != kUncounted) << r;
    xr[r] = T{};
    if (source >= 0) xr[r] = x[source];
  }
  return counted;
}

// Writes one output of a block: its raw sum to the split's partial sums, else sum * scale + bias to Y
// (scale: rstd for float32, whose product was of centred values; 1 for float16, scaled before the product).
template <typename T, int kTileN>
__device__ __forceinline__ void EmitOutput(const Dims& d, const Split& split, const Block& block,
                                           const BlockColumns<kTileN>& columns, int jj, int64_t m, float sum,
                                           float scale, const T* b, T* y) {
  const int64_t channel = block.group * d.mg + m;
  if (split.partial != nullptr) {
    split.partial[(block.chunk * d.m + channel) * d.n * d.positions + block.j0 + jj] = sum;
    return;
  }
  const float bias = b != nullptr ? Load(b, channel) : 0.0f;
  Store(y, columns.y_offset[jj] + channel * d.positions, sum * scale + bias);
}

// Float32: k steps of 16; each thread gathers one column's 16 rows and owns 8 output channels x 8 columns
// (two runs of 4, so that a warp's shared-memory reads of the patch tile are conflict-free).
constexpr int kFloatK = 16;

__global__ void __launch_bounds__(kThreads)
    FloatGemmKernel(Dims d, Split split, const float* __restrict__ x, const float* __restrict__ w,
                    const float* __restrict__ b, float* __restrict__ y, const float* __restrict__ stats) {
  constexpr int kTileN = kFloatTileN;
  constexpr int kXRows = kFloatK * kTileN / kThreads;  // 16: the whole step of one column
  constexpr int kWRows = kFloatK * kTileM / kThreads;  // 4 weights of one patch element per thread
  static_assert(kXRows == kFloatK, "one gathered column per thread");
  __shared__ __align__(16) float w_tile[kFloatK][kTileM + 4];
  __shared__ __align__(16) float x_tile[kFloatK][kTileN + 4];
  __shared__ BlockColumns<kTileN> columns;
  __shared__ Tap taps[kFloatK];

  const Block block = BlockOf(d, split, kTileM, kTileN);
  const int tid = threadIdx.x;
  const Gatherer gather = SetUpColumns(d, block.group, block.j0, stats, columns);
  const int w_k = tid % kFloatK;
  const int w_m = tid / kFloatK;  // rows w_m + r * (kThreads / kFloatK)
  const float* w_group = w + block.group * d.mg * d.fan_in;

  float xr[kXRows], wr[kWRows];
  unsigned counted = 0;  // bit r: xr[r] is part of the patch
  auto fetch = [&](int64_t k0) {
    FetchWeights<float, kWRows, kFloatK>(d, block, w_group, k0, wr);
    counted = FetchPatch<float, kXRows, 1>(d, gather.col, taps, 0, x, xr);
  };

  if (tid < kFloatK) taps[tid] = TapOf(d, block.k_begin + tid, block.k_end);
  __syncthreads();
  fetch(block.k_begin);
  __syncthreads();  // every thread has read taps[] before the loop overwrites it with the next step's

  const int ty = tid / 32;  // output channels ty * 8 .. + 8: one per warp, so weight reads broadcast
  const int tx = tid % 32;  // columns tx * 4 .. + 4 and kTileN / 2 + tx * 4 .. + 4
  float acc[8][8] = {};
  for (int64_t k0 = block.k_begin; k0 < block.k_end; k0 += kFloatK) {
#pragma unroll
    for (int r = 0; r < kWRows; ++r) w_tile[w_k][w_m + r * (kThreads / kFloatK)] = wr[r];
#pragma unroll
    for (int r = 0; r < kXRows; ++r) x_tile[r][tid] = Centre(d, xr[r], (counted >> r) & 1u, gather.hi, gather.lo);
    if (tid < kFloatK) taps[tid] = TapOf(d, k0 + kFloatK + tid, block.k_end);
    __syncthreads();
    if (k0 + kFloatK < block.k_end) fetch(k0 + kFloatK);
#pragma unroll
    for (int kk = 0; kk < kFloatK; ++kk) {
      const float4 a0 = *reinterpret_cast<const float4*>(&w_tile[kk][ty * 8]);
      const float4 a1 = *reinterpret_cast<const float4*>(&w_tile[kk][ty * 8 + 4]);
      const float4 b0 = *reinterpret_cast<const float4*>(&x_tile[kk][tx * 4]);
      const float4 b1 = *reinterpret_cast<const float4*>(&x_tile[kk][kTileN / 2 + tx * 4]);
      const float av[8] = {a0.x, a0.y, a0.z, a0.w, a1.x, a1.y, a1.z, a1.w};
      const float bv[8] = {b0.x, b0.y, b0.z, b0.w, b1.x, b1.y, b1.z, b1.w};
#pragma unroll
      for (int r = 0; r < 8; ++r)
#pragma unroll
        for (int q = 0; q < 8; ++q) acc[r][q] = fmaf(av[r], bv[q], acc[r][q]);
    }
    __syncthreads();
  }

#pragma unroll
  for (int q = 0; q < 8; ++q) {
    const int jj = (q < 4 ? 0 : kTileN / 2) + tx * 4 + q % 4;
    if (columns.stat[jj] < 0) continue;
#pragma unroll
    for (int r = 0; r < 8; ++r) {
      const int64_t m = block.m0 + ty * 8 + r;
      if (m < d.mg) EmitOutput(d, split, block, columns, jj, m, acc[r][q], columns.rstd[jj], b, y);
    }
  }
}

// Float16: k steps of 32 on tensor cores; 8 warps of 32 x 32 outputs, each 2 x 2 wmma tiles of 16 x 16 x 16.
constexpr int kHalfK = 32;
constexpr int kWmma = 16;

__global__ void __launch_bounds__(kThreads)
    HalfGemmKernel(Dims d, Split split, const __half* __restrict__ x, const __half* __restrict__ w,
                   const __half* __restrict__ b, __half* __restrict__ y, const float* __restrict__ stats) {
  using namespace nvcuda;
  constexpr int kTileN = kHalfTileN;
  constexpr int kXRows = kHalfK * kTileN / kThreads;  // 16
  constexpr int kWRows = kHalfK * kTileM / kThreads;  // 8
  // Row lengths padded by 8 halves / 4 floats against bank conflicts; every fragment pointer stays
  // 32-byte aligned as wmma requires. The output tile reuses the input tiles' memory after the loop.
  struct InputTiles {
    __half w[kTileM][kHalfK + 8];
    __half x[kHalfK][kTileN + 8];
  };
  using OutputTile = float[kTileM][kTileN + 4];
  constexpr size_t kTileBytes = sizeof(InputTiles) > sizeof(OutputTile) ? sizeof(InputTiles) : sizeof(OutputTile);
  __shared__ __align__(32) unsigned char tile_memory[kTileBytes];
  InputTiles& tiles = *reinterpret_cast<InputTiles*>(tile_memory);
  OutputTile& y_tile = *reinterpret_cast<OutputTile*>(tile_memory);
  __shared__ BlockColumns<kTileN> columns;
  __shared__ Tap taps[kHalfK];

  const Block block = BlockOf(d, split, kTileM, kTileN);
  const int tid = threadIdx.x;
  const Gatherer gather = SetUpColumns(d, block.group, block.j0, stats, columns);
  const float rstd = gather.col.stat >= 0 ? stats[2 * PositionCount(d) + gather.col.stat] : 0.0f;
  const int x_col = tid % kTileN;
  const int x_row = tid / kTileN;
  const int w_k = tid % kHalfK;
  const int w_m = tid / kHalfK;
  const __half* w_group = w + block.group * d.mg * d.fan_in;

  __half xr[kXRows], wr[kWRows];
  unsigned counted = 0;  // bit r: xr[r] is part of the patch
  auto fetch = [&](int64_t k0) {
    FetchWeights<__half, kWRows, kHalfK>(d, block, w_group, k0, wr);
    counted = FetchPatch<__half, kXRows, kThreads / kTileN>(d, gather.col, taps, x_row, x, xr);
  };

  if (tid < kHalfK) taps[tid] = TapOf(d, block.k_begin + tid, block.k_end);
  __syncthreads();
  fetch(block.k_begin);
  __syncthreads();  // every thread has read taps[] before the loop overwrites it with the next step's

  const int warp = tid / 32;
  const int warp_m = (warp / 4) * 32;
  const int warp_n = (warp % 4) * 32;
  wmma::fragment<wmma::accumulator, kWmma, kWmma, kWmma, float> acc[2][2];
  for (int r = 0; r < 2; ++r)
    for (int c = 0; c < 2; ++c) wmma::fill_fragment(acc[r][c], 0.0f);

  for (int64_t k0 = block.k_begin; k0 < block.k_end; k0 += kHalfK) {
#pragma unroll
    for (int r = 0; r < kWRows; ++r) tiles.w[w_m + r * (kThreads / kHalfK)][w_k] = wr[r];
#pragma unroll
    for (int r = 0; r < kXRows; ++r) {
      // Scaled by rstd here: the values enter the product as float16 of order 1.
      const float v = Centre(d, __half2float(xr[r]), (counted >> r) & 1u, gather.hi, gather.lo);
      tiles.x[x_row + r * (kThreads / kTileN)][x_col] = __float2half(v * rstd);
    }
    if (tid < kHalfK) taps[tid] = TapOf(d, k0 + kHalfK + tid, block.k_end);
    __syncthreads();
    if (k0 + kHalfK < block.k_end) fetch(k0 + kHalfK);
#pragma unroll
    for (int ks = 0; ks < kHalfK; ks += kWmma) {
      wmma::fragment<wmma::matrix_a, kWmma, kWmma, kWmma, __half, wmma::row_major> a[2];
      wmma::fragment<wmma::matrix_b, kWmma, kWmma, kWmma, __half, wmma::row_major> bf[2];
      for (int r = 0; r < 2; ++r) wmma::load_matrix_sync(a[r], &tiles.w[warp_m + r * kWmma][ks], kHalfK + 8);
      for (int c = 0; c < 2; ++c) wmma::load_matrix_sync(bf[c], &tiles.x[ks][warp_n + c * kWmma], kTileN + 8);
      for (int r = 0; r < 2; ++r)
        for (int c = 0; c < 2; ++c) wmma::mma_sync(acc[r][c], a[r], bf[c], acc[r][c]);
    }
    __syncthreads();
  }

  for (int r = 0; r < 2; ++r)
    for (int c = 0; c < 2; ++c) {
      wmma::store_matrix_sync(&y_tile[warp_m + r * kWmma][warp_n + c * kWmma], acc[r][c], kTileN + 4,
                              wmma::mem_row_major);
    }
  __syncthreads();
  for (int e = tid; e < kTileM * kTileN; e += kThreads) {
    const int mm = e / kTileN;
    const int jj = e % kTileN;  // consecutive threads write neighbouring positions
    const int64_t m = block.m0 + mm;
    if (m < d.mg && columns.stat[jj] >= 0) EmitOutput(d, split, block, columns, jj, m, y_tile[mm][jj], 1.0f, b, y);
  }
}

// Sums the chunks of a split product in order, then applies rstd (float32: the product was of centred
// values) and the bias.
template <typename T>
__global__ void ReduceSplitsKernel(Dims d, Split split, bool apply_rstd, const T* __restrict__ b, T* __restrict__ y,
                                   const float* __restrict__ stats) {
  const int64_t columns = d.n * d.positions;
  const int64_t index = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;  // channel * columns + j
  if (index >= d.m * columns) return;
  const int64_t channel = index / columns;
  const int64_t j = index % columns;
  float sum = 0.0f;
  for (int64_t c = 0; c < split.count; ++c) sum += split.partial[c * d.m * columns + index];
  const int64_t n = j / d.positions;
  const int64_t p = j % d.positions;
  if (apply_rstd) sum *= stats[2 * PositionCount(d) + (n * d.g + channel / d.mg) * d.positions + p];
  const float bias = b != nullptr ? Load(b, channel) : 0.0f;
  Store(y, (n * d.m + channel) * d.positions + p, sum + bias);
}

constexpr int64_t kSplitAlign = 32;     // a multiple of both kernels' k tiles
constexpr int64_t kMinSplitRows = 128;  // fewer rows per chunk cost more in partial sums than they gain
constexpr int64_t kMaxSplits = 32;

int64_t TileColumns(bool half) { return half ? kHalfTileN : kFloatTileN; }

int64_t OutputBlocks(const Dims& d, bool half) {
  return CeilDiv(d.n * d.positions, TileColumns(half)) * CeilDiv(d.mg, kTileM) * d.g;
}

// Chunks of patch rows so that about two blocks per multiprocessor run; 1 where the tiles suffice.
Split PlanSplit(const Dims& d, int multiprocessors, bool half) {
  Split split;
  split.rows = CeilDiv(d.fan_in, kSplitAlign) * kSplitAlign;
  const int64_t blocks = OutputBlocks(d, half);
  const int64_t wanted = 2 * static_cast<int64_t>(multiprocessors);
  if (blocks >= wanted) return split;
  int64_t count = std::min(std::min(CeilDiv(wanted, blocks), d.fan_in / kMinSplitRows), kMaxSplits);
  count = std::min(count, 65535 / d.g);
  if (count <= 1) return split;
  split.rows = CeilDiv(CeilDiv(d.fan_in, count), kSplitAlign) * kSplitAlign;
  split.count = CeilDiv(d.fan_in, split.rows);
  return split;
}

int64_t PartialFloats(const Dims& d, const Split& split) {
  return split.count > 1 ? split.count * d.m * d.n * d.positions : 0;
}

template <typename T>
cudaError_t LaunchStatistics(const Dims& d, const T* x, double* locations, float* stats, cudaStream_t stream) {
  const dim3 block(kLocationsPerBlock, kChannelSlices);
  LocationStatisticsKernel<T><<<static_cast<unsigned>(CeilDiv(LocationCount(d), kLocationsPerBlock)), block, 0,
                                 stream>>>(d, x, locations);
  cudaError_t status = cudaGetLastError();
  if (status != cudaSuccess) return status;
  PatchStatisticsKernel<<<static_cast<unsigned>(CeilDiv(PositionCount(d), kStatsThreads)), kStatsThreads, 0,
                          stream>>>(d, locations, stats);
  return cudaGetLastError();
}

dim3 GemmGrid(const Dims& d, const Split& split, bool half) {
  return dim3(static_cast<unsigned>(CeilDiv(d.n * d.positions, TileColumns(half))),
              static_cast<unsigned>(CeilDiv(d.mg, kTileM)), static_cast<unsigned>(d.g * split.count));
}

bool Empty(const ConvGeometry& geo) { return geo.batch == 0 || geo.out_channels == 0 || geo.output_plane == 0; }

// Scratch layout: location statistics (doubles), patch statistics (floats), split partial sums (floats).
struct ScratchLayout {
  double* locations;
  float* stats;
  float* partial;
};

int64_t StatsFloats(const Dims& d) { return CeilDiv(3 * PositionCount(d), 4) * 4; }  // keeps 16-byte alignment

ScratchLayout Carve(const Dims& d, void* scratch) {
  ScratchLayout layout;
  layout.locations = static_cast<double*>(scratch);
  layout.stats = reinterpret_cast<float*>(layout.locations + 2 * LocationCount(d));
  layout.partial = layout.stats + StatsFloats(d);
  return layout;
}

template <typename T>
cudaError_t Launch(const ConvGeometry& geo, int multiprocessors, const T* x, const T* w, const T* b, T* y,
                   void* scratch, cudaStream_t stream) {
  if (Empty(geo)) return cudaSuccess;
  if (LaunchLimitError(geo) != nullptr) return cudaErrorInvalidConfiguration;
  const Dims d = MakeDims(geo);
  const ScratchLayout layout = Carve(d, scratch);
  cudaError_t status = LaunchStatistics(d, x, layout.locations, layout.stats, stream);
  if (status != cudaSuccess) return status;
  constexpr bool kHalf = std::is_same<T, __half>::value;
  Split split = PlanSplit(d, multiprocessors, kHalf);
  if (split.count > 1) split.partial = layout.partial;
  if constexpr (kHalf) {
    HalfGemmKernel<<<GemmGrid(d, split, kHalf), kThreads, 0, stream>>>(d, split, x, w, b, y, layout.stats);
  } else {
    FloatGemmKernel<<<GemmGrid(d, split, kHalf), kThreads, 0, stream>>>(d, split, x, w, b, y, layout.stats);
  }
  status = cudaGetLastError();
  if (status != cudaSuccess || split.count == 1) return status;
  // Float16 scaled its values by rstd before the product; float32 applies it to the sums.
  ReduceSplitsKernel<T><<<static_cast<unsigned>(CeilDiv(d.m * d.n * d.positions, kStatsThreads)), kStatsThreads, 0,
                          stream>>>(d, split, !kHalf, b, y, layout.stats);
  return cudaGetLastError();
}

}  // namespace

const char* LaunchLimitError(const ConvGeometry& geo) {
  const Dims d = MakeDims(geo);
  constexpr int64_t kMaxCoordinate = int64_t{1} << 30;  // window coordinates and their sums stay 32-bit
  for (int i = 0; i < 3; ++i) {
    const int64_t reach[] = {d.in[i], d.out[i] * d.s[i], d.pb[i], (d.k[i] - 1) * d.d[i]};
    if (*std::max_element(std::begin(reach), std::end(reach)) >= kMaxCoordinate) {
      return "spatial sizes, strides, pads or dilations beyond the CUDA kernel's 32-bit window coordinates";
    }
  }
  if (d.g > 65535) return "group exceeds the CUDA kernel's limit of 65535";
  if (CeilDiv(d.mg, kTileM) > 65535) return "output channels per group exceed the CUDA kernel's launch grid";
  constexpr int64_t kMaxBlocks = 0x7fffffff;
  const int64_t blocks[] = {CeilDiv(d.n * d.positions, kHalfTileN), CeilDiv(LocationCount(d), kLocationsPerBlock),
                            CeilDiv(PositionCount(d), kStatsThreads), CeilDiv(d.m * d.n * d.positions, kStatsThreads)};
  if (*std::max_element(std::begin(blocks), std::end(blocks)) > kMaxBlocks) {
    return "tensors too large for the CUDA kernel's launch grid";
  }
  return nullptr;
}

size_t ScratchBytes(const ConvGeometry& geo, int multiprocessors, bool half) {
  if (Empty(geo)) return 0;
  const Dims d = MakeDims(geo);
  const int64_t floats = StatsFloats(d) + PartialFloats(d, PlanSplit(d, multiprocessors, half));
  return static_cast<size_t>(2 * LocationCount(d) * static_cast<int64_t>(sizeof(double)) +
                             floats * static_cast<int64_t>(sizeof(float)));
}

cudaError_t LaunchNormalizedConv(const ConvGeometry& geo, int multiprocessors, const float* x, const float* w,
                                 const float* b, float* y, void* scratch, cudaStream_t stream) {
  return Launch<float>(geo, multiprocessors, x, w, b, y, scratch, stream);
}

cudaError_t LaunchNormalizedConv(const ConvGeometry& geo, int multiprocessors, const void* x_half,
                                 const void* w_half, const void* b_half, void* y_half, void* scratch,
                                 cudaStream_t stream) {
  return Launch<__half>(geo, multiprocessors, static_cast<const __half*>(x_half), static_cast<const __half*>(w_half),
                        static_cast<const __half*>(b_half), static_cast<__half*>(y_half), scratch, stream);
}

}  // namespace cuda
}  // namespace ncnn_onnx
