// Averaging the flat gradient buffer over the ranks, once per optimizer step after the
// micro-batches have been accumulated.
//
// The buffer is cut into buckets of about `bucket_mb` MiB (of the data sent), each its own
// all-reduce. Start() launches all of them without waiting and Wait() finishes them, so the
// caller can overlap the transfer with other work in between (and call Test() to let host MPI
// progress). In bf16 mode the gradients travel as bf16: converted from f32, summed (each
// addition rounds to bf16, see Communicator::StartAllReduce), divided by the world size and
// converted back; it halves the bytes at the cost of bf16 precision in the average.
//
// Usage in a training step:
//   ASSIGN_OR_RETURN(auto sync, GradientSync::Create(comm, grads, {.bucket_mb = 25}));  // once
//   ... forward/backward of every micro-batch (backward accumulates into grads) ...
//   backend->Synchronize();              // device gradients complete before MPI reads them
//   RETURN_IF_ERROR(sync->Start());
//   RETURN_IF_ERROR(sync->Wait());       // grads now hold the average over all ranks
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <vector>

#include "absl/status/statusor.h"
#include "core/buffer.h"
#include "core/tensor.h"
#include "dist/communicator.h"

namespace lamina {

struct GradSyncOptions {
  double bucket_mb = 25;  // MiB of data per all-reduce (bf16 buckets hold twice the elements)
  bool bf16 = false;      // reduce in bf16 instead of f32
};

// dst = src converted to dst.dtype, on the tensors' device, complete when it returns.
using ConvertFn = std::function<void(TensorView src, TensorView dst)>;

class GradientSync {
 public:
  // grads: the flat f32 gradient buffer, on the host or a device; it must outlive this object.
  // bf16 mode on a device needs `convert` (e.g. Backend::Convert followed by Synchronize); on
  // the host it defaults to core/bf16.h rounding.
  static absl::StatusOr<std::unique_ptr<GradientSync>> Create(Communicator* comm, TensorView grads,
                                                              GradSyncOptions options, ConvertFn convert = nullptr);

  // Launches the average all-reduce of every bucket.
  absl::Status Start();
  // Lets the transfers progress without blocking; true when all are complete.
  bool Test();
  // Waits for every bucket; afterwards grads hold the average over ranks.
  absl::Status Wait();
  // Start() then Wait().
  absl::Status Run();

  // [begin, end) element ranges of the buckets, in order.
  const std::vector<std::pair<int64_t, int64_t>>& buckets() const { return buckets_; }
  // Bytes each rank contributes per step.
  size_t bytes_per_step() const;

 private:
  GradientSync() = default;

  Communicator* comm_ = nullptr;
  TensorView grads_;
  GradSyncOptions options_;
  ConvertFn convert_;
  Buffer wire_;      // the bf16 copy in bf16 mode
  TensorView wire_view_;
  std::vector<std::pair<int64_t, int64_t>> buckets_;
  std::vector<std::unique_ptr<Work>> pending_;
};

}  // namespace lamina
