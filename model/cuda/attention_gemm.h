// The GEMM attention path's algorithm (AttentionKernel::kGemm, and heads the fused kernels do not
// take): per head, cuBLASLt products around the row kernels of model/cuda/attention.cuh.
//   forward:  S = Q K^T (unscaled, bf16), softmax + dropout (LaunchAttentionSoftmax), O = dropout(P) V
//   backward: d(dropout(P)) = dO V^T, dS (LaunchAttentionSoftmaxBackward, carrying 1/sqrt(D)),
//             dV = dropout(P)^T dO, dQ = dS K, dK = dS^T Q
// Q, K and V are the column blocks of one fused qkv [B*T, 3H]; the products are batched over the
// B sequences with strides. Every launch is on `stream`; nothing synchronises.
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

#include "core/philox.h"
#include "model/cuda/cublaslt.h"
#include "model/cuda/kernels.h"

namespace lamina::cuda {

struct GemmAttentionShape {
  int64_t batch = 0, seq = 0, heads = 0, head_dim = 0;
  int64_t hidden() const { return heads * head_dim; }
  float scale() const;  // 1 / sqrt(head_dim)
};

// qkv [B*T, 3H] and out [B*T, H] bf16; key_mask [B, T]; `saved` the forward's record for backward.
void GemmAttentionForward(CublasLt& gemm, const GemmAttentionShape& shape, const uint16_t* qkv, const int32_t* key_mask,
                          float dropout_p, RngContext rng, const AttentionSoftmaxSaved& saved, uint16_t* out,
                          cudaStream_t stream);

// dout [B*T, H] and dqkv [B*T, 3H] bf16; `grad` scratch of B * heads * T * T bf16 values.
void GemmAttentionBackward(CublasLt& gemm, const GemmAttentionShape& shape, const uint16_t* dout, const uint16_t* qkv,
                           const int32_t* key_mask, float dropout_p, const AttentionSoftmaxSaved& saved, uint16_t* grad,
                           uint16_t* dqkv, cudaStream_t stream);

}  // namespace lamina::cuda
