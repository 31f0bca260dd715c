// Argument checks shared by the CPU backend's ops. A failed check is a bug in the caller (a shape
// or dtype mismatch between internal calls), so it aborts through LAMINA_CHECK.
#pragma once

#include <cstdint>

#include "core/status.h"
#include "core/tensor.h"

namespace lamina::cpu {

// The data of a host f32 tensor.
inline float* F32(const TensorView& t, const char* what) {
  LAMINA_CHECK(t.device == Device::kCpu, what, " must be on the CPU, got ", t.ToString());
  LAMINA_CHECK(t.dtype == DType::kF32, what, " must be f32, got ", t.ToString());
  LAMINA_CHECK(t.data != nullptr || t.numel() == 0, what, " is empty");
  return t.as<float>();
}

// The data of a host i32 tensor.
inline const int32_t* I32(const TensorView& t, const char* what) {
  LAMINA_CHECK(t.device == Device::kCpu, what, " must be on the CPU, got ", t.ToString());
  LAMINA_CHECK(t.dtype == DType::kI32, what, " must be i32, got ", t.ToString());
  LAMINA_CHECK(t.data != nullptr || t.numel() == 0, what, " is empty");
  return t.as<int32_t>();
}

// `t` read as a matrix (all leading dimensions as rows) is [rows, cols].
inline void CheckMatrix(const TensorView& t, int64_t rows, int64_t cols, const char* what) {
  LAMINA_CHECK(t.rows() == rows && t.cols() == cols, what, " must be [", rows, ", ", cols, "], got ", t.ToString());
}

// `t` has `n` elements, whatever its shape.
inline void CheckNumel(const TensorView& t, int64_t n, const char* what) {
  LAMINA_CHECK(t.numel() == n, what, " must have ", n, " elements, got ", t.ToString());
}

}  // namespace lamina::cpu
