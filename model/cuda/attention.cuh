// The attention core's fused row kernels for the GEMM path: scale + key mask + softmax + dropout
// forward, and the matching backward. One warp per row of seq scores; each lane takes four
// adjacent columns at a time, with one 16-byte (f32) or 8-byte (bf16) access each when rows allow
// it (V = 4), and the dropout draws of those four columns from one Philox block (two when the
// stream offset is not a multiple of 4), the same bits as DropoutKeep.
//
// The scores, the saved probabilities and the gradient of the dropped probabilities share one
// type TP, the activations' (bf16 on the GPU): the [B, heads, T, T] tensors are most of the path's
// memory traffic, and f32 would double it. Each lane reads its columns before it writes them, so
// the probabilities may overwrite the scores and dscores the incoming gradient (in place).
//
// Kernels only: model/cuda/attention.cu launches them, and
// tests/cuda/attention_softmax_emulation_test.cc runs them on CPU threads.
#pragma once

#include <cstdint>

#include "core/philox.h"
#include "model/cuda/common.cuh"

namespace lamina::cuda::attention {
namespace {

constexpr int kRowsPerBlock = 8;
constexpr int kThreads = 32 * kRowsPerBlock;  // one warp per row
inline unsigned RowGrid(int64_t rows) { return static_cast<unsigned>((rows + kRowsPerBlock - 1) / kRowsPerBlock); }

// Whether column c + k of a row is an unmasked key.
__device__ __forceinline__ bool Unmasked(const int32_t* keys, int64_t c, int k, int64_t seq) {
  return c + k < seq && keys[c + k] != 0;
}

// probs = softmax over unmasked keys of scale * scores (masked keys exactly 0; a row with no
// unmasked key stays 0); dropped = keep ? probs / (1 - p) : 0 with element index row * seq + j.
template <int V, typename TP>
__global__ void SoftmaxForwardKernel(const TP* scores, const int32_t* key_mask, float scale, int64_t rows,
                                     int64_t heads, int64_t seq, float p, RngContext rng, TP* probs, bf16_t* dropped) {
  const int64_t row = blockIdx.x * static_cast<int64_t>(kRowsPerBlock) + (threadIdx.x >> 5);
  const int lane = threadIdx.x & 31;
  if (row >= rows) return;
  const int32_t* keys = key_mask + (row / (heads * seq)) * seq;
  const TP* s = scores + row * seq;
  float max = -INFINITY;
  for (int64_t c = 4 * lane; c < seq; c += 128) {
    float v[4];
    Load4<V>(s, c, seq, 0.0f, v);
#pragma unroll
    for (int k = 0; k < 4; ++k)
      if (Unmasked(keys, c, k, seq)) max = fmaxf(max, v[k] * scale);
  }
  max = WarpMax(max);
  float sum = 0.0f;
  for (int64_t c = 4 * lane; c < seq; c += 128) {
    float v[4];
    Load4<V>(s, c, seq, 0.0f, v);
#pragma unroll
    for (int k = 0; k < 4; ++k)
      if (Unmasked(keys, c, k, seq)) sum += __expf(v[k] * scale - max);
  }
  sum = WarpSum(sum);
  const float inv = sum > 0.0f ? 1.0f / sum : 0.0f;
  const float keep_scale = p > 0.0f ? 1.0f / (1.0f - p) : 1.0f;
  TP* pr = probs + row * seq;
  bf16_t* dr = dropped + row * seq;
  for (int64_t c = 4 * lane; c < seq; c += 128) {
    float v[4], pv[4], dv[4];
    Load4<V>(s, c, seq, 0.0f, v);
    uint32_t bits[4] = {0, 0, 0, 0};
    if (p > 0.0f) PhiloxDraws4(rng, static_cast<uint64_t>(row * seq + c), bits);
#pragma unroll
    for (int k = 0; k < 4; ++k) {
      pv[k] = Unmasked(keys, c, k, seq) ? __expf(v[k] * scale - max) * inv : 0.0f;
      const bool keep = p == 0.0f || UniformFromBits(bits[k]) >= p;
      dv[k] = keep ? pv[k] * keep_scale : 0.0f;
    }
    Store4<V>(pr, c, seq, pv);
    Store4<V>(dr, c, seq, dv);
  }
}

// With dP = ddropped * M: dscores = scale * P * (dP - sum_j dP_j P_j); dropped recomputed.
template <int V, typename TP>
__global__ void SoftmaxBackwardKernel(const TP* ddropped, const TP* probs, float scale, int64_t rows, int64_t seq,
                                      float p, RngContext rng, bf16_t* dropped, bf16_t* dscores) {
  const int64_t row = blockIdx.x * static_cast<int64_t>(kRowsPerBlock) + (threadIdx.x >> 5);
  const int lane = threadIdx.x & 31;
  if (row >= rows) return;
  const float keep_scale = p > 0.0f ? 1.0f / (1.0f - p) : 1.0f;
  const TP* g = ddropped + row * seq;
  const TP* pr = probs + row * seq;
  float dot = 0.0f;
  for (int64_t c = 4 * lane; c < seq; c += 128) {
    float gv[4], pv[4];
    Load4<V>(g, c, seq, 0.0f, gv);
    Load4<V>(pr, c, seq, 0.0f, pv);
    uint32_t bits[4] = {0, 0, 0, 0};
    if (p > 0.0f) PhiloxDraws4(rng, static_cast<uint64_t>(row * seq + c), bits);
#pragma unroll
    for (int k = 0; k < 4; ++k)
      if (p == 0.0f || UniformFromBits(bits[k]) >= p) dot += gv[k] * keep_scale * pv[k];
  }
  dot = WarpSum(dot);
  bf16_t* dr = dropped + row * seq;
  bf16_t* ds = dscores + row * seq;
  for (int64_t c = 4 * lane; c < seq; c += 128) {
    float gv[4], pv[4], dv[4], sv[4];
    Load4<V>(g, c, seq, 0.0f, gv);
    Load4<V>(pr, c, seq, 0.0f, pv);
    uint32_t bits[4] = {0, 0, 0, 0};
    if (p > 0.0f) PhiloxDraws4(rng, static_cast<uint64_t>(row * seq + c), bits);
#pragma unroll
    for (int k = 0; k < 4; ++k) {
      const bool keep = p == 0.0f || UniformFromBits(bits[k]) >= p;
      const float dp = keep ? gv[k] * keep_scale : 0.0f;
      dv[k] = keep ? pv[k] * keep_scale : 0.0f;
      sv[k] = scale * pv[k] * (dp - dot);
    }
    Store4<V>(dr, c, seq, dv);
    Store4<V>(ds, c, seq, sv);
  }
}

}  // namespace
}  // namespace lamina::cuda::attention
