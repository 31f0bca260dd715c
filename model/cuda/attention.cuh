// The attention core's fused row kernels for the GEMM path: scale + key mask + softmax + dropout
// forward, and the matching backward. One warp per row of seq scores; each lane takes four
// adjacent columns at a time, with one 8-byte access each when rows allow it (V = 4), and the
// dropout draws of those four columns from one Philox block (two when the stream offset is not a
// multiple of 4), the same bits as DropoutKeep. Rows of up to 512 keys stay in registers between
// a kernel's passes over them (max, sum, output; or dot, output), so each is read once.
//
// What the backward pass needs is kept as the products leave it, in bf16: the unscaled scores
// (the Q K^T product's output), one f32 logsumexp per row, and the dropped probabilities (the
// P V product's operand, which the dV product reads again). The probabilities themselves are
// never stored: both passes compute them as exp(scale * s - lse), so they agree bit for bit, and
// the backward kernel reads the scores in their place. Per score that is 8 bytes of traffic
// forward (scores written and read, dropped written and read) and 14 backward, where saving the
// probabilities and f32 scores took 14 and 20. The forward pass also keeps its dropout decisions
// as bits (1/8 byte per score), because drawing them again would cost the backward pass two
// Philox blocks per four scores (one per loop), more work than the rest of its arithmetic.
//
// Kernels only: model/cuda/attention.cu launches them, and
// tests/cuda/attention_softmax_emulation_test.cc runs them on CPU threads.
#pragma once

#include <cstdint>

#include "core/philox.h"
#include "model/cuda/common.cuh"
#include "model/cuda/kernels.h"

