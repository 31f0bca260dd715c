// Host-side declarations of the failure handlers that common.cuh's kernels' launchers call.
#pragma once

#include "core/dtype.h"

namespace lamina::cuda {

[[noreturn]] void UnsupportedDType(DType dtype, const char* where);
[[noreturn]] void LauncherCheckFailed(const char* cond, const char* file, int line);

}  // namespace lamina::cuda
