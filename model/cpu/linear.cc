// Dense layers: out = act(x W^T + b) with W in torch's [out_features, in_features] layout.
// The matrix products are single CBLAS calls over all rows.
#include <cblas.h>

#include <vector>

#include "model/cpu/cpu_backend.h"
#include "model/cpu/cpu_checks.h"
#include "model/cpu/gelu.h"

namespace lamina {

void CpuBackend::LinearForward(TensorView x, TensorView w, TensorView b, Activation act, TensorView pre_act,
                               TensorView out) {
  const float* xs = cpu::F32(x, "x");
  const float* ws = cpu::F32(w, "w");
  float* o = cpu::F32(out, "out");
  const int64_t m = x.rows(), k = x.cols(), n = w.rows();
  cpu::CheckMatrix(w, n, k, "w");
  const int64_t pitch = RowPitch(out, m, n, act == Activation::kNone, "out");
  const float* bias = nullptr;
  if (!b.empty()) {
    bias = cpu::F32(b, "b");
    cpu::CheckNumel(b, n, "b");
  }
  // With GELU the affine result goes to pre_act (kept for backward) and out receives gelu of it.
  float* y = o;
  if (act != Activation::kNone) {
    y = cpu::F32(pre_act, "pre_act");
    cpu::CheckMatrix(pre_act, m, n, "pre_act");
  }
  if (m == 0 || n == 0) return;
  if (k == 0) {
    for (int64_t r = 0; r < m; ++r)
      for (int64_t c = 0; c < n; ++c) y[r * pitch + c] = 0.0f;
  } else {
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, m, n, k, 1.0f, xs, k, ws, k, 0.0f, y, pitch);
  }
  if (bias != nullptr) {
    for (int64_t r = 0; r < m; ++r)
      for (int64_t c = 0; c < n; ++c) y[r * pitch + c] += bias[c];
  }
  if (act != Activation::kNone) {
    for (int64_t i = 0; i < m * n; ++i) o[i] = cpu::ActivationValue(act, y[i]);
  }
}

// With dpre = dout * act'(pre_act):  dx = dpre W,  dW += dpre^T x,  db += column sums of dpre.
void CpuBackend::LinearBackward(TensorView dout, TensorView x, TensorView w, Activation act, TensorView pre_act,
                                TensorView dx, bool accumulate, TensorView dw, TensorView db) {
  float* g = cpu::F32(dout, "dout");
  const float* xs = cpu::F32(x, "x");
  const float* ws = cpu::F32(w, "w");
  float* dws = cpu::F32(dw, "dw");
  const int64_t m = x.rows(), k = x.cols(), n = w.rows();
  cpu::CheckMatrix(w, n, k, "w");
  cpu::CheckMatrix(dw, n, k, "dw");
  const int64_t pitch = RowPitch(dout, m, n, act == Activation::kNone, "dout");
  if (act != Activation::kNone) {
    const float* pre = cpu::F32(pre_act, "pre_act");
    cpu::CheckMatrix(pre_act, m, n, "pre_act");
    for (int64_t i = 0; i < m * n; ++i) g[i] *= cpu::ActivationDerivative(act, pre[i]);
  }
  if (!dx.empty()) {
    float* dxs = cpu::F32(dx, "dx");
    cpu::CheckMatrix(dx, m, k, "dx");
    if (n == 0) {
      if (!accumulate)
        for (int64_t i = 0; i < m * k; ++i) dxs[i] = 0.0f;
    } else if (m > 0 && k > 0) {
      cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, m, k, n, 1.0f, g, pitch, ws, k, accumulate ? 1.0f : 0.0f,
                  dxs, k);
    }
  }
  if (m > 0 && n > 0 && k > 0) {
    cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, n, k, m, 1.0f, g, pitch, xs, k, 1.0f, dws, k);
  }
  if (!db.empty()) {
    float* dbs = cpu::F32(db, "db");
    cpu::CheckNumel(db, n, "db");
    std::vector<double> sums(n, 0.0);
    for (int64_t r = 0; r < m; ++r)
      for (int64_t c = 0; c < n; ++c) sums[c] += g[r * pitch + c];
    for (int64_t c = 0; c < n; ++c) dbs[c] += static_cast<float>(sums[c]);
  }
}

// dx of LinearBackward, then times input_act'(pre) in place.
void CpuBackend::LinearBackwardToPreActivation(TensorView dout, TensorView x, TensorView w, Activation input_act,
                                               TensorView pre, TensorView dpre, TensorView dw, TensorView db) {
  LAMINA_CHECK(input_act != Activation::kNone, "LinearBackwardToPreActivation needs the input's activation");
  const int64_t m = x.rows(), k = x.cols();
  const float* pres = cpu::F32(pre, "pre");
  cpu::CheckMatrix(pre, m, k, "pre");
  cpu::CheckMatrix(dpre, m, k, "dpre");
  LinearBackward(dout, x, w, Activation::kNone, {}, dpre, false, dw, db);
  float* g = cpu::F32(dpre, "dpre");
  for (int64_t i = 0; i < m * k; ++i) g[i] *= cpu::ActivationDerivative(input_act, pres[i]);
}

}  // namespace lamina
