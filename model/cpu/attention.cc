// Multi-head self-attention core on a fused [q | k | v] projection, one (batch, head) at a time.
//
// For one head, with Q, K, V the [T, D] column blocks of qkv (row stride 3H) and M the dropout
// mask scaled by 1 / (1 - p):
//   S = Q K^T / sqrt(D);  P = softmax(S) over unmasked keys (masked keys get exactly 0);
//   out = (P * M) V.
// `saved` keeps P (before dropout); backward recomputes M from the rng:
//   dV = (P * M)^T dO;  dP = (dO V^T) * M;  dS = P * (dP - rowsum(dP * P));
//   dQ = dS K / sqrt(D);  dK = dS^T Q / sqrt(D).
#include <cblas.h>

#include <algorithm>
#include <cmath>

#include "model/cpu/cpu_backend.h"
#include "model/cpu/cpu_checks.h"

namespace lamina {
namespace {

struct AttentionDims {
  int64_t batch, seq, hidden, heads, head_dim;
};

AttentionDims CheckAttentionArgs(const TensorView& qkv, const TensorView& key_mask, int64_t heads,
                                 const TensorView& saved, float dropout_p) {
  cpu::F32(qkv, "qkv");
  cpu::F32(saved, "saved");
  cpu::I32(key_mask, "key_mask");
  LAMINA_CHECK(key_mask.rank() == 2, "key_mask must be [B, T], got ", key_mask.ToString());
  LAMINA_CHECK(heads > 0 && qkv.cols() % (3 * heads) == 0, "qkv ", qkv.ToString(), " does not split into 3 x ", heads,
               " heads");
  AttentionDims d;
  d.batch = key_mask.dim(0);
  d.seq = key_mask.dim(1);
  d.hidden = qkv.cols() / 3;
  d.heads = heads;
  d.head_dim = d.hidden / heads;
  cpu::CheckMatrix(qkv, d.batch * d.seq, 3 * d.hidden, "qkv");
  cpu::CheckNumel(saved, d.batch * heads * d.seq * d.seq, "saved");
  LAMINA_CHECK(dropout_p >= 0.0f && dropout_p < 1.0f, "attention dropout probability ", dropout_p);
  return d;
}

// pd = p * (keep ? 1 / (1 - p) : 0) for the [t, t] probabilities of one head, whose first row is
// row `first_row` of the attention dropout (AttentionKeepBits8).
void ApplyDropout(const float* p, float dropout_p, const RngContext& rng, uint64_t first_row, int64_t t, float* pd) {
  if (dropout_p == 0.0f) {
    if (pd != p) std::copy(p, p + t * t, pd);
    return;
  }
  const float scale = 1.0f / (1.0f - dropout_p);
  const uint32_t threshold = KeepThreshold16(dropout_p);
  for (int64_t i = 0; i < t; ++i)
    for (int64_t k8 = 0; k8 * 8 < t; ++k8) {
      const uint32_t keep = AttentionKeepBits8(rng, first_row + i, t, k8, threshold);
      for (int64_t j = 8 * k8; j < std::min(t, 8 * k8 + 8); ++j)
        pd[i * t + j] = (keep >> (j - 8 * k8)) & 1u ? p[i * t + j] * scale : 0.0f;
    }
}

}  // namespace

void CpuBackend::AttentionForward(TensorView qkv, TensorView key_mask, int64_t heads, float dropout_p, RngContext rng,
                                  TensorView saved, TensorView out) {
  const AttentionDims d = CheckAttentionArgs(qkv, key_mask, heads, saved, dropout_p);
  float* o = cpu::F32(out, "out");
  cpu::CheckMatrix(out, d.batch * d.seq, d.hidden, "out");
  const float* x = qkv.as<float>();
  const int32_t* mask = key_mask.as<int32_t>();
  float* probs_all = saved.as<float>();
  const int64_t t = d.seq, h3 = 3 * d.hidden, tt = t * t;
  if (tt == 0 || d.head_dim == 0) return;
  const float score_scale = 1.0f / std::sqrt(static_cast<float>(d.head_dim));
  head_scratch_a_.resize(tt);
  float* dropped = head_scratch_a_.data();
  for (int64_t b = 0; b < d.batch; ++b) {
    const int32_t* keys = mask + b * t;
    for (int64_t h = 0; h < heads; ++h) {
      const float* q = x + b * t * h3 + h * d.head_dim;
      const float* k = q + d.hidden;
      const float* v = q + 2 * d.hidden;
      const uint64_t base = static_cast<uint64_t>((b * heads + h) * tt);
      const uint64_t first_row = static_cast<uint64_t>((b * heads + h) * t);
      float* probs = probs_all + base;
      // Scores into `probs`, then the masked softmax of each row in place.
      cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, t, t, d.head_dim, score_scale, q, h3, k, h3, 0.0f, probs, t);
      for (int64_t i = 0; i < t; ++i) {
        float* row = probs + i * t;
        float max = -INFINITY;
        for (int64_t j = 0; j < t; ++j)
          if (keys[j] != 0 && row[j] > max) max = row[j];
        float sum = 0.0f;
        for (int64_t j = 0; j < t; ++j) {
          row[j] = keys[j] != 0 ? std::exp(row[j] - max) : 0.0f;
          sum += row[j];
        }
        // A row whose keys are all padding stays all zero rather than becoming NaN.
        const float inv = sum > 0.0f ? 1.0f / sum : 0.0f;
        for (int64_t j = 0; j < t; ++j) row[j] *= inv;
      }
      ApplyDropout(probs, dropout_p, rng, first_row, t, dropped);
      cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, t, d.head_dim, t, 1.0f, dropped, t, v, h3, 0.0f,
                  o + b * t * d.hidden + h * d.head_dim, d.hidden);
    }
  }
}

