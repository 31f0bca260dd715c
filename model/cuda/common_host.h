// Host-side helpers of the kernels' launchers (common.cuh) and the backend: the failure handlers
// they call, and the alignment test of the 16-byte paths.
#pragma once

#include <cstdint>
#include <initializer_list>

#include "core/dtype.h"

namespace lamina::cuda {

// Whether the wide paths may be used: 16-byte aligned pointers (null ones pass: 0 is aligned).
inline bool Aligned16(const void* p) { return reinterpret_cast<uintptr_t>(p) % 16 == 0; }
inline bool Aligned16(std::initializer_list<const void*> pointers) {
  for (const void* p : pointers)
    if (!Aligned16(p)) return false;
  return true;
}

[[noreturn]] void UnsupportedDType(DType dtype, const char* where);
[[noreturn]] void LauncherCheckFailed(const char* cond, const char* file, int line);

}  // namespace lamina::cuda
