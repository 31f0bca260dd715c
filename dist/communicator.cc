#include "dist/communicator.h"

#include <cstdlib>
#include <limits>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "core/status.h"

namespace lamina {

const char* ReduceOpName(ReduceOp op) { return op == ReduceOp::kSum ? "sum" : "avg"; }

absl::Status Communicator::AllReduce(CommBuffer buffer, ReduceOp op) {
  ASSIGN_OR_RETURN(std::unique_ptr<Work> work, StartAllReduce(buffer, op));
  return work->Wait();
}

absl::Status Communicator::Broadcast(CommBuffer buffer, int root) {
  ASSIGN_OR_RETURN(std::unique_ptr<Work> work, StartBroadcast(buffer, root));
  return work->Wait();
}

absl::Status Communicator::AllGather(CommBuffer send, CommBuffer recv) {
  ASSIGN_OR_RETURN(std::unique_ptr<Work> work, StartAllGather(send, recv));
  return work->Wait();
}

absl::Status Communicator::ReduceScatter(CommBuffer send, CommBuffer recv, ReduceOp op) {
  ASSIGN_OR_RETURN(std::unique_ptr<Work> work, StartReduceScatter(send, recv, op));
  return work->Wait();
}

absl::Status Communicator::Barrier() {
  ASSIGN_OR_RETURN(std::unique_ptr<Work> work, StartBarrier());
  return work->Wait();
}

absl::Status Communicator::BroadcastString(std::string* text, int root) {
  if (text->size() > static_cast<size_t>(std::numeric_limits<int32_t>::max())) {
    return absl::InvalidArgumentError(absl::StrCat("cannot broadcast a string of ", text->size(), " bytes"));
  }
  int32_t length = static_cast<int32_t>(text->size());
  RETURN_IF_ERROR(Broadcast(CommBuffer{&length, 1, DType::kI32, Device::kCpu}, root));
  // The collectives move whole elements; the text travels as 16-bit units with a padding byte
  // when its length is odd.
  text->resize(static_cast<size_t>(length) + (length % 2));
  RETURN_IF_ERROR(Broadcast(CommBuffer{text->data(), (length + 1) / 2, DType::kU16, Device::kCpu}, root));
  text->resize(static_cast<size_t>(length));
  return absl::OkStatus();
}

absl::StatusOr<double> CollectiveTimeoutFromEnv() {
  const char* value = std::getenv("LAMINA_COLLECTIVE_TIMEOUT_S");
  if (value == nullptr || *value == '\0') return 600.0;
  double seconds = 0;
  if (!absl::SimpleAtod(value, &seconds) || !(seconds > 0)) {
    return absl::InvalidArgumentError(
        absl::StrCat("LAMINA_COLLECTIVE_TIMEOUT_S=", value, ": expected a positive number of seconds"));
  }
  return seconds;
}

}  // namespace lamina
