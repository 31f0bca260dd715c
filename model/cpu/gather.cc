// Row gathers (MLM head on the masked positions, pooler on [CLS]) and their scatter-add backward.
#include <cstring>

#include "model/cpu/cpu_backend.h"
#include "model/cpu/cpu_checks.h"

namespace lamina {
namespace {

void CheckIndex(const int32_t* idx, int64_t n, int64_t rows) {
  for (int64_t i = 0; i < n; ++i) {
    LAMINA_CHECK(idx[i] >= 0 && idx[i] < rows, "row index ", idx[i], " at ", i, " outside [0, ", rows, ")");
  }
}

}  // namespace

void CpuBackend::GatherRows(TensorView x, TensorView index, TensorView out) {
  const float* xs = cpu::F32(x, "x");
  const int32_t* idx = cpu::I32(index, "index");
  float* o = cpu::F32(out, "out");
  const int64_t n = index.numel(), cols = x.cols();
  cpu::CheckMatrix(out, n, cols, "out");
  CheckIndex(idx, n, x.rows());
  for (int64_t i = 0; i < n; ++i) std::memcpy(o + i * cols, xs + idx[i] * cols, cols * sizeof(float));
}

void CpuBackend::ScatterAddRows(TensorView dout, TensorView index, TensorView dx) {
  const float* g = cpu::F32(dout, "dout");
  const int32_t* idx = cpu::I32(index, "index");
  float* d = cpu::F32(dx, "dx");
  const int64_t n = index.numel(), cols = dx.cols();
  cpu::CheckMatrix(dout, n, cols, "dout");
  CheckIndex(idx, n, dx.rows());
  for (int64_t i = 0; i < n; ++i) {
    const float* grow = g + i * cols;
    float* drow = d + idx[i] * cols;
    for (int64_t c = 0; c < cols; ++c) drow[c] += grow[c];
  }
}

}  // namespace lamina
