#include "model/cuda/cuda_check.h"

#include "absl/strings/str_cat.h"
#include "core/status.h"
#include "model/cuda/common_host.h"

namespace lamina::cuda {

void CudaFailed(const char* expr, const char* error, const char* file, int line) {
  Fatal(file, line, absl::StrCat(expr, " failed: ", error));
}

void UnsupportedDType(DType dtype, const char* where) {
  Fatal(__FILE__, __LINE__, absl::StrCat(where, ": element type ", DTypeName(dtype), " is not supported"));
}

void LauncherCheckFailed(const char* cond, const char* file, int line) {
  Fatal(file, line, absl::StrCat("check failed: ", cond));
}

}  // namespace lamina::cuda
