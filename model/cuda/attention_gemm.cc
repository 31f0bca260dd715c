#include "model/cuda/attention_gemm.h"

#include <cmath>

namespace lamina::cuda {
namespace {

// A per-head product batched over the sequences of the batch.
GemmSpec HeadGemm(const GemmAttentionShape& d) {
  GemmSpec s;
  s.batch = static_cast<int>(d.batch);
  return s;
}

}  // namespace

float GemmAttentionShape::scale() const { return 1.0f / std::sqrt(static_cast<float>(head_dim)); }

void GemmAttentionForward(CublasLt& gemm, const GemmAttentionShape& d, const uint16_t* qkv, const int32_t* key_mask,
                          float dropout_p, RngContext rng, const AttentionSoftmaxSaved& kept, uint16_t* out,
                          cudaStream_t stream) {
  const int64_t tt = d.seq * d.seq, hidden = d.hidden();
  for (int64_t h = 0; h < d.heads; ++h) {  // S = Q K^T, unscaled
    GemmSpec s = HeadGemm(d);
    s.trans_b = true;
    s.m = d.seq;
    s.n = d.seq;
    s.k = d.head_dim;
    s.a = qkv + h * d.head_dim;
    s.lda = 3 * hidden;
    s.stride_a = d.seq * 3 * hidden;
    s.b = qkv + hidden + h * d.head_dim;
    s.ldb = 3 * hidden;
    s.stride_b = d.seq * 3 * hidden;
    s.c = kept.scores + h * tt;
    s.ldc = d.seq;
    s.stride_c = d.heads * tt;
    gemm.Gemm(s, stream);
  }
  LaunchAttentionSoftmax(kept, key_mask, d.scale(), d.batch, d.heads, d.seq, dropout_p, rng, stream);
  for (int64_t h = 0; h < d.heads; ++h) {  // O = dropout(P) V
    GemmSpec s = HeadGemm(d);
    s.m = d.seq;
    s.n = d.head_dim;
    s.k = d.seq;
    s.a = kept.dropped + h * tt;
    s.lda = d.seq;
    s.stride_a = d.heads * tt;
    s.b = qkv + 2 * hidden + h * d.head_dim;
    s.ldb = 3 * hidden;
    s.stride_b = d.seq * 3 * hidden;
    s.c = out + h * d.head_dim;
    s.ldc = hidden;
    s.stride_c = d.seq * hidden;
    gemm.Gemm(s, stream);
  }
}

void GemmAttentionBackward(CublasLt& gemm, const GemmAttentionShape& d, const uint16_t* dout, const uint16_t* qkv,
                           const int32_t* key_mask, float dropout_p, const AttentionSoftmaxSaved& kept, uint16_t* grad,
                           uint16_t* dx, cudaStream_t stream) {
  const int64_t tt = d.seq * d.seq, hidden = d.hidden();
  const int64_t row3 = 3 * hidden, stride3 = d.seq * 3 * hidden;
  for (int64_t h = 0; h < d.heads; ++h) {  // d(dropout(P)) = dO V^T
    GemmSpec s = HeadGemm(d);
    s.trans_b = true;
    s.m = d.seq;
    s.n = d.seq;
    s.k = d.head_dim;
    s.a = dout + h * d.head_dim;
    s.lda = hidden;
    s.stride_a = d.seq * hidden;
    s.b = qkv + 2 * hidden + h * d.head_dim;
    s.ldb = row3;
    s.stride_b = stride3;
    s.c = grad + h * tt;
    s.ldc = d.seq;
    s.stride_c = d.heads * tt;
    gemm.Gemm(s, stream);
  }
  // dS over the gradient of the dropped probabilities, in place.
  LaunchAttentionSoftmaxBackward(grad, kept, key_mask, d.scale(), d.batch, d.heads, d.seq, dropout_p, grad, stream);
  for (int64_t h = 0; h < d.heads; ++h) {
    const int64_t col = h * d.head_dim;
    // dV = dropout(P)^T dO
    GemmSpec s = HeadGemm(d);
    s.trans_a = true;
    s.m = d.seq;
    s.n = d.head_dim;
    s.k = d.seq;
    s.a = kept.dropped + h * tt;
    s.lda = d.seq;
    s.stride_a = d.heads * tt;
    s.b = dout + col;
    s.ldb = hidden;
    s.stride_b = d.seq * hidden;
    s.c = dx + 2 * hidden + col;
    s.ldc = row3;
    s.stride_c = stride3;
    gemm.Gemm(s, stream);
    // dQ = dS K (dS already carries the 1/sqrt(D) scale)
    s.trans_a = false;
    s.a = grad + h * tt;
    s.b = qkv + hidden + col;
    s.ldb = row3;
    s.stride_b = stride3;
    s.c = dx + col;
    gemm.Gemm(s, stream);
    // dK = dS^T Q
    s.trans_a = true;
    s.b = qkv + col;
    s.c = dx + hidden + col;
    gemm.Gemm(s, stream);
  }
}

}  // namespace lamina::cuda
