#include "model/cuda/attention_gemm.h"

#include <cmath>

namespace lamina::cuda {
namespace {

// An operand of a per-head product: its first element, row length and stride between sequences.
struct Operand {
  const uint16_t* data;
  int64_t ld, stride;
};

// C = op(A) op(B) for one head, batched over the sequences of the batch; C bf16 at `c`.
GemmSpec HeadProduct(const GemmAttentionShape& d, bool trans_a, bool trans_b, int64_t m, int64_t n, int64_t k,
                     Operand a, Operand b, uint16_t* c, int64_t ldc, int64_t stride_c) {
  GemmSpec s;
  s.batch = static_cast<int>(d.batch);
  s.trans_a = trans_a;
  s.trans_b = trans_b;
  s.m = m;
  s.n = n;
  s.k = k;
  s.a = a.data;
  s.lda = a.ld;
  s.stride_a = a.stride;
  s.b = b.data;
  s.ldb = b.ld;
  s.stride_b = b.stride;
  s.c = c;
  s.ldc = ldc;
  s.stride_c = stride_c;
  return s;
}

}  // namespace

float GemmAttentionShape::scale() const { return 1.0f / std::sqrt(static_cast<float>(head_dim)); }

// Per head h: Q, K, V are columns [h D, (h+1) D) of the qkv blocks at 0, H and 2H (rows of 3H, a
// sequence T rows apart); scores and dropped probabilities [T, T] per (sequence, head), heads
// T^2 apart within a sequence; O and dO columns h D of rows of H.
void GemmAttentionForward(CublasLt& gemm, const GemmAttentionShape& d, const uint16_t* qkv, const int32_t* key_mask,
                          float dropout_p, RngContext rng, const AttentionSoftmaxSaved& kept, uint16_t* out,
                          cudaStream_t stream) {
  const int64_t T = d.seq, D = d.head_dim, H = d.hidden(), tt = T * T;
  const int64_t row3 = 3 * H, stride3 = T * 3 * H, per_seq = d.heads * tt;
  for (int64_t h = 0; h < d.heads; ++h)  // S = Q K^T, unscaled
    gemm.Gemm(HeadProduct(d, false, true, T, T, D, {qkv + h * D, row3, stride3}, {qkv + H + h * D, row3, stride3},
                          kept.scores + h * tt, T, per_seq),
              stream);
  LaunchAttentionSoftmax(kept, key_mask, d.scale(), d.batch, d.heads, T, dropout_p, rng, stream);
  for (int64_t h = 0; h < d.heads; ++h)  // O = dropout(P) V
    gemm.Gemm(HeadProduct(d, false, false, T, D, T, {kept.dropped + h * tt, T, per_seq},
                          {qkv + 2 * H + h * D, row3, stride3}, out + h * D, H, T * H),
              stream);
}

void GemmAttentionBackward(CublasLt& gemm, const GemmAttentionShape& d, const uint16_t* dout, const uint16_t* qkv,
                           const int32_t* key_mask, float dropout_p, const AttentionSoftmaxSaved& kept, uint16_t* grad,
                           uint16_t* dqkv, cudaStream_t stream) {
  const int64_t T = d.seq, D = d.head_dim, H = d.hidden(), tt = T * T;
  const int64_t row3 = 3 * H, stride3 = T * 3 * H, per_seq = d.heads * tt;
  for (int64_t h = 0; h < d.heads; ++h)  // d(dropout(P)) = dO V^T
    gemm.Gemm(HeadProduct(d, false, true, T, T, D, {dout + h * D, H, T * H}, {qkv + 2 * H + h * D, row3, stride3},
                          grad + h * tt, T, per_seq),
              stream);
  // dS over the gradient of the dropped probabilities, in place.
  LaunchAttentionSoftmaxBackward(grad, kept, key_mask, d.scale(), d.batch, d.heads, T, dropout_p, grad, stream);
  for (int64_t h = 0; h < d.heads; ++h) {
    const int64_t col = h * D;
    const Operand dropped{kept.dropped + h * tt, T, per_seq}, dscores{grad + h * tt, T, per_seq};
    // dV = dropout(P)^T dO
    gemm.Gemm(HeadProduct(d, true, false, T, D, T, dropped, {dout + col, H, T * H}, dqkv + 2 * H + col, row3, stride3),
              stream);
    // dQ = dS K (dS already carries the 1/sqrt(D) scale)
    gemm.Gemm(HeadProduct(d, false, false, T, D, T, dscores, {qkv + H + col, row3, stride3}, dqkv + col, row3, stride3),
              stream);
    // dK = dS^T Q
    gemm.Gemm(HeadProduct(d, true, false, T, D, T, dscores, {qkv + col, row3, stride3}, dqkv + H + col, row3, stride3),
              stream);
  }
}

}  // namespace lamina::cuda
