// CUDA kernels of ncnn_onnx::NormalizedConv.
//
// 1. Patch statistics: one warp per (sample, group, output position), two passes in float64 (the
//    numerics contract forbids E[v^2] - mu^2). The mean is stored as a float pair hi + lo: on a
//    near-flat bright patch (mean 200, spread 0.01) float32 rounding of the mean alone would shift
//    every centred value by up to 8e-6, which rstd (up to 316) turns into a visible error.
// 2. Normalized implicit GEMM: each block gathers a tile of patch values into shared memory,
//    centres it there ((v - hi) - lo, exact for v near the mean) and multiplies it with a tile of W,
//    accumulating in float32; rstd and the bias are applied once per output.
#include "nc_kernels.h"

#include <cuda_fp16.h>

namespace ncnn_onnx {
namespace cuda {
namespace {

constexpr int kWarp = 32;
constexpr int kStatsThreads = 256;
constexpr int kTileM = 64;  // output channels per block
constexpr int kTileN = 64;  // (sample, position) columns per block
constexpr int kTileK = 16;  // patch elements per shared-memory step
constexpr int kGemmThreads = 256;

// The geometry with the derived sizes the kernels index with, passed by value.
struct Dims {
  int64_t n, c, m, g, cg, mg, k_count, fan_in, positions, in_volume;
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
  d.in_volume = geo.in_size[0] * geo.in_size[1] * geo.in_size[2];
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

__device__ __forceinline__ float Load(const float* p, int64_t i) { return p[i]; }
__device__ __forceinline__ float Load(const __half* p, int64_t i) { return __half2float(p[i]); }
__device__ __forceinline__ void Store(float* p, int64_t i, float v) { p[i] = v; }
__device__ __forceinline__ void Store(__half* p, int64_t i, float v) { p[i] = __float2half(v); }

// Input coordinates of the top-left-front corner of output position p (may be negative: padding).
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

// Patch element i (channel-major: i = c * K + kernel offset) of the patch at `corner`, whose
// channel-group plane starts at `base`; zero in the padding.
template <typename T>
__device__ __forceinline__ float PatchValue(const T* x, const Dims& d, int64_t base, Corner corner, int64_t i) {
  const int64_t ch = i / d.k_count;
  int64_t off = i % d.k_count;
  const int64_t kx = off % d.k[2];
  off /= d.k[2];
  const int64_t ky = off % d.k[1];
  const int64_t kz = off / d.k[1];
  const int64_t z = corner.z + kz * d.d[0];
  const int64_t y = corner.y + ky * d.d[1];
  const int64_t xx = corner.x + kx * d.d[2];
  if (z < 0 || z >= d.in[0] || y < 0 || y >= d.in[1] || xx < 0 || xx >= d.in[2]) return 0.0f;
  return Load(x, base + ch * d.in_volume + (z * d.in[1] + y) * d.in[2] + xx);
}

__device__ __forceinline__ double WarpSum(double v) {
  for (int offset = kWarp / 2; offset > 0; offset /= 2) v += __shfl_down_sync(0xffffffffu, v, offset);
  return __shfl_sync(0xffffffffu, v, 0);
}

// scratch layout: mu_hi[NGP], mu_lo[NGP], rstd[NGP], index (n * G + g) * P + p.
template <typename T>
__global__ void PatchStatisticsKernel(Dims d, const T* __restrict__ x, float* __restrict__ scratch) {
  const int64_t warp = (static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x) / kWarp;
  const int lane = threadIdx.x % kWarp;
  const int64_t total = d.n * d.g * d.positions;
  if (warp >= total) return;
  const int64_t p = warp % d.positions;
  const int64_t ng = warp / d.positions;  // n * G + g
  const int64_t base = ng * d.cg * d.in_volume;  // (n * C + g * cg) * volume
  const Corner corner = CornerOf(d, p);

  double sum = 0.0;
  for (int64_t i = lane; i < d.fan_in; i += kWarp) sum += PatchValue(x, d, base, corner, i);
  const double mean = WarpSum(sum) / static_cast<double>(d.fan_in);
  double squares = 0.0;
  for (int64_t i = lane; i < d.fan_in; i += kWarp) {
    const double dev = PatchValue(x, d, base, corner, i) - mean;
    squares += dev * dev;
  }
  const double var = WarpSum(squares) / static_cast<double>(d.fan_in);
  if (lane == 0) {
    const float hi = static_cast<float>(mean);
    scratch[warp] = hi;
    scratch[total + warp] = static_cast<float>(mean - static_cast<double>(hi));
    scratch[2 * total + warp] = d.scale ? static_cast<float>(1.0 / sqrt(var + static_cast<double>(d.eps))) : 1.0f;
  }
}

template <typename T>
__global__ void __launch_bounds__(kGemmThreads)
    NormalizedGemmKernel(Dims d, const T* __restrict__ x, const T* __restrict__ w, const T* __restrict__ b,
                         T* __restrict__ y, const float* __restrict__ scratch) {
  __shared__ float w_tile[kTileK][kTileM + 4];
  __shared__ float x_tile[kTileK][kTileN + 4];
  __shared__ int64_t col_base[kTileN];
  __shared__ int64_t col_stat[kTileN];
  __shared__ Corner col_corner[kTileN];

  const int64_t g = blockIdx.z;
  const int64_t m0 = static_cast<int64_t>(blockIdx.y) * kTileM;
  const int64_t j0 = static_cast<int64_t>(blockIdx.x) * kTileN;
  const int64_t columns = d.n * d.positions;
  const int64_t stats_total = d.n * d.g * d.positions;
  const int tid = threadIdx.x;

  if (tid < kTileN) {
    const int64_t j = j0 + tid;
    if (j < columns) {
      const int64_t n = j / d.positions;
      const int64_t p = j % d.positions;
      col_base[tid] = (n * d.c + g * d.cg) * d.in_volume;
      col_stat[tid] = (n * d.g + g) * d.positions + p;
      col_corner[tid] = CornerOf(d, p);
    } else {
      col_stat[tid] = -1;
    }
  }
  __syncthreads();

  const int ty = tid / 16;  // 16 x 16 threads, each owning 4 x 4 outputs
  const int tx = tid % 16;
  float acc[4][4] = {};
  const T* w_group = w + g * d.mg * d.fan_in;

  for (int64_t k0 = 0; k0 < d.fan_in; k0 += kTileK) {
    for (int e = tid; e < kTileK * kTileM; e += kGemmThreads) {
      const int mm = e / kTileK;
      const int kk = e % kTileK;  // consecutive threads read consecutive weights
      const int64_t m = m0 + mm;
      const int64_t i = k0 + kk;
      w_tile[kk][mm] = (m < d.mg && i < d.fan_in) ? Load(w_group, m * d.fan_in + i) : 0.0f;
    }
    for (int e = tid; e < kTileK * kTileN; e += kGemmThreads) {
      const int kk = e / kTileN;
      const int jj = e % kTileN;  // consecutive threads read neighbouring positions
      const int64_t i = k0 + kk;
      const int64_t stat = col_stat[jj];
      float v = 0.0f;
      if (stat >= 0 && i < d.fan_in) {
        v = PatchValue(x, d, col_base[jj], col_corner[jj], i);
        if (d.center) v = (v - scratch[stat]) - scratch[stats_total + stat];
      }
      x_tile[kk][jj] = v;
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
    const int64_t stat = col_stat[jj];
    if (stat < 0) continue;
    const int64_t j = j0 + jj;
    const int64_t n = j / d.positions;
    const int64_t p = j % d.positions;
    const float rstd = scratch[2 * stats_total + stat];
    for (int r = 0; r < 4; ++r) {
      const int64_t m = m0 + ty * 4 + r;
      if (m >= d.mg) continue;
      const int64_t channel = g * d.mg + m;
      const float bias = b != nullptr ? Load(b, channel) : 0.0f;
      Store(y, (n * d.m + channel) * d.positions + p, acc[r][q] * rstd + bias);
    }
  }
}

int64_t CeilDiv(int64_t a, int64_t b) { return (a + b - 1) / b; }

template <typename T>
cudaError_t Launch(const DeviceGeometry& geo, const T* x, const T* w, const T* b, T* y, float* scratch,
                   cudaStream_t stream) {
  const Dims d = MakeDims(geo);
  const int64_t columns = d.n * d.positions;
  if (columns == 0 || d.m == 0) return cudaSuccess;  // empty batch: nothing to write
  const int64_t stat_warps = d.n * d.g * d.positions;
  const int64_t stat_blocks = CeilDiv(stat_warps * kWarp, kStatsThreads);
  const int64_t grid_x = CeilDiv(columns, kTileN);
  const int64_t grid_y = CeilDiv(d.mg, kTileM);
  // Grid limits: x up to 2^31-1, y and z up to 65535; the validation rejects larger models first,
  // this guard keeps a mistake there from turning into an out-of-range launch.
  if (stat_blocks > 0x7fffffff || grid_x > 0x7fffffff || grid_y > 65535 || d.g > 65535) {
    return cudaErrorInvalidConfiguration;
  }
  PatchStatisticsKernel<T><<<static_cast<unsigned>(stat_blocks), kStatsThreads, 0, stream>>>(d, x, scratch);
  cudaError_t status = cudaGetLastError();
  if (status != cudaSuccess) return status;
  const dim3 grid(static_cast<unsigned>(grid_x), static_cast<unsigned>(grid_y), static_cast<unsigned>(d.g));
  NormalizedGemmKernel<T><<<grid, kGemmThreads, 0, stream>>>(d, x, w, b, y, scratch);
  return cudaGetLastError();
}

}  // namespace

int64_t ScratchFloats(const DeviceGeometry& geo) {
  return 3 * geo.batch * geo.groups * geo.out_size[0] * geo.out_size[1] * geo.out_size[2];
}

cudaError_t LaunchNormalizedConv(const DeviceGeometry& geo, const float* x, const float* w, const float* b,
                                 float* y, float* scratch, cudaStream_t stream) {
  return Launch<float>(geo, x, w, b, y, scratch, stream);
}

cudaError_t LaunchNormalizedConv(const DeviceGeometry& geo, const void* x_half, const void* w_half,
                                 const void* b_half, void* y_half, float* scratch, cudaStream_t stream) {
  return Launch<__half>(geo, static_cast<const __half*>(x_half), static_cast<const __half*>(w_half),
                        static_cast<const __half*>(b_half), static_cast<__half*>(y_half), scratch, stream);
}

}  // namespace cuda
}  // namespace ncnn_onnx
