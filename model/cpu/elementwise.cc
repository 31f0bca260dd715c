// Elementwise activations, residual add and inverted dropout.
#include <cmath>
#include <cstring>

#include "model/cpu/cpu_backend.h"
#include "model/cpu/cpu_checks.h"
#include "model/cpu/dropout_mask.h"
#include "model/cpu/gelu.h"

namespace lamina {

void CpuBackend::Gelu(TensorView x, TensorView out) {
  const float* xs = cpu::F32(x, "x");
  float* o = cpu::F32(out, "out");
  cpu::CheckNumel(out, x.numel(), "out");
  for (int64_t i = 0; i < x.numel(); ++i) o[i] = cpu::GeluValue(xs[i]);
}

void CpuBackend::GeluBackward(TensorView dout, TensorView x, TensorView dx) {
  const float* g = cpu::F32(dout, "dout");
  const float* xs = cpu::F32(x, "x");
  float* d = cpu::F32(dx, "dx");
  cpu::CheckNumel(dout, x.numel(), "dout");
  cpu::CheckNumel(dx, x.numel(), "dx");
  for (int64_t i = 0; i < x.numel(); ++i) d[i] = g[i] * cpu::GeluDerivative(xs[i]);
}

void CpuBackend::Tanh(TensorView x, TensorView out) {
  const float* xs = cpu::F32(x, "x");
  float* o = cpu::F32(out, "out");
  cpu::CheckNumel(out, x.numel(), "out");
  for (int64_t i = 0; i < x.numel(); ++i) o[i] = std::tanh(xs[i]);
}

// tanh' = 1 - tanh^2, from the saved forward output.
void CpuBackend::TanhBackward(TensorView dout, TensorView out, TensorView dx) {
  const float* g = cpu::F32(dout, "dout");
  const float* y = cpu::F32(out, "out");
  float* d = cpu::F32(dx, "dx");
  cpu::CheckNumel(dout, out.numel(), "dout");
  cpu::CheckNumel(dx, out.numel(), "dx");
  for (int64_t i = 0; i < out.numel(); ++i) d[i] = g[i] * (1.0f - y[i] * y[i]);
}

// Element i is kept when DropoutKeep(rng, i, p); kept values are scaled by 1 / (1 - p) so the
// expectation is unchanged. The backward applies the same mask and scale to the gradient.
void CpuBackend::Dropout(TensorView x, float p, RngContext rng, TensorView out) {
  const float* xs = cpu::F32(x, "x");
  float* o = cpu::F32(out, "out");
  cpu::CheckNumel(out, x.numel(), "out");
  LAMINA_CHECK(p >= 0.0f && p <= 1.0f, "dropout probability ", p);
  const int64_t n = x.numel();
  if (p == 0.0f) {
    if (n > 0 && o != xs) std::memmove(o, xs, x.bytes());
    return;
  }
  cpu::DropoutMask mask(rng, p);
  for (int64_t i = 0; i < n; ++i) o[i] = mask.Apply(static_cast<uint64_t>(i), xs[i]);
}

void CpuBackend::DropoutBackward(TensorView dout, float p, RngContext rng, TensorView dx) { Dropout(dout, p, rng, dx); }

void CpuBackend::AddDropout(TensorView a, TensorView b, float p, RngContext rng, TensorView out) {
  const float* as = cpu::F32(a, "a");
  const float* bs = cpu::F32(b, "b");
  float* o = cpu::F32(out, "out");
  cpu::CheckNumel(b, a.numel(), "b");
  cpu::CheckNumel(out, a.numel(), "out");
  LAMINA_CHECK(p >= 0.0f && p < 1.0f, "dropout probability ", p);
  cpu::DropoutMask mask(rng, p);
  for (int64_t i = 0; i < a.numel(); ++i) o[i] = as[i] + mask.Apply(static_cast<uint64_t>(i), bs[i]);
}

}  // namespace lamina
