// Layer norm kernels: forward (optionally fused with the branch's dropout and the residual add
// before it) and the backward pass's dx (optionally with that dropout's backward). One warp per
// row; statistics in fp32 with a two-pass variance. The 8-wide kernels keep each lane's 8-element
// chunks of the row in registers, so x is read once, with 16-byte accesses; the 8-wide backward
// also sums the parameter gradients of its rows, which the one-element path leaves to
// row_sums.cuh's LayerNormParamPartialKernel.
//
// Kernels only: model/cuda/layernorm.cu launches them, and tests/cuda/layernorm_emulation_test.cc
// runs them on CPU threads.
#pragma once

#include <cstdint>

#include "model/cuda/common.cuh"
#include "model/cuda/row_sums.cuh"

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
  // The loads first, all in flight together (as loaded: bf16 packed), then the dropout's draws.
  Held8<TX> held_a[kMaxChunks], held_b[kMaxChunks];
#pragma unroll
  for (int q = 0; q < kMaxChunks; ++q) {
    const int64_t c = 8 * (lane + 32 * q);
    if (c < 8 * chunks) {
      held_a[q].Load(a + base + c);
      if (b != nullptr) held_b[q].Load(b + base + c);
    }
  }
  float xv[kMaxChunks][8];
  float s = 0.0f;
