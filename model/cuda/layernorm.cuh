// Layer norm kernels: forward (optionally fused with the branch's dropout and the residual add
// before it) and the backward pass's dx (optionally with that dropout's backward). One warp per
// row; statistics in fp32 with a two-pass variance. The 8-wide kernels keep each lane's 8-element
// chunks of the row in registers, so x is read once, with 16-byte accesses.
//
// Kernels only: model/cuda/layernorm.cu launches them (with the parameter gradients of
// row_sums.cuh), and tests/cuda/layernorm_emulation_test.cc runs them on CPU threads.
#pragma once

#include <cstdint>

#include "model/cuda/common.cuh"

// Internal linkage: each translation unit that includes this gets its own copy (see
// flash_attention.cuh).
namespace lamina::cuda::layernorm {
namespace {

constexpr int kRowsPerBlock = 8;  // warps per block

template <typename TX, typename TW, typename TO>
__global__ void LayerNormForwardKernel(const TX* a, const TX* b, ElementDropout drop, const TW* gamma, const TW* beta,
                                       float eps, TX* sum, TO* out, float* mean_out, float* rstd_out, int64_t rows,
                                       int64_t hidden) {
  const int64_t row = blockIdx.x * static_cast<int64_t>(kRowsPerBlock) + (threadIdx.x >> 5);
  const int lane = threadIdx.x & 31;
  if (row >= rows) return;
  const TX* ar = a + row * hidden;
  const TX* br = b == nullptr ? nullptr : b + row * hidden;
  TX* sr = sum == nullptr ? nullptr : sum + row * hidden;
  // The normalised input is the stored sum (rounded to TX), which backward will read as x.
  auto x_at = [&](int64_t c) { return br == nullptr ? ToF(ar[c]) : ToF(sr[c]); };
  if (br != nullptr) {
    for (int64_t c = lane; c < hidden; c += 32) sr[c] = FromF<TX>(ToF(ar[c]) + drop(ToF(br[c]), row * hidden + c));
    __syncwarp();
  }
  float s = 0.0f;
  for (int64_t c = lane; c < hidden; c += 32) s += x_at(c);
  const float mean = WarpSum(s) / static_cast<float>(hidden);
  float sq = 0.0f;
  for (int64_t c = lane; c < hidden; c += 32) {
    const float d = x_at(c) - mean;
    sq += d * d;
  }
  const float rstd = rsqrtf(WarpSum(sq) / static_cast<float>(hidden) + eps);
  TO* orow = out + row * hidden;
  for (int64_t c = lane; c < hidden; c += 32)
    orow[c] = FromF<TO>((x_at(c) - mean) * rstd * ToF(gamma[c]) + ToF(beta[c]));
  if (lane == 0) {
    mean_out[row] = mean;
    rstd_out[row] = rstd;
  }
}

// The same for hidden % 8 == 0 and hidden <= 32 * 8 * kMaxChunks: each lane keeps its 8-element
// chunks of the row in registers, so x is read once, with 16-byte accesses.
constexpr int kMaxChunks = 4;

template <typename TX, typename TW, typename TO>
__global__ void LayerNormForward8Kernel(const TX* a, const TX* b, ElementDropout drop, const TW* gamma, const TW* beta,
                                        float eps, TX* sum, TO* out, float* mean_out, float* rstd_out, int64_t rows,
                                        int64_t hidden) {
  const int64_t row = blockIdx.x * static_cast<int64_t>(kRowsPerBlock) + (threadIdx.x >> 5);
  const int lane = threadIdx.x & 31;
  if (row >= rows) return;
  const int64_t chunks = hidden / 8, base = row * hidden;
  float xv[kMaxChunks][8];
  float s = 0.0f;
#pragma unroll
  for (int q = 0; q < kMaxChunks; ++q) {
    const int64_t c = 8 * (lane + 32 * q);
    if (c < 8 * chunks) {
      Load8(a + base + c, xv[q]);
      if (b != nullptr) {
        float bv[8];
        Load8(b + base + c, bv);
        drop.Apply8(base + c, bv);
#pragma unroll
        for (int k = 0; k < 8; ++k) xv[q][k] = ToF(FromF<TX>(xv[q][k] + bv[k]));  // the stored sum
        Store8(sum + base + c, xv[q]);
      }
#pragma unroll
      for (int k = 0; k < 8; ++k) s += xv[q][k];
    }
  }
  const float mean = WarpSum(s) / static_cast<float>(hidden);
  float sq = 0.0f;
#pragma unroll
  for (int q = 0; q < kMaxChunks; ++q) {
    if (8 * (lane + 32 * q) < 8 * chunks) {
#pragma unroll
      for (int k = 0; k < 8; ++k) sq += (xv[q][k] - mean) * (xv[q][k] - mean);
    }
  }
  const float rstd = rsqrtf(WarpSum(sq) / static_cast<float>(hidden) + eps);
#pragma unroll
  for (int q = 0; q < kMaxChunks; ++q) {
    const int64_t c = 8 * (lane + 32 * q);
    if (c < 8 * chunks) {
      float g[8], bb[8], o[8];
      Load8(gamma + c, g);
      Load8(beta + c, bb);
#pragma unroll
      for (int k = 0; k < 8; ++k) o[k] = (xv[q][k] - mean) * rstd * g[k] + bb[k];
      Store8(out + base + c, o);
    }
  }
  if (lane == 0) {
    mean_out[row] = mean;
    rstd_out[row] = rstd;
  }
}

// dx (= or += when accumulate) of the backward pass; with `dropped` set, also dropped =
// drop(dx), the gradient of the branch whose dropout fed the norm's input. A row of dout is read
// whole before any of it is written, so dropped may alias dout.
template <typename TG, typename TX, typename TW, typename TD>
__global__ void LayerNormBackwardDx8Kernel(const TG* dout, const TX* x, const TW* gamma, const float* mean,
                                           const float* rstd, TD* dx, bool accumulate, ElementDropout drop,
                                           TD* dropped, int64_t rows, int64_t hidden) {
  const int64_t row = blockIdx.x * static_cast<int64_t>(kRowsPerBlock) + (threadIdx.x >> 5);
  const int lane = threadIdx.x & 31;
  if (row >= rows) return;
  const int64_t chunks = hidden / 8, base = row * hidden;
  const float m = mean[row], rs = rstd[row];
  float gv[kMaxChunks][8], xh[kMaxChunks][8];
  float sum_g = 0.0f, sum_gx = 0.0f;
#pragma unroll
  for (int q = 0; q < kMaxChunks; ++q) {
    const int64_t c = 8 * (lane + 32 * q);
    if (c < 8 * chunks) {
      float gam[8];
      Load8(dout + base + c, gv[q]);
      Load8(x + base + c, xh[q]);
      Load8(gamma + c, gam);
#pragma unroll
      for (int k = 0; k < 8; ++k) {
        gv[q][k] *= gam[k];
        xh[q][k] = (xh[q][k] - m) * rs;
        sum_g += gv[q][k];
        sum_gx += gv[q][k] * xh[q][k];
      }
    }
  }
  const float mean_g = WarpSum(sum_g) / static_cast<float>(hidden);
  const float mean_gx = WarpSum(sum_gx) / static_cast<float>(hidden);
#pragma unroll
  for (int q = 0; q < kMaxChunks; ++q) {
    const int64_t c = 8 * (lane + 32 * q);
    if (c < 8 * chunks) {
      float v[8], prev[8];
      if (accumulate) Load8(dx + base + c, prev);
#pragma unroll
      for (int k = 0; k < 8; ++k) {
        v[k] = rs * (gv[q][k] - mean_g - xh[q][k] * mean_gx);
        if (accumulate) v[k] += prev[k];
      }
      Store8(dx + base + c, v);
      if (dropped != nullptr) {
        drop.Apply8(base + c, v);
        Store8(dropped + base + c, v);
      }
    }
  }
}

template <typename TG, typename TX, typename TW, typename TD>
__global__ void LayerNormBackwardDxKernel(const TG* dout, const TX* x, const TW* gamma, const float* mean,
                                          const float* rstd, TD* dx, bool accumulate, ElementDropout drop,
                                          TD* dropped, int64_t rows, int64_t hidden) {
  const int64_t row = blockIdx.x * static_cast<int64_t>(kRowsPerBlock) + (threadIdx.x >> 5);
  const int lane = threadIdx.x & 31;
  if (row >= rows) return;
  const TG* gr = dout + row * hidden;
  const TX* xr = x + row * hidden;
  const float m = mean[row], rs = rstd[row];
  float sum_g = 0.0f, sum_gx = 0.0f;
  for (int64_t c = lane; c < hidden; c += 32) {
    const float g = ToF(gr[c]) * ToF(gamma[c]);
    sum_g += g;
    sum_gx += g * (ToF(xr[c]) - m) * rs;
  }
  const float mean_g = WarpSum(sum_g) / static_cast<float>(hidden);
  const float mean_gx = WarpSum(sum_gx) / static_cast<float>(hidden);
  TD* dr = dx + row * hidden;
  for (int64_t c = lane; c < hidden; c += 32) {
    const float xhat = (ToF(xr[c]) - m) * rs;
    float v = rs * (ToF(gr[c]) * ToF(gamma[c]) - mean_g - xhat * mean_gx);
    if (accumulate) v += ToF(dr[c]);
    dr[c] = FromF<TD>(v);
    // Element c of dout was last read above, by this lane.
    if (dropped != nullptr) dropped[row * hidden + c] = FromF<TD>(drop(v, row * hidden + c));
  }
}

}  // namespace
}  // namespace lamina::cuda::layernorm
