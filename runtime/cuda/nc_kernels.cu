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

Dims MakeDims(const DeviceGeometry& geo) {
  Dims d{};
  d.n = geo.batch;
  d.c = geo.in_channels;
  d.m = geo.out_channels;
  d.g = geo.groups;
  d.cg = d.c / d.g;
  d.mg = d.m / d.g;
  d.k_count = geo.kernel[0] * geo.kernel[1] * geo.kernel[2];
  d.fan_in = d.cg * d.k_count;
  d.positions = geo.out_size[0] * geo.out_size[1] * geo.out_size[2];
  d.volume = geo.in_size[0] * geo.in_size[1] * geo.in_size[2];
  for (int i = 0; i < 3; ++i) {
    d.in[i] = geo.in_size[i];
    d.out[i] = geo.out_size[i];
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

__device__ __forceinline__ bool Inside(const Dims& d, int64_t z, int64_t y, int64_t x) {
  return z >= 0 && z < d.in[0] && y >= 0 && y < d.in[1] && x >= 0 && x < d.in[2];
}

template <typename T>
__global__ void LocationStatisticsKernel(Dims d, const T* __restrict__ x, double* __restrict__ locations) {
  const int64_t index = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;  // (n * G + g) * V + l
  const int64_t total = LocationCount(d);
  if (index >= total) return;
  const int64_t ng = index / d.volume;
  const int64_t l = index % d.volume;
  // Channel c of group g in sample n starts at (n * C + g * cg + c) * V = (ng * cg + c) * V.
  const T* p = x + ng * d.cg * d.volume + l;
  double sum = 0.0;
  for (int64_t c = 0; c < d.cg; ++c) sum += Load(p, c * d.volume);
  const double mean = sum / static_cast<double>(d.cg);
  double squares = 0.0;
  for (int64_t c = 0; c < d.cg; ++c) {
    const double dev = Load(p, c * d.volume) - mean;
    squares += dev * dev;
  }
  locations[index] = mean;
  locations[total + index] = squares;
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

// Patch element i (i = c * K + kernel offset): its channel's offset and its offsets inside the window;
// channel < 0 past the last element, which reads as 0 and is not centred.
struct Tap {
  int64_t channel, z, y, x;
};

__device__ __forceinline__ Tap TapOf(const Dims& d, int64_t i) {
  if (i >= d.fan_in) return {-1, 0, 0, 0};
  int64_t off = i % d.k_count;
  const int64_t kx = off % d.k[2];
  off /= d.k[2];
  const int64_t ky = off % d.k[1];
  const int64_t kz = off / d.k[1];
  return {(i / d.k_count) * d.volume, kz * d.d[0], ky * d.d[1], kx * d.d[2]};
}

// GEMM column j = n * P + p: where its window reads, where its outputs go, and its statistics; stat < 0
// past the last column.
struct Column {
  int64_t base, y_offset, stat;
  Corner corner;
};

__device__ __forceinline__ Column ColumnOf(const Dims& d, int64_t group, int64_t j) {
  Column col{0, 0, -1, {0, 0, 0}};
  if (j >= d.n * d.positions) return col;
  const int64_t n = j / d.positions;
  const int64_t p = j % d.positions;
  col.base = (n * d.c + group * d.cg) * d.volume;
  col.y_offset = n * d.m * d.positions + p;
  col.stat = (n * d.g + group) * d.positions + p;
  col.corner = CornerOf(d, p);
  return col;
}

// The centred patch value of (column, tap): padding reads 0 and is centred like any other value.
template <typename T>
__device__ __forceinline__ float CentredValue(const T* x, const Dims& d, const Column& col, const Tap& tap,
                                              float hi, float lo) {
  if (col.stat < 0 || tap.channel < 0) return 0.0f;
  const int64_t z = col.corner.z + tap.z;
  const int64_t y = col.corner.y + tap.y;
  const int64_t xx = col.corner.x + tap.x;
  const float v = Inside(d, z, y, xx) ? Load(x, col.base + tap.channel + (z * d.in[1] + y) * d.in[2] + xx) : 0.0f;
  return d.center ? (v - hi) - lo : v;
}

// Float32: 64 x 64 outputs per block of 256 threads, each thread 4 x 4.
constexpr int kTileM = 64;
constexpr int kTileN = 64;
constexpr int kTileK = 16;
constexpr int kFloatThreads = 256;

__global__ void __launch_bounds__(kFloatThreads)
    FloatGemmKernel(Dims d, const float* __restrict__ x, const float* __restrict__ w, const float* __restrict__ b,
                    float* __restrict__ y, const float* __restrict__ stats) {
  __shared__ float w_tile[kTileK][kTileM + 4];
  __shared__ float x_tile[kTileK][kTileN + 4];
  __shared__ Column cols[kTileN];
  __shared__ float col_hi[kTileN], col_lo[kTileN], col_rstd[kTileN];
  __shared__ Tap taps[kTileK];

  const int64_t group = blockIdx.z;
  const int64_t m0 = static_cast<int64_t>(blockIdx.y) * kTileM;
  const int64_t j0 = static_cast<int64_t>(blockIdx.x) * kTileN;
  const int64_t total = PositionCount(d);
  const int tid = threadIdx.x;
  if (tid < kTileN) {
    const Column col = ColumnOf(d, group, j0 + tid);
    cols[tid] = col;
    col_hi[tid] = col.stat >= 0 ? stats[col.stat] : 0.0f;
    col_lo[tid] = col.stat >= 0 ? stats[total + col.stat] : 0.0f;
    col_rstd[tid] = col.stat >= 0 ? stats[2 * total + col.stat] : 0.0f;
  }

  const int ty = tid / 16;
  const int tx = tid % 16;
  float acc[4][4] = {};
  const float* w_group = w + group * d.mg * d.fan_in;

  for (int64_t k0 = 0; k0 < d.fan_in; k0 += kTileK) {
    if (tid < kTileK) taps[tid] = TapOf(d, k0 + tid);
    __syncthreads();
    for (int e = tid; e < kTileK * kTileM; e += kFloatThreads) {
      const int mm = e / kTileK;
      const int kk = e % kTileK;  // consecutive threads read consecutive weights
      const int64_t m = m0 + mm;
      const int64_t i = k0 + kk;
      w_tile[kk][mm] = (m < d.mg && i < d.fan_in) ? w_group[m * d.fan_in + i] : 0.0f;
    }
    for (int e = tid; e < kTileK * kTileN; e += kFloatThreads) {
      const int kk = e / kTileN;
      const int jj = e % kTileN;  // consecutive threads read neighbouring positions
      x_tile[kk][jj] = CentredValue(x, d, cols[jj], taps[kk], col_hi[jj], col_lo[jj]);
    }
    __syncthreads();
#pragma unroll
    for (int kk = 0; kk < kTileK; ++kk) {
      float a[4], bv[4];
#pragma unroll
      for (int r = 0; r < 4; ++r) a[r] = w_tile[kk][ty * 4 + r];
#pragma unroll
      for (int q = 0; q < 4; ++q) bv[q] = x_tile[kk][tx * 4 + q];
#pragma unroll
      for (int r = 0; r < 4; ++r)
#pragma unroll
        for (int q = 0; q < 4; ++q) acc[r][q] = fmaf(a[r], bv[q], acc[r][q]);
    }
    __syncthreads();
  }

  for (int q = 0; q < 4; ++q) {
    const int jj = tx * 4 + q;
    if (cols[jj].stat < 0) continue;
    for (int r = 0; r < 4; ++r) {
      const int64_t m = m0 + ty * 4 + r;
      if (m >= d.mg) continue;
      const int64_t channel = group * d.mg + m;
      const float bias = b != nullptr ? b[channel] : 0.0f;
      y[cols[jj].y_offset + channel * d.positions] = acc[r][q] * col_rstd[jj] + bias;
    }
  }
}

// Float16: 64 x 64 outputs per block of 4 warps, each warp 32 x 32 as 2 x 2 tensor-core tiles of 16 x 16 x 16.
constexpr int kHalfK = 32;
constexpr int kHalfThreads = 128;
constexpr int kWmma = 16;

__global__ void __launch_bounds__(kHalfThreads)
    HalfGemmKernel(Dims d, const __half* __restrict__ x, const __half* __restrict__ w, const __half* __restrict__ b,
                   __half* __restrict__ y, const float* __restrict__ stats) {
  using namespace nvcuda;
  // Row lengths padded by 8 halves / 4 floats against bank conflicts; every fragment pointer stays
  // 32-byte aligned as wmma requires.
  __shared__ __align__(32) __half w_tile[kTileM][kHalfK + 8];
  __shared__ __align__(32) __half x_tile[kHalfK][kTileN + 8];
  __shared__ __align__(32) float y_tile[kTileM][kTileN + 4];
  __shared__ Column cols[kTileN];
  __shared__ float col_hi[kTileN], col_lo[kTileN], col_rstd[kTileN];
  __shared__ Tap taps[kHalfK];

  const int64_t group = blockIdx.z;
  const int64_t m0 = static_cast<int64_t>(blockIdx.y) * kTileM;
  const int64_t j0 = static_cast<int64_t>(blockIdx.x) * kTileN;
  const int64_t total = PositionCount(d);
  const int tid = threadIdx.x;
  if (tid < kTileN) {
    const Column col = ColumnOf(d, group, j0 + tid);
    cols[tid] = col;
    col_hi[tid] = col.stat >= 0 ? stats[col.stat] : 0.0f;
    col_lo[tid] = col.stat >= 0 ? stats[total + col.stat] : 0.0f;
    col_rstd[tid] = col.stat >= 0 ? stats[2 * total + col.stat] : 0.0f;
  }

  const int warp = tid / 32;
  const int warp_m = (warp / 2) * 32;
  const int warp_n = (warp % 2) * 32;
  wmma::fragment<wmma::accumulator, kWmma, kWmma, kWmma, float> acc[2][2];
  for (int r = 0; r < 2; ++r)
    for (int c = 0; c < 2; ++c) wmma::fill_fragment(acc[r][c], 0.0f);
  const __half* w_group = w + group * d.mg * d.fan_in;
  const __half zero = __float2half(0.0f);

  for (int64_t k0 = 0; k0 < d.fan_in; k0 += kHalfK) {
    if (tid < kHalfK) taps[tid] = TapOf(d, k0 + tid);
    __syncthreads();
    for (int e = tid; e < kHalfK * kTileM; e += kHalfThreads) {
      const int mm = e / kHalfK;
      const int kk = e % kHalfK;
      const int64_t m = m0 + mm;
      const int64_t i = k0 + kk;
      w_tile[mm][kk] = (m < d.mg && i < d.fan_in) ? w_group[m * d.fan_in + i] : zero;
    }
    for (int e = tid; e < kHalfK * kTileN; e += kHalfThreads) {
      const int kk = e / kTileN;
      const int jj = e % kTileN;
      const float v = CentredValue(x, d, cols[jj], taps[kk], col_hi[jj], col_lo[jj]);
      x_tile[kk][jj] = __float2half(v * col_rstd[jj]);
    }
    __syncthreads();
#pragma unroll
    for (int ks = 0; ks < kHalfK; ks += kWmma) {
      wmma::fragment<wmma::matrix_a, kWmma, kWmma, kWmma, __half, wmma::row_major> a[2];
      wmma::fragment<wmma::matrix_b, kWmma, kWmma, kWmma, __half, wmma::row_major> bf[2];
      for (int r = 0; r < 2; ++r) wmma::load_matrix_sync(a[r], &w_tile[warp_m + r * kWmma][ks], kHalfK + 8);
      for (int c = 0; c < 2; ++c) wmma::load_matrix_sync(bf[c], &x_tile[ks][warp_n + c * kWmma], kTileN + 8);
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
  for (int e = tid; e < kTileM * kTileN; e += kHalfThreads) {
    const int mm = e / kTileN;
    const int jj = e % kTileN;  // consecutive threads write neighbouring positions
    const int64_t m = m0 + mm;
    if (m >= d.mg || cols[jj].stat < 0) continue;
    const int64_t channel = group * d.mg + m;
    const float bias = b != nullptr ? __half2float(b[channel]) : 0.0f;
    y[cols[jj].y_offset + channel * d.positions] = __float2half(y_tile[mm][jj] + bias);
  }
}

template <typename T>
cudaError_t LaunchStatistics(const Dims& d, const T* x, void* scratch, float** stats, cudaStream_t stream) {
  double* locations = static_cast<double*>(scratch);
  *stats = reinterpret_cast<float*>(locations + 2 * LocationCount(d));
  LocationStatisticsKernel<T><<<static_cast<unsigned>(CeilDiv(LocationCount(d), kStatsThreads)), kStatsThreads, 0,
                                 stream>>>(d, x, locations);
  cudaError_t status = cudaGetLastError();
  if (status != cudaSuccess) return status;
  PatchStatisticsKernel<<<static_cast<unsigned>(CeilDiv(PositionCount(d), kStatsThreads)), kStatsThreads, 0,
                          stream>>>(d, locations, *stats);
  return cudaGetLastError();
}

dim3 GemmGrid(const Dims& d) {
  return dim3(static_cast<unsigned>(CeilDiv(d.n * d.positions, kTileN)), static_cast<unsigned>(CeilDiv(d.mg, kTileM)),
              static_cast<unsigned>(d.g));
}

bool Empty(const DeviceGeometry& geo) {
  return geo.batch == 0 || geo.out_channels == 0 || geo.out_size[0] * geo.out_size[1] * geo.out_size[2] == 0;
}

}  // namespace

const char* LaunchLimitError(const DeviceGeometry& geo) {
  const Dims d = MakeDims(geo);
  if (d.g > 65535) return "group exceeds the CUDA kernel's limit of 65535";
  if (CeilDiv(d.mg, kTileM) > 65535) return "output channels per group exceed the CUDA kernel's launch grid";
  constexpr int64_t kMaxBlocks = 0x7fffffff;
  if (CeilDiv(d.n * d.positions, kTileN) > kMaxBlocks || CeilDiv(LocationCount(d), kStatsThreads) > kMaxBlocks ||
      CeilDiv(PositionCount(d), kStatsThreads) > kMaxBlocks) {
    return "tensors too large for the CUDA kernel's launch grid";
  }
  return nullptr;
}

size_t ScratchBytes(const DeviceGeometry& geo) {
  if (Empty(geo)) return 0;
  const Dims d = MakeDims(geo);
  const int64_t stats_bytes = CeilDiv(3 * PositionCount(d) * static_cast<int64_t>(sizeof(float)), 16) * 16;
  return static_cast<size_t>(2 * LocationCount(d) * static_cast<int64_t>(sizeof(double)) + stats_bytes);
}

cudaError_t LaunchNormalizedConv(const DeviceGeometry& geo, const float* x, const float* w, const float* b,
                                 float* y, void* scratch, cudaStream_t stream) {
  if (Empty(geo)) return cudaSuccess;
  if (LaunchLimitError(geo) != nullptr) return cudaErrorInvalidConfiguration;
  const Dims d = MakeDims(geo);
  float* stats = nullptr;
  cudaError_t status = LaunchStatistics(d, x, scratch, &stats, stream);
  if (status != cudaSuccess) return status;
  FloatGemmKernel<<<GemmGrid(d), kFloatThreads, 0, stream>>>(d, x, w, b, y, stats);
  return cudaGetLastError();
}

cudaError_t LaunchNormalizedConv(const DeviceGeometry& geo, const void* x_half, const void* w_half,
                                 const void* b_half, void* y_half, void* scratch, cudaStream_t stream) {
  if (Empty(geo)) return cudaSuccess;
  if (LaunchLimitError(geo) != nullptr) return cudaErrorInvalidConfiguration;
  const Dims d = MakeDims(geo);
  const __half* x = static_cast<const __half*>(x_half);
  float* stats = nullptr;
  cudaError_t status = LaunchStatistics(d, x, scratch, &stats, stream);
  if (status != cudaSuccess) return status;
  HalfGemmKernel<<<GemmGrid(d), kHalfThreads, 0, stream>>>(d, x, static_cast<const __half*>(w_half),
                                                           static_cast<const __half*>(b_half),
                                                           static_cast<__half*>(y_half), stats);
  return cudaGetLastError();
}

}  // namespace cuda
}  // namespace ncnn_onnx
