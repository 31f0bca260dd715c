// Finetuning a checkpoint end to end (what `lamina finetune` runs) and the sweep over every
// checkpoint of a pretraining run (`lamina finetune-sweep`), for accuracy against pretraining step.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "model/backend.h"
#include "finetune/finetune.h"
#include "nlohmann/json.hpp"

namespace lamina {

struct FinetuneJob {
  FinetuneConfig config;
  std::string checkpoint;     // a checkpoint directory, or a run directory (its newest)
  std::string glue_dir;       // holds MRPC/ and RTE/
  std::string device = "cpu"; // cpu, cuda or auto
  BackendOptions backend;     // the CUDA attention kernels
  std::string vocab;          // empty = the checkpoint's run_config.data.vocab
  std::string out_dir;        // results.json and the test predictions go here
};

// Loads the tokenizer and the task's data, runs every learning rate x seed from the checkpoint,
// writes the outputs (WriteFinetuneOutputs) and returns the report.
absl::StatusOr<FinetuneReport> RunFinetuneJob(const FinetuneJob& job, const FinetuneLog& log);

struct RunCheckpoint {
  int64_t step = 0;
  std::string dir;
};
// RUN_DIR/checkpoints/step_<digits> directories holding model.safetensors and state.json, by step.
absl::StatusOr<std::vector<RunCheckpoint>> ListRunCheckpoints(const std::string& run_dir);

// Finetunes every checkpoint of `run_dir` with `job` (its checkpoint is ignored) into
// job.out_dir/step_<8 digits>/, skipping checkpoints whose results.json was written with the same
// finetuning config (so an interrupted sweep resumes), then writes job.out_dir/sweep.json and
// sweep.tsv: per pretraining step, the best learning rate and the statistics over seeds of its
// final-epoch dev metrics. Returns the sweep.json object.
absl::StatusOr<nlohmann::json> RunFinetuneSweep(const std::string& run_dir, const FinetuneJob& job, const FinetuneLog& log);

}  // namespace lamina
