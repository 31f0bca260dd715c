// Layer normalisation over the last dimension, with the residual add (and the dropout of the
// branch added) fused in front of it.
// Biased variance, rstd = 1 / sqrt(var + eps); row statistics accumulate in double.
#include <cmath>

#include "model/cpu/cpu_backend.h"
#include "model/cpu/cpu_checks.h"
#include "model/cpu/dropout_mask.h"

namespace lamina {
namespace {

// Normalises rows of x (already checked) into out and saves the row statistics.
void NormalizeRows(const float* x, const float* gamma, const float* beta, float eps, int64_t rows, int64_t cols,
                   float* out, float* mean_out, float* rstd_out) {
  for (int64_t r = 0; r < rows; ++r) {
    const float* xr = x + r * cols;
    double sum = 0;
    for (int64_t c = 0; c < cols; ++c) sum += xr[c];
    const double mean = sum / static_cast<double>(cols);
    double sq = 0;
    for (int64_t c = 0; c < cols; ++c) sq += (xr[c] - mean) * (xr[c] - mean);
    const float m = static_cast<float>(mean);
    const float rstd = static_cast<float>(1.0 / std::sqrt(sq / static_cast<double>(cols) + eps));
    float* orow = out + r * cols;
    for (int64_t c = 0; c < cols; ++c) orow[c] = (xr[c] - m) * rstd * gamma[c] + beta[c];
    mean_out[r] = m;
    rstd_out[r] = rstd;
  }
}

struct NormArgs {
  const float* gamma;
  const float* beta;
  float* out;
  float* mean;
  float* rstd;
};

NormArgs CheckNormArgs(int64_t rows, int64_t cols, const TensorView& gamma, const TensorView& beta,
                       const TensorView& out, const TensorView& mean, const TensorView& rstd) {
  NormArgs a{cpu::F32(gamma, "gamma"), cpu::F32(beta, "beta"), cpu::F32(out, "out"), cpu::F32(mean, "mean"),
             cpu::F32(rstd, "rstd")};
  cpu::CheckNumel(gamma, cols, "gamma");
  cpu::CheckNumel(beta, cols, "beta");
  cpu::CheckMatrix(out, rows, cols, "out");
  cpu::CheckNumel(mean, rows, "mean");
  cpu::CheckNumel(rstd, rows, "rstd");
  return a;
}

}  // namespace

void CpuBackend::LayerNormForward(TensorView x, TensorView gamma, TensorView beta, float eps, TensorView out,
                                  TensorView mean, TensorView rstd) {
  const float* xs = cpu::F32(x, "x");
  const NormArgs a = CheckNormArgs(x.rows(), x.cols(), gamma, beta, out, mean, rstd);
  NormalizeRows(xs, a.gamma, a.beta, eps, x.rows(), x.cols(), a.out, a.mean, a.rstd);
}

void CpuBackend::AddLayerNormForward(TensorView a, TensorView b, float p, RngContext rng, TensorView gamma,
                                     TensorView beta, float eps, TensorView sum, TensorView out, TensorView mean,
                                     TensorView rstd) {
  const float* as = cpu::F32(a, "a");
  const float* bs = cpu::F32(b, "b");
  float* s = cpu::F32(sum, "sum");
  const int64_t rows = a.rows(), cols = a.cols();
  cpu::CheckMatrix(b, rows, cols, "b");
  cpu::CheckMatrix(sum, rows, cols, "sum");
  LAMINA_CHECK(p >= 0.0f && p < 1.0f, "dropout probability ", p);
  const NormArgs n = CheckNormArgs(rows, cols, gamma, beta, out, mean, rstd);
  cpu::DropoutMask mask(rng, p);
  for (int64_t i = 0; i < rows * cols; ++i) s[i] = as[i] + mask.Apply(static_cast<uint64_t>(i), bs[i]);
  NormalizeRows(s, n.gamma, n.beta, eps, rows, cols, n.out, n.mean, n.rstd);
}

// With xhat = (x - mean) * rstd and g = dout * gamma:
//   dx = rstd * (g - mean(g) - xhat * mean(g * xhat)),  dgamma += dout * xhat,  dbeta += dout,
// and the dropped copy of the final dx when asked for. Each row of dout is read before that row
// of `dropped` is written, so the two may alias.
void CpuBackend::LayerNormBackward(TensorView dout, TensorView x, TensorView gamma, TensorView mean, TensorView rstd,
                                   TensorView dx, bool accumulate, TensorView dgamma, TensorView dbeta, float p,
                                   RngContext rng, TensorView dropped) {
  const float* g = cpu::F32(dout, "dout");
  const float* xs = cpu::F32(x, "x");
  const float* gam = cpu::F32(gamma, "gamma");
  const float* mu = cpu::F32(mean, "mean");
  const float* rs = cpu::F32(rstd, "rstd");
  float* d = cpu::F32(dx, "dx");
  float* dg = cpu::F32(dgamma, "dgamma");
  float* db = cpu::F32(dbeta, "dbeta");
  const int64_t rows = x.rows(), cols = x.cols();
  cpu::CheckMatrix(dout, rows, cols, "dout");
  cpu::CheckMatrix(dx, rows, cols, "dx");
  cpu::CheckNumel(gamma, cols, "gamma");
  cpu::CheckNumel(dgamma, cols, "dgamma");
  cpu::CheckNumel(dbeta, cols, "dbeta");
  cpu::CheckNumel(mean, rows, "mean");
  cpu::CheckNumel(rstd, rows, "rstd");
  float* drop = nullptr;
  if (!dropped.empty()) {
    drop = cpu::F32(dropped, "dropped");
    cpu::CheckMatrix(dropped, rows, cols, "dropped");
  }
  LAMINA_CHECK(p >= 0.0f && p < 1.0f, "dropout probability ", p);
  cpu::DropoutMask mask(rng, p);
  for (int64_t r = 0; r < rows; ++r) {
    const float* grow = g + r * cols;
    const float* xr = xs + r * cols;
    const float m = mu[r], rstd_r = rs[r];
    double sum_g = 0, sum_g_xhat = 0;
    for (int64_t c = 0; c < cols; ++c) {
      const float xhat = (xr[c] - m) * rstd_r;
      const float gc = grow[c] * gam[c];
      sum_g += gc;
      sum_g_xhat += static_cast<double>(gc) * xhat;
      dg[c] += grow[c] * xhat;
      db[c] += grow[c];
    }
    const float mean_g = static_cast<float>(sum_g / static_cast<double>(cols));
    const float mean_g_xhat = static_cast<float>(sum_g_xhat / static_cast<double>(cols));
    float* drow = d + r * cols;
    for (int64_t c = 0; c < cols; ++c) {
      const float xhat = (xr[c] - m) * rstd_r;
      const float v = rstd_r * (grow[c] * gam[c] - mean_g - xhat * mean_g_xhat);
      drow[c] = accumulate ? drow[c] + v : v;
    }
    if (drop == nullptr) continue;
    for (int64_t c = 0; c < cols; ++c) drop[r * cols + c] = mask.Apply(static_cast<uint64_t>(r * cols + c), drow[c]);
  }
}

}  // namespace lamina