void CpuBackend::AttentionBackward(TensorView dout, TensorView qkv, TensorView key_mask, TensorView /*out*/,
                                   TensorView saved, int64_t heads, float dropout_p, RngContext rng, TensorView dqkv) {
  const AttentionDims d = CheckAttentionArgs(qkv, key_mask, heads, saved, dropout_p);
  const float* g = cpu::F32(dout, "dout");
  float* dx = cpu::F32(dqkv, "dqkv");
  cpu::CheckMatrix(dout, d.batch * d.seq, d.hidden, "dout");
  cpu::CheckMatrix(dqkv, d.batch * d.seq, 3 * d.hidden, "dqkv");
  const float* x = qkv.as<float>();
  const float* probs_all = saved.as<float>();
  const int64_t t = d.seq, h3 = 3 * d.hidden, tt = t * t;
  if (tt == 0 || d.head_dim == 0) return;
  const float score_scale = 1.0f / std::sqrt(static_cast<float>(d.head_dim));
  head_scratch_a_.resize(tt);
  head_scratch_b_.resize(tt);
  float* dropped = head_scratch_a_.data();  // P * M
  float* grad = head_scratch_b_.data();     // dP, then dS
  for (int64_t b = 0; b < d.batch; ++b) {
    for (int64_t h = 0; h < heads; ++h) {
      const int64_t col = h * d.head_dim;
      const float* q = x + b * t * h3 + col;
      const float* k = q + d.hidden;
      const float* v = q + 2 * d.hidden;
      const float* go = g + b * t * d.hidden + col;
      float* dq = dx + b * t * h3 + col;
      float* dk = dq + d.hidden;
      float* dv = dq + 2 * d.hidden;
      const uint64_t base = static_cast<uint64_t>((b * heads + h) * tt);
      const uint64_t first_row = static_cast<uint64_t>((b * heads + h) * t);
      const float* probs = probs_all + base;
      ApplyDropout(probs, dropout_p, rng, first_row, t, dropped);
      // dV = (P * M)^T dO
      cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, t, d.head_dim, t, 1.0f, dropped, t, go, d.hidden, 0.0f, dv,
                  h3);
      // dP = (dO V^T) * M, applying the mask exactly as the forward did.
      cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, t, t, d.head_dim, 1.0f, go, d.hidden, v, h3, 0.0f, grad, t);
      ApplyDropout(grad, dropout_p, rng, first_row, t, grad);
      // dS = P * (dP - rowsum(dP * P)); zero where P is zero, so masked keys get no gradient.
      for (int64_t i = 0; i < t; ++i) {
        const float* prow = probs + i * t;
        float* grow = grad + i * t;
        double dot = 0;
        for (int64_t j = 0; j < t; ++j) dot += static_cast<double>(grow[j]) * prow[j];
        const float dotf = static_cast<float>(dot);
        for (int64_t j = 0; j < t; ++j) grow[j] = prow[j] * (grow[j] - dotf);
      }
      // dQ = dS K / sqrt(D);  dK = dS^T Q / sqrt(D)
      cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, t, d.head_dim, t, score_scale, grad, t, k, h3, 0.0f, dq,
                  h3);
      cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, t, d.head_dim, t, score_scale, grad, t, q, h3, 0.0f, dk, h3);
    }
  }
}

}  // namespace lamina