namespace lamina::cuda::attention {
namespace {

constexpr int kRowsPerBlock = 8;
constexpr int kThreads = 32 * kRowsPerBlock;  // one warp per row
inline unsigned RowGrid(int64_t rows) { return static_cast<unsigned>((rows + kRowsPerBlock - 1) / kRowsPerBlock); }

// A lane's first kCachedSteps groups of 4 columns (rows of up to 512 keys: BERT's lengths) stay in
// its registers from the kernel's first pass over the row to its last, so such rows are read from
// memory once, with all their loads in flight together. Longer rows read their further columns
// again in each pass.
constexpr int kCachedSteps = 4;
// Blocks per SM the kernels are compiled for: 4 caps them at 64 registers, which they fit without
// spilling at V = 4 (ptxas, sm_90a; 66-71 without the cap, 3 blocks; at V = 1, rows of a length
// that is not a multiple of 4, 8-16 bytes spill), so 32 warps' loads are in flight per SM.
constexpr int kMinBlocks = 4;

// Calls f(step, c) for each 128-column step of a row of seq, on every lane (f may hold warp-wide
// operations), with c = the first of this lane's 4 columns (maybe >= seq). The cached steps are
// unrolled, so that f indexes its register arrays with a constant; the others come as step
// kCachedSteps.
template <typename F>
__device__ __forceinline__ void ForEachStep(int64_t seq, int lane, const F& f) {
#pragma unroll
  for (int i = 0; i < kCachedSteps; ++i)
    if (128 * i < seq) f(i, 128 * i + 4 * lane);
  for (int64_t base = 128 * kCachedSteps; base < seq; base += 128) f(kCachedSteps, base + 4 * lane);
}

// Whether column c + k of a row is an unmasked key.
__device__ __forceinline__ bool Unmasked(const int32_t* keys, int64_t c, int k, int64_t seq) {
  return c + k < seq && keys[c + k] != 0;
}

// P = softmax over unmasked keys of scale * scores (masked keys exactly 0; a row with no unmasked
// key all 0), as exp(scale * s - lse) with lse[row] = log sum exp (+inf for an empty row);
// dropped = keep ? P / (1 - p) : 0 with the decisions of AttentionKeepBits8 for row `row`
// (a lane's four columns are half of one Philox block), and with p > 0 the
// decisions in keep_bits (AttentionSoftmaxSaved's layout: four ballots per 128 columns).
template <int V>
__global__ void __launch_bounds__(kThreads, kMinBlocks)
    SoftmaxForwardKernel(const bf16_t* scores, const int32_t* key_mask, float scale, int64_t rows, int64_t heads,
                         int64_t seq, float p, RngContext rng, bf16_t* dropped, float* lse, uint32_t* keep_bits) {
  const int64_t row = blockIdx.x * static_cast<int64_t>(kRowsPerBlock) + (threadIdx.x >> 5);
  const int lane = threadIdx.x & 31;
  if (row >= rows) return;  // the whole warp: the ballots below need all its lanes
  const int32_t* keys = key_mask + (row / (heads * seq)) * seq;
  const bf16_t* s = scores + row * seq;
  float cached[kCachedSteps][4];
  uint32_t live = 0;  // bit 4 step + k: column k of the lane's cached step is an unmasked key
#pragma unroll
  for (int i = 0; i < kCachedSteps; ++i) {
    const int64_t c = 128 * i + 4 * lane;
    if (c < seq) {
      Load4<V>(s, c, seq, 0.0f, cached[i]);
#pragma unroll
      for (int k = 0; k < 4; ++k) live |= (Unmasked(keys, c, k, seq) ? 1u : 0u) << (4 * i + k);
    }
  }
  // The lane's 4 scores at column c of `step`, and which of them are unmasked keys.
  const auto at = [&](int step, int64_t c, float(&v)[4], bool(&on)[4]) {
    if (step < kCachedSteps) {
#pragma unroll
      for (int k = 0; k < 4; ++k) v[k] = cached[step][k], on[k] = (live >> (4 * step + k)) & 1u;
    } else {
      Load4<V>(s, c, seq, 0.0f, v);
#pragma unroll
      for (int k = 0; k < 4; ++k) on[k] = Unmasked(keys, c, k, seq);
    }
  };
  float max = -INFINITY;
  ForEachStep(seq, lane, [&](int step, int64_t c) {
    if (c >= seq) return;
    float v[4];
    bool on[4];
    at(step, c, v, on);
#pragma unroll
    for (int k = 0; k < 4; ++k)
      if (on[k]) max = fmaxf(max, v[k] * scale);
  });
  max = WarpMax(max);
  float sum = 0.0f;
  ForEachStep(seq, lane, [&](int step, int64_t c) {
    if (c >= seq) return;
    float v[4];
    bool on[4];
    at(step, c, v, on);
#pragma unroll
    for (int k = 0; k < 4; ++k)
      if (on[k]) sum += __expf(v[k] * scale - max);
  });
  sum = WarpSum(sum);
  const float row_lse = sum > 0.0f ? max + logf(sum) : INFINITY;
  if (lane == 0) lse[row] = row_lse;
  const float keep_scale = p > 0.0f ? 1.0f / (1.0f - p) : 1.0f;
  const uint32_t threshold = KeepThreshold16(p);
  bf16_t* dr = dropped + row * seq;
  uint32_t* bits = keep_bits + row * AttentionSoftmaxSaved::KeepWords(seq);
  ForEachStep(seq, lane, [&](int step, int64_t c) {  // every lane runs every step, for the ballots
    uint32_t keep = 0xfu;
    if (c < seq) {
      float v[4], dv[4];
      bool on[4];
      at(step, c, v, on);
      if (p > 0.0f)
        keep = (AttentionKeepBits8(rng, static_cast<uint64_t>(row), seq, c / 8, threshold) >> (c & 4)) & 0xfu;
#pragma unroll
      for (int k = 0; k < 4; ++k) {
        const float pv = on[k] ? __expf(v[k] * scale - row_lse) : 0.0f;
        dv[k] = (keep >> k) & 1u ? pv * keep_scale : 0.0f;
      }
      Store4<V>(dr, c, seq, dv);
    }
    if (p > 0.0f) {
      uint32_t words[4];
#pragma unroll
      for (int k = 0; k < 4; ++k) words[k] = __ballot_sync(0xffffffffu, (keep >> k) & 1u);
      const int64_t base = c - 4 * lane;
      if (lane < 4)
        bits[base / 32 + lane] = lane == 0 ? words[0] : lane == 1 ? words[1] : lane == 2 ? words[2] : words[3];
    }
  });
}

// With P recomputed from the scores and lse, and dP = ddropped * keep / (1 - p) (the forward's
// decisions, from keep_bits): dscores = scale * P * (dP - sum_j dP_j P_j). dscores may overwrite
// ddropped. P and dP of the cached steps stay in registers between the two passes.
template <int V>
__global__ void __launch_bounds__(kThreads, kMinBlocks)
    SoftmaxBackwardKernel(const bf16_t* ddropped, const bf16_t* scores, const float* lse, const uint32_t* keep_bits,
                          const int32_t* key_mask, float scale, int64_t rows, int64_t heads, int64_t seq, float p,
                          bf16_t* dscores) {
  const int64_t row = blockIdx.x * static_cast<int64_t>(kRowsPerBlock) + (threadIdx.x >> 5);
  const int lane = threadIdx.x & 31;
  if (row >= rows) return;
  const int32_t* keys = key_mask + (row / (heads * seq)) * seq;
  const float row_lse = lse[row];
  const float keep_scale = p > 0.0f ? 1.0f / (1.0f - p) : 1.0f;
  const bf16_t* g = ddropped + row * seq;
  const bf16_t* s = scores + row * seq;
  const uint32_t* bits = keep_bits + row * AttentionSoftmaxSaved::KeepWords(seq);
  // Turns the gradient and scores of element k of the four at column c into dP (0 where dropped)
  // and P, in place.
  const auto transform = [&](int64_t c, float(&gp)[4], float(&sp)[4]) {
    uint4 words = make_uint4(~0u, ~0u, ~0u, ~0u);
    if (p > 0.0f)
      words = *reinterpret_cast<const uint4*>(bits + (c - 4 * lane) / 32);  // the same 16 bytes for the warp
    const uint32_t word[4] = {words.x, words.y, words.z, words.w};
#pragma unroll
    for (int k = 0; k < 4; ++k) {
      sp[k] = Unmasked(keys, c, k, seq) ? __expf(sp[k] * scale - row_lse) : 0.0f;
      gp[k] = (word[k] >> lane) & 1u ? gp[k] * keep_scale : 0.0f;
    }
  };
  const auto load = [&](int64_t c, float(&pv)[4], float(&dp)[4]) {
    Load4<V>(g, c, seq, 0.0f, dp);
    Load4<V>(s, c, seq, 0.0f, pv);
    transform(c, dp, pv);
  };
  // The cached steps' loads are issued together, before any of them is used.
  float pc[kCachedSteps][4], dc[kCachedSteps][4];
#pragma unroll
  for (int i = 0; i < kCachedSteps; ++i) {
    const int64_t c = 128 * i + 4 * lane;
    if (c < seq) {
      Load4<V>(g, c, seq, 0.0f, dc[i]);
      Load4<V>(s, c, seq, 0.0f, pc[i]);
    }
  }
  float dot = 0.0f;
  ForEachStep(seq, lane, [&](int step, int64_t c) {
    if (c >= seq) return;
    float pv[4], dp[4];
    if (step < kCachedSteps) {
      transform(c, dc[step], pc[step]);
#pragma unroll
      for (int k = 0; k < 4; ++k) pv[k] = pc[step][k], dp[k] = dc[step][k];
    } else {
      load(c, pv, dp);
    }
#pragma unroll
    for (int k = 0; k < 4; ++k) dot += dp[k] * pv[k];
  });
  dot = WarpSum(dot);
  bf16_t* ds = dscores + row * seq;
  ForEachStep(seq, lane, [&](int step, int64_t c) {
    if (c >= seq) return;
    float pv[4], dp[4], out[4];
    if (step < kCachedSteps) {
#pragma unroll
      for (int k = 0; k < 4; ++k) pv[k] = pc[step][k], dp[k] = dc[step][k];
    } else {
      load(c, pv, dp);
    }
#pragma unroll
    for (int k = 0; k < 4; ++k) out[k] = scale * pv[k] * (dp[k] - dot);
    Store4<V>(ds, c, seq, out);
  });
}

}  // namespace
}  // namespace lamina::cuda::attention
