// `lamina pretrain`: the MLM training loop over a prepared dataset, on one process or as one rank
// of a data-parallel job.
//
// One optimizer step: the loader hands this rank `accumulation` micro-batches of its slice of the
// global batch; each is forward/backward-ed, accumulating gradients; the loss of every token is
// scaled by 1 / (masked tokens in the whole global batch), so the gradient is that of the global
// batch's mean loss however it is split; the ranks average their gradients; the optimizer
// applies the update at the schedule's learning rate. A non-finite loss or gradient skips the
// update (counted and logged); run.max_bad_steps in a row stop the run with an error, leaving the
// last good checkpoint. SIGTERM/SIGINT finish the current step, write a checkpoint and exit 0.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "data/loader.h"
#include "dist/communicator.h"
#include "model/backend.h"
#include "model/bert.h"
#include "model/optimizer.h"
#include "pretrain/run_config.h"

namespace lamina {

struct TrainerOptions {
  std::string run_dir;           // checkpoints/, metrics.jsonl and config.json go here
  std::string resume = "auto";   // "auto": the newest checkpoint in run_dir if any; "none"; or a checkpoint dir
  // Config keys (or sections) whose change from the checkpoint's config a resume accepts even
  // though they change the trajectory (pretrain/config_changes.h).
  std::vector<std::string> allow_config_change;
};

// Makes SIGTERM and SIGINT ask running trainers to checkpoint and stop after the current step.
void InstallStopSignalHandlers();

class Trainer {
 public:
  // comm may be null (one process, no MPI); when given, gradients are averaged through it even in
  // a world of one. backend: the one to train on (the NCCL communicator is tied to its stream);
  // null makes the one run.device names.
  static absl::StatusOr<std::unique_ptr<Trainer>> Create(const RunConfig& config, const TrainerOptions& options,
                                                         Communicator* comm, std::unique_ptr<Backend> backend = nullptr);
  ~Trainer();

  // Trains until run.steps or a stop signal.
  absl::Status Run();

  int64_t step() const { return step_; }
  BertModel& model() { return *model_; }
  const Optimizer& optimizer() const { return *optimizer_; }

 private:
  Trainer() = default;
  struct Impl;

  absl::Status TrainStep();
  absl::Status EvaluateAndLog();
  absl::Status SaveCheckpointNow();
  bool StopRequested();

  RunConfig config_;
  TrainerOptions options_;
  Communicator* comm_ = nullptr;
  int rank_ = 0, world_ = 1, accumulation_ = 1;
  std::unique_ptr<Backend> backend_;
  std::unique_ptr<BertModel> model_;
  std::unique_ptr<Optimizer> optimizer_;
  std::unique_ptr<Impl> impl_;
  int64_t step_ = 0;
};

}  // namespace lamina
