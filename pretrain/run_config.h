// The configuration of a pretraining run: one JSON object with the sections model, optimizer,
// schedule, data, batch, eval, checkpoint and run. A section may also be a string naming a JSON
// file (relative to the config file) that holds it, so configs can be split by concern:
//   {"model": "model/bert-base.json", "optimizer": {"name": "lamb"}, ...}
// `--set key=value` overrides any key ("optimizer.weight_decay=0", "model.norm=pre"). Every key
// is checked: an unknown key or a value of the wrong type is an error naming the key. The
// resolved config (every default filled in) is what a run directory records.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "data/masking.h"
#include "model/backend.h"
#include "model/config.h"
#include "model/optimizer.h"
#include "nlohmann/json.hpp"
#include "pretrain/schedule.h"

namespace lamina {

struct DataConfig {
  std::string train;   // dataset directory written by `lamina prepare` (train and val splits)
  std::string vocab;   // the vocab.txt it was prepared with
  MaskingConfig masking;
  int prefetch = 2;
};

struct BatchConfig {
  int64_t global_batch = 256;  // sequences per optimizer step, over all ranks
  int64_t micro_batch = 32;    // sequences per forward/backward on one rank

  // Micro-batches each of `ranks` ranks accumulates per step: global / (micro x ranks), an error
  // naming the keys when that is not a whole number.
  absl::StatusOr<int> Accumulation(int ranks) const;
};

struct EvalConfig {
  int64_t every = 0;        // steps between evaluations; 0 = only at the end
  int64_t batch_size = 64;
  int64_t max_batches = 0;  // 0 = the whole validation split
};

struct CheckpointConfig {
  int64_t every = 0;  // steps between checkpoints; 0 = only at the end
  int keep = 3;       // how many of the newest checkpoints to keep
  // A fresh run (no checkpoint of its own to resume) starts from the weights of this checkpoint,
  // or of the newest one of this run directory: BERT's phase 2 (seq 512) from phase 1 (seq 128).
  // The data position is fresh (the dataset may have another seq_len) and the schedule starts at
  // step 0. The model config must equal the checkpoint's (positions never trained in phase 1 keep
  // their initialisation, as they do in BERT, whose phase 1 also has 512 positions).
  std::string init_from;
  // With init_from: "keep" the optimizer's moments and step count (NVIDIA's BERT recipe) or "reset" them.
  std::string init_optimizer = "keep";
};

struct RunSection {
  int64_t steps = 1000;        // optimizer steps in total
  uint64_t seed = 1;           // initialisation, data order, masking and dropout
  std::string device = "auto"; // cpu | cuda | auto
  int64_t log_every = 10;      // steps between progress lines (metrics.jsonl gets every step)
  // Every N steps (from the first), a "layers" record in metrics.jsonl: each layer's gradient and
  // update norms per parameter group and its output's norm (model/layer_stats.h); 0 = off.
  int64_t log_layer_norms = 0;
  int max_bad_steps = 5;       // consecutive non-finite steps before the run stops
  double peak_tflops = 0;      // for MFU; 0 = known GPUs only
  double grad_bucket_mb = 25;  // gradient all-reduce bucket size
  bool grad_bf16 = false;      // all-reduce gradients in bf16
  bool grad_overlap = true;    // launch gradient buckets during the last backward pass
  int zero_stage = 0;          // 1: shard the optimizer state over the ranks (ZeRO-1)
  AttentionKernel attention = AttentionKernel::kAuto;  // the CUDA attention kernels: "auto" | "gemm" | "flash"
  bool gemm_autotune = false;  // BackendOptions::gemm_autotune

  BackendOptions backend_options() const {
    return BackendOptions{.attention = attention, .gemm_autotune = gemm_autotune};
  }
};

struct RunConfig {
  BertConfig model;
  OptimizerConfig optimizer;
  ScheduleConfig schedule;
  DataConfig data;
  BatchConfig batch;
  EvalConfig eval;
  CheckpointConfig checkpoint;
  RunSection run;

  nlohmann::json ToJson() const;
  // Parses a whole config object (sections already inlined).
  static absl::StatusOr<RunConfig> FromJson(const nlohmann::json& j);
};

// Reads `path`, inlines section files, applies `overrides` ("a.b=value"; the value is read as
// JSON when it parses, else as a string) and parses the result.
absl::StatusOr<RunConfig> LoadRunConfig(const std::string& path, const std::vector<std::string>& overrides);

// Applies one "a.b.c=value" override to a JSON object.
absl::Status ApplyOverride(const std::string& assignment, nlohmann::json* config);

}  // namespace lamina
