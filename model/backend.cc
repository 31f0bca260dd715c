#include "model/backend.h"

#include "absl/strings/str_cat.h"

namespace lamina {

absl::StatusOr<std::unique_ptr<Backend>> MakeBackend(const std::string& device) {
  if (device == "cpu") return MakeCpuBackend();
  if (device == "cuda") return MakeCudaBackend();
  if (device == "auto") return CudaAvailable() ? MakeCudaBackend() : absl::StatusOr<std::unique_ptr<Backend>>(MakeCpuBackend());
  return absl::InvalidArgumentError(absl::StrCat("device: expected cpu, cuda or auto, got \"", device, "\""));
}

}  // namespace lamina
