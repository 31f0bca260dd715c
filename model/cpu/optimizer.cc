// Gradient norms and the AdamW / LAMB updates on the flat f32 parameter buffers.
#include <cmath>
#include <vector>

#include "model/cpu/cpu_backend.h"
#include "model/cpu/cpu_checks.h"

namespace lamina {
namespace {

struct OptimizerBuffers {
  float* p;
  const float* g;
  float* m;
  float* v;
};

OptimizerBuffers CheckOptimizerArgs(const TensorView& params, const TensorView& grads, const TensorView& m,
                                    const TensorView& v, std::span<const ParamSegment> segments,
                                    const AdamWHyper& hyper) {
  OptimizerBuffers b{cpu::F32(params, "params"), cpu::F32(grads, "grads"), cpu::F32(m, "m"), cpu::F32(v, "v")};
  const int64_t n = params.numel();
  cpu::CheckNumel(grads, n, "grads");
  cpu::CheckNumel(m, n, "m");
  cpu::CheckNumel(v, n, "v");
  for (const ParamSegment& s : segments) {
    LAMINA_CHECK(s.offset >= 0 && s.size >= 0 && s.offset + s.size <= n, "segment [", s.offset, ", +", s.size,
                 ") outside ", n, " parameters");
  }
  LAMINA_CHECK(hyper.step >= 1, "optimizer step ", hyper.step, " must be 1-based");
  return b;
}

// The Adam moment updates with bias correction, shared by AdamW and LAMB.
struct AdamMoments {
  float beta1, beta2, eps, grad_scale;
  float correction1, correction2;  // 1 - beta^step

  explicit AdamMoments(const AdamWHyper& h)
      : beta1(h.beta1),
        beta2(h.beta2),
        eps(h.eps),
        grad_scale(h.grad_scale),
        correction1(static_cast<float>(1.0 - std::pow(static_cast<double>(h.beta1), static_cast<double>(h.step)))),
        correction2(static_cast<float>(1.0 - std::pow(static_cast<double>(h.beta2), static_cast<double>(h.step)))) {}

  // Updates m and v from the gradient.
  void Update(float grad, float& m, float& v) const {
    const float g = grad * grad_scale;
    m = beta1 * m + (1.0f - beta1) * g;
    v = beta2 * v + (1.0f - beta2) * g * g;
  }
  // The bias-corrected Adam direction mhat / (sqrt(vhat) + eps).
  float Direction(float m, float v) const { return (m / correction1) / (std::sqrt(v / correction2) + eps); }
};

}  // namespace

double CpuBackend::SumSquares(TensorView x) {
  const float* xs = cpu::F32(x, "x");
  double sum = 0;
  for (int64_t i = 0; i < x.numel(); ++i) sum += static_cast<double>(xs[i]) * xs[i];
  return sum;
}

void CpuBackend::Scale(TensorView x, float s) {
  float* xs = cpu::F32(x, "x");
  for (int64_t i = 0; i < x.numel(); ++i) xs[i] *= s;
}

// p -= lr * (mhat / (sqrt(vhat) + eps) + wd * p), the decay term only where segment.decay.
void CpuBackend::AdamWStep(TensorView params, TensorView grads, TensorView m, TensorView v, TensorView compute,
                           std::span<const ParamSegment> segments, const AdamWHyper& hyper) {
  const OptimizerBuffers b = CheckOptimizerArgs(params, grads, m, v, segments, hyper);
  const AdamMoments adam(hyper);
  for (const ParamSegment& s : segments) {
    const float wd = s.decay ? hyper.weight_decay : 0.0f;
    for (int64_t i = s.offset; i < s.offset + s.size; ++i) {
      adam.Update(b.g[i], b.m[i], b.v[i]);
      b.p[i] -= hyper.lr * (adam.Direction(b.m[i], b.v[i]) + wd * b.p[i]);
    }
  }
  // On the CPU the compute copy is normally params itself; a distinct buffer is refreshed.
  if (!compute.empty() && compute.data != params.data) Convert(params, compute);
}

// r = mhat / (sqrt(vhat) + eps) + wd * p;  p -= lr * trust * r with trust = ||p|| / ||r|| per tensor
// (1 when either norm is 0). As in NVIDIA's LAMB, the trust ratio applies to every tensor, biases
// and LayerNorm parameters included, while weight decay skips the segments with decay == false.
// LambMoments updates m and v and measures both norms; LambUpdate recomputes r from the updated
// moments and the not-yet-updated parameter and applies it.
void CpuBackend::LambMoments(TensorView params, TensorView grads, TensorView m, TensorView v,
                             std::span<const ParamSegment> segments, const AdamWHyper& hyper, TensorView norms) {
  const OptimizerBuffers b = CheckOptimizerArgs(params, grads, m, v, segments, hyper);
  float* out = cpu::F32(norms, "norms");
  const int64_t tensors = LambTensorCount(segments, norms);
  std::vector<double> sums(2 * tensors, 0.0);
  const AdamMoments adam(hyper);
  for (const ParamSegment& s : segments) {
    const float wd = s.decay ? hyper.weight_decay : 0.0f;
    double p_norm2 = 0, r_norm2 = 0;
    for (int64_t i = s.offset; i < s.offset + s.size; ++i) {
      adam.Update(b.g[i], b.m[i], b.v[i]);
      const float r = adam.Direction(b.m[i], b.v[i]) + wd * b.p[i];
      p_norm2 += static_cast<double>(b.p[i]) * b.p[i];
      r_norm2 += static_cast<double>(r) * r;
    }
    sums[2 * s.tensor] += p_norm2;
    sums[2 * s.tensor + 1] += r_norm2;
  }
  for (int64_t k = 0; k < norms.numel(); ++k) out[k] = k < 2 * tensors ? static_cast<float>(sums[k]) : 0.0f;
}

void CpuBackend::LambUpdate(TensorView params, TensorView m, TensorView v, TensorView compute,
                            std::span<const ParamSegment> segments, const AdamWHyper& hyper, TensorView norms) {
  const OptimizerBuffers b = CheckOptimizerArgs(params, params, m, v, segments, hyper);
  const float* sums = cpu::F32(norms, "norms");
  LambTensorCount(segments, norms);
  const AdamMoments adam(hyper);
  for (const ParamSegment& s : segments) {
    const float wd = s.decay ? hyper.weight_decay : 0.0f;
    const float p2 = sums[2 * s.tensor], r2 = sums[2 * s.tensor + 1];
    const float trust = p2 > 0 && r2 > 0 ? std::sqrt(p2) / std::sqrt(r2) : 1.0f;
    for (int64_t i = s.offset; i < s.offset + s.size; ++i) {
      const float r = adam.Direction(b.m[i], b.v[i]) + wd * b.p[i];
      b.p[i] -= hyper.lr * trust * r;
    }
  }
  if (!compute.empty() && compute.data != params.data) Convert(params, compute);
}

}  // namespace lamina
