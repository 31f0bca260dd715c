// Averaging the flat gradient buffer over the ranks once per optimizer step, bucket by bucket,
// overlapped with the backward pass of the last micro-batch.
//
// The buffer is cut into buckets of about `bucket_mb` MiB of data sent (dist/shard_layout.h).
// BertModel::Backward reports as it goes which gradients are final (GradReadyFn), and each
// bucket's collective is launched as soon as all of its gradients are: the heads' and last
// layers' buckets travel while the first layers are still being differentiated. Wait() then
// finishes them before the optimizer runs.
//
// Replicated mode all-reduces every bucket; afterwards grads hold the average. Sharded mode
// (ZeRO stage 1) reduce-scatters them instead: afterwards shard_grads() holds the average of this
// rank's pieces only, which is all its share of the optimizer needs (dist/sharded_optimizer.h).
//
// In bf16 mode the gradients travel as bf16: converted from f32 per bucket, summed (each addition
// rounds to bf16, see Communicator::StartAllReduce), divided by the world size and converted back;
// it halves the bytes at the cost of bf16 precision in the average.
//
// Device gradients: with a communicator that orders its collectives after the compute stream
// (NCCL), a bucket is launched without waiting for the device; otherwise (MPI, staging through the
// host) the backend is synchronised first, once per group of buckets launched together.
//
// Usage in a training step:
//   ASSIGN_OR_RETURN(auto sync, GradientSync::Create(comm, backend, grads, {.bucket_mb = 25}));  // once
//   ... forward/backward of every micro-batch but the last ...
//   model->Backward([&](int64_t from) { sync->OnGradientsReady(from); });   // the last one
//   RETURN_IF_ERROR(sync->Wait());
#pragma once

#include <cstdint>
#include <memory>
#include <vector>

#include "absl/status/statusor.h"
#include "core/buffer.h"
#include "core/tensor.h"
#include "dist/communicator.h"
#include "dist/shard_layout.h"
#include "model/backend.h"

namespace lamina {

struct GradSyncOptions {
  double bucket_mb = 25;  // MiB of data per collective (bf16 buckets hold twice the elements)
  bool bf16 = false;      // reduce in bf16 instead of f32
  bool shard = false;     // reduce-scatter for ZeRO-1 instead of all-reduce
};

class GradientSync {
 public:
  // grads: the model's flat f32 gradient buffer on backend's device; both must outlive this.
  static absl::StatusOr<std::unique_ptr<GradientSync>> Create(Communicator* comm, Backend* backend, TensorView grads,
                                                              GradSyncOptions options);

  // Every gradient at offsets >= from is final (the GradReadyFn of BertModel::Backward):
  // launches the buckets that lie entirely there, last bucket first, and lets launched ones
  // progress. An error is kept and returned by Wait().
  void OnGradientsReady(int64_t from);
  // Launches whatever is not launched yet (no overlap).
  void Start() { OnGradientsReady(0); }
  // Lets the transfers progress without blocking; true when all launched ones are complete.
  bool Test();
  // Launches what is left, waits for every bucket, converts back from bf16. Afterwards grads
  // (replicated) or shard_grads() (sharded) hold the average over ranks.
  absl::Status Wait();
  // Start() then Wait().
  absl::Status Run();

  const ShardLayout& layout() const { return layout_; }
  // Sharded: this rank's averaged gradients, f32 [layout().shard_size()], after Wait().
  TensorView shard_grads() const { return shard_grads_; }
  // Bytes each rank contributes per step.
  size_t bytes_per_step() const { return wire_.bytes(); }
  // Device (or host) bytes this object allocated (the bf16 copy, the shard buffers).
  size_t allocated_bytes() const { return wire_buf_.bytes() + shard_grads_buf_.bytes() + shard_wire_buf_.bytes(); }

 private:
  GradientSync() = default;
  absl::Status Launch(const GradBucket& bucket);
  TensorView WireRange(int64_t begin, int64_t end) const;

  Communicator* comm_ = nullptr;
  Backend* backend_ = nullptr;
  TensorView grads_;
  GradSyncOptions options_;
  ShardLayout layout_;
  Buffer wire_buf_;         // bf16 mode: the bf16 copy of grads
  TensorView wire_;         // what travels: grads itself, or its bf16 copy
  Buffer shard_grads_buf_;  // sharded: f32 [shard_size]
  TensorView shard_grads_;
  Buffer shard_wire_buf_;   // sharded bf16: what the reduce-scatter writes before conversion
  TensorView shard_wire_;
  size_t next_ = 0;         // buckets_[next_ - 1] is the next to launch (counting down); reset by Wait()
  std::vector<std::unique_ptr<Work>> pending_;
  absl::Status error_;
};

}  // namespace lamina
