// Built instead of model/cuda/ when lamina is configured without CUDA.
#include "model/backend.h"

namespace lamina {

absl::StatusOr<std::unique_ptr<Backend>> MakeCudaBackend(const BackendOptions&) {
  return absl::FailedPreconditionError(
      "this lamina was built without CUDA; rebuild with -DLAMINA_CUDA=ON on a machine with the CUDA toolkit");
}

}  // namespace lamina
