// The attention core's fused row kernels: scale + key mask + softmax + dropout forward, and the
// matching backward. One warp per row of seq scores. The matrix products around them run through
// the cuBLASLt wrapper (model/cuda/cuda_backend.cc).
#include "model/cuda/common.cuh"
#include "model/cuda/kernels.h"

namespace lamina::cuda {
namespace {

constexpr int kRowsPerBlock = 8;

// probs = softmax over unmasked keys of scale * scores (masked keys exactly 0; a row with no
// unmasked key stays 0); dropped = keep ? probs / (1 - p) : 0 with element index row * seq + j.
template <typename TP>
__global__ void SoftmaxForwardKernel(const float* scores, const int32_t* key_mask, float scale, int64_t rows,
                                     int64_t heads, int64_t seq, float p, RngContext rng, TP* probs, bf16_t* dropped) {
  const int64_t row = blockIdx.x * static_cast<int64_t>(kRowsPerBlock) + (threadIdx.x >> 5);
  const int lane = threadIdx.x & 31;
  if (row >= rows) return;
  const int32_t* keys = key_mask + (row / (heads * seq)) * seq;
  const float* s = scores + row * seq;
  float max = -INFINITY;
  for (int64_t j = lane; j < seq; j += 32)
    if (keys[j] != 0) max = fmaxf(max, s[j] * scale);
  max = WarpMax(max);
  float sum = 0.0f;
  for (int64_t j = lane; j < seq; j += 32)
    if (keys[j] != 0) sum += __expf(s[j] * scale - max);
  sum = WarpSum(sum);
  const float inv = sum > 0.0f ? 1.0f / sum : 0.0f;
  const float keep_scale = p > 0.0f ? 1.0f / (1.0f - p) : 1.0f;
  TP* pr = probs + row * seq;
  bf16_t* dr = dropped + row * seq;
  for (int64_t j = lane; j < seq; j += 32) {
    const float v = keys[j] != 0 ? __expf(s[j] * scale - max) * inv : 0.0f;
    pr[j] = FromF<TP>(v);
    const bool keep = p == 0.0f || DropoutKeep(rng, static_cast<uint64_t>(row * seq + j), p);
    dr[j] = FromF<bf16_t>(keep ? v * keep_scale : 0.0f);
  }
}

// With dP = ddropped * M: dscores = scale * P * (dP - sum_j dP_j P_j); dropped recomputed.
template <typename TP>
__global__ void SoftmaxBackwardKernel(const float* ddropped, const TP* probs, float scale, int64_t rows, int64_t seq,
                                      float p, RngContext rng, bf16_t* dropped, bf16_t* dscores) {
  const int64_t row = blockIdx.x * static_cast<int64_t>(kRowsPerBlock) + (threadIdx.x >> 5);
  const int lane = threadIdx.x & 31;
  if (row >= rows) return;
  const float keep_scale = p > 0.0f ? 1.0f / (1.0f - p) : 1.0f;
  const float* g = ddropped + row * seq;
  const TP* pr = probs + row * seq;
  float dot = 0.0f;
  for (int64_t j = lane; j < seq; j += 32) {
    const bool keep = p == 0.0f || DropoutKeep(rng, static_cast<uint64_t>(row * seq + j), p);
    if (keep) dot += g[j] * keep_scale * ToF(pr[j]);
  }
  dot = WarpSum(dot);
  bf16_t* dr = dropped + row * seq;
  bf16_t* ds = dscores + row * seq;
  for (int64_t j = lane; j < seq; j += 32) {
    const bool keep = p == 0.0f || DropoutKeep(rng, static_cast<uint64_t>(row * seq + j), p);
    const float pv = ToF(pr[j]);
    const float dp = keep ? g[j] * keep_scale : 0.0f;
    dr[j] = FromF<bf16_t>(keep ? pv * keep_scale : 0.0f);
    ds[j] = FromF<bf16_t>(scale * pv * (dp - dot));
  }
}

}  // namespace

void LaunchAttentionSoftmax(const float* scores, const int32_t* key_mask, float scale, int64_t batch, int64_t heads,
                            int64_t seq, float p, RngContext rng, Ref probs, uint16_t* dropped, cudaStream_t stream) {
  const int64_t rows = batch * heads * seq;
  if (rows == 0) return;
  LAMINA_DISPATCH_FLOAT(probs.dtype, TP, {
    SoftmaxForwardKernel<TP><<<static_cast<unsigned>(CeilDiv(rows, kRowsPerBlock)), kRowsPerBlock * 32, 0, stream>>>(
        scores, key_mask, scale, rows, heads, seq, p, rng, static_cast<TP*>(probs.data), dropped);
  });
  LAMINA_CUDA_CHECK_LAUNCH();
}

void LaunchAttentionSoftmaxBackward(const float* ddropped, Ref probs, float scale, int64_t batch, int64_t heads,
                                    int64_t seq, float p, RngContext rng, uint16_t* dropped, uint16_t* dscores,
                                    cudaStream_t stream) {
  const int64_t rows = batch * heads * seq;
  if (rows == 0) return;
  LAMINA_DISPATCH_FLOAT(probs.dtype, TP, {
    SoftmaxBackwardKernel<TP><<<static_cast<unsigned>(CeilDiv(rows, kRowsPerBlock)), kRowsPerBlock * 32, 0, stream>>>(
        ddropped, static_cast<const TP*>(probs.data), scale, rows, seq, p, rng, dropped, dscores);
  });
  LAMINA_CUDA_CHECK_LAUNCH();
}

}  // namespace lamina::cuda
