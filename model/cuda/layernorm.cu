// Layer norm forward (optionally fused with the residual add before it) and backward. One warp per
// row; statistics in fp32 with a two-pass variance. dgamma/dbeta are summed over fixed chunks of
// rows and then over the chunks in order, so they are deterministic.
#include <algorithm>
#include <initializer_list>

#include "model/cuda/common.cuh"
#include "model/cuda/kernels.h"
#include "model/cuda/row_sums.cuh"

namespace lamina::cuda {
namespace {

constexpr int kRowsPerBlock = 8;  // warps per block

template <typename TX, typename TW, typename TO>
__global__ void LayerNormForwardKernel(const TX* a, const TX* b, const TW* gamma, const TW* beta, float eps, TX* sum,
                                       TO* out, float* mean_out, float* rstd_out, int64_t rows, int64_t hidden) {
  const int64_t row = blockIdx.x * static_cast<int64_t>(kRowsPerBlock) + (threadIdx.x >> 5);
  const int lane = threadIdx.x & 31;
  if (row >= rows) return;
  const TX* ar = a + row * hidden;
  const TX* br = b == nullptr ? nullptr : b + row * hidden;
  TX* sr = sum == nullptr ? nullptr : sum + row * hidden;
  // The normalised input is the stored sum (rounded to TX), which backward will read as x.
  auto x_at = [&](int64_t c) { return br == nullptr ? ToF(ar[c]) : ToF(sr[c]); };
  if (br != nullptr) {
    for (int64_t c = lane; c < hidden; c += 32) sr[c] = FromF<TX>(ToF(ar[c]) + ToF(br[c]));
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
__global__ void LayerNormForward8Kernel(const TX* a, const TX* b, const TW* gamma, const TW* beta, float eps, TX* sum,
                                        TO* out, float* mean_out, float* rstd_out, int64_t rows, int64_t hidden) {
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

template <typename TG, typename TX, typename TW, typename TD>
__global__ void LayerNormBackwardDx8Kernel(const TG* dout, const TX* x, const TW* gamma, const float* mean,
                                           const float* rstd, TD* dx, bool accumulate, int64_t rows, int64_t hidden) {
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
    }
  }
}

// Whether rows of `hidden` elements can take the register-cached 8-wide kernels.
bool WideRows(int64_t hidden, std::initializer_list<const void*> pointers) {
  return hidden % 8 == 0 && hidden <= 32 * 8 * kMaxChunks && Aligned16(pointers);
}

template <typename TG, typename TX, typename TW, typename TD>
__global__ void LayerNormBackwardDxKernel(const TG* dout, const TX* x, const TW* gamma, const float* mean,
                                          const float* rstd, TD* dx, bool accumulate, int64_t rows, int64_t hidden) {
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
  }
}

unsigned RowBlocks(int64_t rows) { return static_cast<unsigned>(CeilDiv(rows, kRowsPerBlock)); }

}  // namespace

void LaunchLayerNormForward(Ref a, Ref b, Ref gamma, Ref beta, float eps, Ref sum, Ref out, float* mean, float* rstd,
                            int64_t rows, int64_t hidden, cudaStream_t stream) {
  if (rows == 0) return;
  LAMINA_KERNEL_CHECK(hidden > 0 && gamma.dtype == beta.dtype);
  LAMINA_KERNEL_CHECK(b.data == nullptr || (b.dtype == a.dtype && sum.data != nullptr && sum.dtype == a.dtype));
  const bool wide = WideRows(hidden, {a.data, b.data, gamma.data, beta.data, sum.data, out.data});
  LAMINA_DISPATCH_FLOAT(a.dtype, TX,
                        LAMINA_DISPATCH_FLOAT(gamma.dtype, TW, LAMINA_DISPATCH_FLOAT(out.dtype, TO, {
                                                auto kernel = wide ? LayerNormForward8Kernel<TX, TW, TO>
                                                                   : LayerNormForwardKernel<TX, TW, TO>;
                                                kernel<<<RowBlocks(rows), kRowsPerBlock * 32, 0, stream>>>(
                                                    static_cast<const TX*>(a.data), static_cast<const TX*>(b.data),
                                                    static_cast<const TW*>(gamma.data),
                                                    static_cast<const TW*>(beta.data), eps, static_cast<TX*>(sum.data),
                                                    static_cast<TO*>(out.data), mean, rstd, rows, hidden);
                                              })));
  LAMINA_CUDA_CHECK_LAUNCH();
}

size_t LayerNormBackwardScratchBytes(int64_t rows, int64_t hidden) {
  return static_cast<size_t>(2 * CeilDiv(rows, row_sums::kChunkRows) * hidden) * sizeof(float);
}

void LaunchLayerNormBackward(Ref dout, Ref x, Ref gamma, const float* mean, const float* rstd, Ref dx, bool accumulate,
                             float* dgamma, float* dbeta, int64_t rows, int64_t hidden, void* scratch,
                             cudaStream_t stream) {
  if (rows == 0 || hidden == 0) return;
  LAMINA_DISPATCH_FLOAT(
      dout.dtype, TG, LAMINA_DISPATCH_FLOAT(x.dtype, TX, {
        // The parameter sums read dout first: dx may alias it.
        const int64_t chunks = CeilDiv(rows, row_sums::kChunkRows);
        float* partial = static_cast<float*>(scratch);
        const int width = std::min(VectorWidth(dout.data, hidden, hidden, DTypeSize(dout.dtype)),
                                   VectorWidth(x.data, hidden, hidden, DTypeSize(x.dtype)));
        LAMINA_DISPATCH_WIDTH(width, V, {
          const dim3 grid(static_cast<unsigned>(CeilDiv(hidden, 32 * V)), static_cast<unsigned>(chunks));
          row_sums::LayerNormParamPartialKernel<V, TG, TX>
              <<<grid, row_sums::kThreads, row_sums::SmemBytes(V, 2), stream>>>(
                  static_cast<const TG*>(dout.data), static_cast<const TX*>(x.data), mean, rstd, partial, rows,
                  hidden, chunks);
        });
        LAMINA_CUDA_CHECK_LAUNCH();
        LAMINA_DISPATCH_FLOAT(gamma.dtype, TW, LAMINA_DISPATCH_FLOAT(dx.dtype, TD, {
                                auto kernel = WideRows(hidden, {dout.data, x.data, gamma.data, dx.data})
                                                  ? LayerNormBackwardDx8Kernel<TG, TX, TW, TD>
                                                  : LayerNormBackwardDxKernel<TG, TX, TW, TD>;
                                kernel<<<RowBlocks(rows), kRowsPerBlock * 32, 0, stream>>>(
                                    static_cast<const TG*>(dout.data), static_cast<const TX*>(x.data),
                                    static_cast<const TW*>(gamma.data), mean, rstd, static_cast<TD*>(dx.data),
                                    accumulate, rows, hidden);
                              }));
        LAMINA_CUDA_CHECK_LAUNCH();
        LaunchChunkFinalize(partial, 1.0f, dgamma, chunks, hidden, stream);
        LaunchChunkFinalize(partial + chunks * hidden, 1.0f, dbeta, chunks, hidden, stream);
      }));
}

}  // namespace lamina::cuda