#pragma unroll
  for (int q = 0; q < kMaxChunks; ++q) {
    const int64_t c = 8 * (lane + 32 * q);
    if (c < 8 * chunks) {
      held_a[q].Get(xv[q]);
      if (b != nullptr) {
        float bv[8];
        held_b[q].Get(bv);
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

// The backward pass for rows the 8-wide kernels take, with Q = BackwardChunks(hidden) 8-element
// chunks per lane (registers for the row's chunks only: BERT-base's 768 takes 3 of kMaxChunks):
// dx (= or += when accumulate); with `dropped` set, also dropped = drop(dx), the gradient of the
// branch whose dropout fed the norm's input (dropped may alias dout: a row of dout is read whole
// before any of it is written); and the parameter gradients' partial sums, without reading dout
// and x a second time:
// partial[chunk][c] = sum of dout * xhat and partial[chunks + chunk][c] = sum of dout over the
// chunk's rows, as row_sums::LayerNormParamPartialKernel writes them.
// Grid: one block per chunk of row_sums::kChunkRows rows, whose warp w takes rows w, w + 8, ...
// and adds their terms into its own [2][hidden] slice of shared memory (BackwardSmemBytes); the
// slices are then added in warp order, so the sums do not depend on timing.
inline size_t BackwardSmemBytes(int64_t hidden) { return static_cast<size_t>(kRowsPerBlock * 2 * hidden) * 4; }
inline int BackwardChunks(int64_t hidden) { return static_cast<int>((hidden + 32 * 8 - 1) / (32 * 8)); }

// With bf16 rows, two blocks per multiprocessor (128 registers; at Q = 3 with the next row's loads
// in flight, 16 bytes of stack): at 32,768 rows the grid's 256 blocks then run in one wave on 132.
// f32 rows take twice the registers to hold and get one.
template <int Q, typename TG, typename TX, typename TW, typename TD>
__global__ void __launch_bounds__(kRowsPerBlock * 32, sizeof(TG) == 2 && sizeof(TX) == 2 ? 2 : 1)
    LayerNormBackward8Kernel(const TG* dout, const TX* x, const TW* gamma, const float* mean, const float* rstd, TD* dx,
                             bool accumulate, ElementDropout drop, TD* dropped, float* partial, int64_t rows,
                             int64_t hidden) {
  LAMINA_DYNAMIC_SMEM(smem);
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
  float* const slices = reinterpret_cast<float*>(smem);
  float* const sum_gx = slices + warp * 2 * hidden;  // then sum_g, hidden further
  const int64_t vecs = hidden / 8;
#pragma unroll
  for (int q = 0; q < Q; ++q) {
    const int64_t c = 8 * (lane + 32 * q);
    if (c < 8 * vecs) {
      const float zero[8] = {};
      Store8(sum_gx + c, zero);
      Store8(sum_gx + hidden + c, zero);
    }
  }
  const row_sums::RowChunk chunk = row_sums::RowChunkAt(blockIdx.x, rows);
  const int64_t end = chunk.first + chunk.count;
  // Rows are held as loaded (bf16 packed) and converted in each pass, so that more warps fit. With
  // bf16 rows of up to 3 chunks per lane the warp's next row is loaded while this one is worked on,
  // since 16 warps per multiprocessor with one row each in flight left the loads' latency exposed
  // (1.2 TB/s measured); wider or f32 rows would spill its registers. A row of dout is read before
  // `dropped` (which may alias it) is written, the next row too.
  constexpr bool kAhead = sizeof(TG) == 2 && sizeof(TX) == 2 && Q <= 3;
  Held8<TG> held_g[Q] = {}, next_g[Q] = {};  // chunks past the row stay unread
  Held8<TX> held_x[Q] = {}, next_x[Q] = {};
  auto load_row = [&](int64_t row, Held8<TG>(&g)[Q], Held8<TX>(&xs)[Q]) {
#pragma unroll
    for (int q = 0; q < Q; ++q) {  // all in flight together
      const int64_t c = 8 * (lane + 32 * q);
      if (c < 8 * vecs) {
        g[q].Load(dout + row * hidden + c);
        xs[q].Load(x + row * hidden + c);
      }
    }
  };
  if (kAhead && chunk.first + warp < end) load_row(chunk.first + warp, held_g, held_x);
  for (int64_t row = chunk.first + warp; row < end; row += kRowsPerBlock) {
    const int64_t base = row * hidden;
    const float m = mean[row], rs = rstd[row];
    if constexpr (kAhead) {
      if (row + kRowsPerBlock < end) load_row(row + kRowsPerBlock, next_g, next_x);
    } else {
      load_row(row, held_g, held_x);
    }
    float sum_g = 0.0f, sum_gxh = 0.0f;
#pragma unroll
    for (int q = 0; q < Q; ++q) {
      const int64_t c = 8 * (lane + 32 * q);
      if (c < 8 * vecs) {
        float g[8], xv[8], gam[8];
        held_g[q].Get(g);
        held_x[q].Get(xv);
        Load8(gamma + c, gam);
#pragma unroll
        for (int k = 0; k < 8; ++k) {
          sum_g += g[k] * gam[k];
          sum_gxh += g[k] * gam[k] * (xv[k] - m) * rs;
        }
      }
    }
    const float mean_g = WarpSum(sum_g) / static_cast<float>(hidden);
    const float mean_gx = WarpSum(sum_gxh) / static_cast<float>(hidden);
#pragma unroll
    for (int q = 0; q < Q; ++q) {
      const int64_t c = 8 * (lane + 32 * q);
      if (c < 8 * vecs) {
        float g[8], xv[8], gam[8], acc_gx[8], acc_g[8], v[8], prev[8];
        held_g[q].Get(g);
        held_x[q].Get(xv);
        Load8(gamma + c, gam);  // again (L1), rather than hold it across the row
        Load8(sum_gx + c, acc_gx);
        Load8(sum_gx + hidden + c, acc_g);
        if (accumulate) Load8(dx + base + c, prev);
#pragma unroll
        for (int k = 0; k < 8; ++k) {
          const float xhat = (xv[k] - m) * rs;
          acc_gx[k] += g[k] * xhat;
          acc_g[k] += g[k];
          v[k] = rs * (g[k] * gam[k] - mean_g - xhat * mean_gx);
          if (accumulate) v[k] += prev[k];
        }
        Store8(sum_gx + c, acc_gx);
        Store8(sum_gx + hidden + c, acc_g);
        Store8(dx + base + c, v);
        if (dropped != nullptr) {
          drop.Apply8(base + c, v);
          Store8(dropped + base + c, v);
        }
      }
    }
    if constexpr (kAhead) {
#pragma unroll
      for (int q = 0; q < Q; ++q) {
        held_g[q] = next_g[q];
        held_x[q] = next_x[q];
      }
    }
  }
  __syncthreads();
  const int64_t chunks = gridDim.x;
  for (int64_t i = threadIdx.x; i < 2 * hidden; i += blockDim.x) {
    float sum = 0.0f;
    for (int w = 0; w < kRowsPerBlock; ++w) sum += slices[w * 2 * hidden + i];
    partial[(i < hidden ? chunk.index : chunks + chunk.index) * hidden + i % hidden] = sum;
  }
}

// LayerNormBackward8Kernel instantiated for rows of `hidden` elements (BackwardChunks of them).
template <typename TG, typename TX, typename TW, typename TD>
auto BackwardKernelFor(int64_t hidden) {
  switch (BackwardChunks(hidden)) {
    case 1:
      return LayerNormBackward8Kernel<1, TG, TX, TW, TD>;
    case 2:
      return LayerNormBackward8Kernel<2, TG, TX, TW, TD>;
    case 3:
      return LayerNormBackward8Kernel<3, TG, TX, TW, TD>;
    default:
      return LayerNormBackward8Kernel<kMaxChunks, TG, TX, TW, TD>;
  }
}

template <typename TG, typename TX, typename TW, typename TD>
__global__ void LayerNormBackwardDxKernel(const TG* dout, const TX* x, const TW* gamma, const float* mean,
                                          const float* rstd, TD* dx, bool accumulate, ElementDropout drop, TD* dropped,
                                          int64_t rows, int64_t hidden) {
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
