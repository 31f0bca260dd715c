// The NCCL communicator in a build without CUDA (dist/CMakeLists.txt compiles this file instead
// of nccl_communicator.cc): it says so.
#include "dist/nccl_communicator.h"

namespace lamina {

absl::Status NcclAvailable() { return absl::UnavailableError("this build has no CUDA/NCCL"); }

absl::StatusOr<std::unique_ptr<Communicator>> MakeNcclCommunicator(std::unique_ptr<MpiCommunicator>*, void*) {
  return NcclAvailable();
}

}  // namespace lamina
