// ZeRO stage 1 (Rajbhandari et al. 2020): each rank keeps the fp32 master weights and the Adam
// moments of its shard of the parameters only, and updates only that shard.
//
// One step: GradientSync in sharded mode has reduce-scattered the gradients, so this rank holds
// the averaged gradients of its pieces (shard_grads). The global gradient norm for clipping is
// the sum of every rank's partial sum of squares. AdamW updates the shard; LAMB first measures
// ||p|| and ||r|| per tensor on the shard, sums those partial norms over the ranks (a tensor may
// be split between ranks and buckets), then updates. Finally every rank all-gathers the updated
// weights in the compute dtype (bf16 on the GPU) into the model's compute copy, bucket by bucket,
// and the owner of the tail broadcasts it.
//
// Memory per rank for P parameters over N ranks, f32 master + moments: 12P/N bytes (plus the f32
// gradient shard, 4P/N, and the bf16 shard to gather, 2P/N) instead of 8P for the moments of the
// replicated optimizer. The model's own f32 parameter buffer is not the master any more: it is
// brought up to date by GatherState(), which checkpoints call.
#pragma once

#include <memory>
#include <vector>

#include "absl/status/statusor.h"
#include "dist/communicator.h"
#include "dist/grad_sync.h"
#include "model/bert.h"
#include "model/optimizer.h"

namespace lamina {

class ShardedOptimizer final : public Optimizer {
 public:
  // sync: a sharded GradientSync over model->grads(). The model's parameters must already be the
  // same on every rank (broadcast); the master shard is taken from them. comm, model and sync
  // must outlive the optimizer.
  static absl::StatusOr<std::unique_ptr<Optimizer>> Create(const OptimizerConfig& config, BertModel* model,
                                                           Communicator* comm, GradientSync* sync);

  // Collective. Expects sync->Wait() to have completed.
  absl::StatusOr<StepResult> Step(float lr) override;
  // Collective: gathers the master weights into model->params() and the moments to the host of
  // every rank.
  absl::Status GatherState() override;
  absl::StatusOr<OptimizerState> StateToHost() const override;
  // Takes this rank's pieces of the state, and the master shard from model->params().
  absl::Status LoadState(const OptimizerState& state) override;
  size_t state_bytes() const override;

 private:
  ShardedOptimizer(const OptimizerConfig& config, BertModel* model, Communicator* comm, GradientSync* sync)
      : Optimizer(config, model), comm_(comm), sync_(sync) {}
  absl::Status Init();
  // Every rank's pieces of `shard` (this rank's, [shard_size]) into `full` (the flat layout).
  absl::Status AllGather(TensorView shard, TensorView full);
  // The collectives must not read device memory before the backend's work is done (MPI staging).
  void FinishDeviceWork();

  Communicator* comm_;
  GradientSync* sync_;
  std::vector<ParamSegment> segments_;  // in shard coordinates
  Buffer master_buf_, m_buf_, v_buf_, out_buf_, norms_buf_;
  TensorView master_, m_, v_, out_, norms_;  // out_: the updated shard in the compute dtype (empty when f32)
  OptimizerState gathered_;  // from the last GatherState(); emptied by Step() and LoadState()
};

}  // namespace lamina
