// Softmax cross-entropy and argmax over the rows of a logits matrix.
#include <cmath>

#include "model/cpu/cpu_backend.h"
#include "model/cpu/cpu_checks.h"

namespace lamina {

// loss = logsumexp(row) - row[target], with the row maximum subtracted before exponentiating.
// The loss of a row is computed before its gradient is written, so dlogits may alias logits.
void CpuBackend::CrossEntropy(TensorView logits, int64_t classes, TensorView targets, float grad_scale,
                              TensorView losses, TensorView dlogits) {
  const float* z = cpu::F32(logits, "logits");
  const int32_t* tgt = cpu::I32(targets, "targets");
  float* loss = cpu::F32(losses, "losses");
  const int64_t rows = logits.rows(), vocab = classes;
  const int64_t pitch = RowPitch(logits, rows, vocab, true, "logits");
  cpu::CheckNumel(targets, rows, "targets");
  cpu::CheckNumel(losses, rows, "losses");
  float* dz = nullptr;
  if (!dlogits.empty()) {
    dz = cpu::F32(dlogits, "dlogits");
    cpu::CheckMatrix(dlogits, rows, pitch, "dlogits");
  }
  for (int64_t r = 0; r < rows; ++r) {
    const float* zr = z + r * pitch;
    const int32_t target = tgt[r];
    LAMINA_CHECK(target == -1 || (target >= 0 && target < vocab), "target ", target, " of row ", r, " outside [0, ",
                 vocab, ") and not -1");
    if (target == -1) {
      loss[r] = 0.0f;
      if (dz != nullptr)
        for (int64_t c = 0; c < vocab; ++c) dz[r * pitch + c] = 0.0f;
      continue;
    }
    float max = -INFINITY;
    for (int64_t c = 0; c < vocab; ++c) max = std::fmax(max, zr[c]);
    double sum = 0;
    for (int64_t c = 0; c < vocab; ++c) sum += std::exp(zr[c] - max);
    const float log_sum = static_cast<float>(std::log(sum));
    loss[r] = log_sum - (zr[target] - max);
    if (dz != nullptr) {
      float* dr = dz + r * pitch;
      for (int64_t c = 0; c < vocab; ++c) {
        const float p = std::exp(zr[c] - max - log_sum);
        dr[c] = (c == target ? p - 1.0f : p) * grad_scale;
      }
    }
  }
}

// The index of the first maximum of each row.
void CpuBackend::ArgMax(TensorView logits, int64_t classes, TensorView out) {
  const float* z = cpu::F32(logits, "logits");
  LAMINA_CHECK(out.device == Device::kCpu && out.dtype == DType::kI32, "ArgMax out ", out.ToString());
  int32_t* o = out.as<int32_t>();
  const int64_t rows = logits.rows(), vocab = classes;
  const int64_t pitch = RowPitch(logits, rows, vocab, true, "logits");
  cpu::CheckNumel(out, rows, "out");
  LAMINA_CHECK(vocab > 0 || rows == 0, "ArgMax of ", logits.ToString());
  for (int64_t r = 0; r < rows; ++r) {
    const float* zr = z + r * pitch;
    int64_t best = 0;
    for (int64_t c = 1; c < vocab; ++c)
      if (zr[c] > zr[best]) best = c;
    o[r] = static_cast<int32_t>(best);
  }
}

}  // namespace lamina
