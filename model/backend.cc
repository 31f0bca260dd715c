#include "model/backend.h"

#include <algorithm>

#include "absl/strings/str_cat.h"
#include "core/status.h"

namespace lamina {

absl::StatusOr<std::unique_ptr<Backend>> MakeBackend(const std::string& device) {
  if (device == "cpu") return MakeCpuBackend();
  if (device == "cuda") return MakeCudaBackend();
  if (device == "auto") return CudaAvailable() ? MakeCudaBackend() : absl::StatusOr<std::unique_ptr<Backend>>(MakeCpuBackend());
  return absl::InvalidArgumentError(absl::StrCat("device: expected cpu, cuda or auto, got \"", device, "\""));
}

int64_t LambTensorCount(std::span<const ParamSegment> segments, const TensorView& norms) {
  int64_t tensors = 0;
  for (const ParamSegment& s : segments) {
    LAMINA_CHECK(s.tensor >= 0, "segment [", s.offset, ", +", s.size, ") has tensor index ", s.tensor);
    tensors = std::max<int64_t>(tensors, s.tensor + 1);
  }
  LAMINA_CHECK(norms.dtype == DType::kF32 && norms.numel() >= 2 * tensors, "LAMB norms must be f32 with at least ",
               2 * tensors, " elements (2 per tensor), got ", norms.ToString());
  return tensors;
}

}  // namespace lamina
