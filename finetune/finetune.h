// Finetuning a pretrained encoder on a GLUE sentence-pair task (MRPC, RTE), as BERT does it:
// the pooler + dropout + linear classification head on [CLS], AdamW (decay 0.01, none on biases
// and LayerNorm), the learning rate warmed up linearly over the first 10% of the updates and then
// decayed linearly to 0, dev evaluation after every epoch. Each (learning rate, seed) pair is one
// run from the same pretrained weights; the seed draws the classification head's initialisation,
// the per-epoch shuffle and the dropout masks, so a run is reproducible bit for bit on a backend.
//
// Batches are padded to their longest pair (at most max_seq): a pair longer than max_seq is cut
// by the same longest-first rule as with fixed-length padding, and padded keys get attention
// probability exactly 0, so the shorter padding changes nothing but the time taken.
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "data/glue.h"
#include "data/wordpiece.h"
#include "finetune/metrics.h"
#include "model/optimizer.h"
#include "nlohmann/json.hpp"
#include "checkpoint/load_model.h"

namespace lamina {

struct FinetuneConfig {
  GlueTask task = GlueTask::kMrpc;
  std::vector<double> learning_rates = {2e-5, 3e-5, 5e-5};
  int64_t epochs = 3;
  int64_t batch = 32;
  int64_t max_seq = 128;
  int64_t seeds = 1;         // runs per learning rate, with seeds first_seed, first_seed + 1, ...
  uint64_t first_seed = 1;
  double warmup_ratio = 0.1;  // fraction of all updates spent warming up
  int64_t eval_batch = 64;
  OptimizerConfig optimizer;  // AdamW, weight decay 0.01, clip 1.0 (the defaults)
  bool predict_test = true;   // predict the test split after the last epoch of every run

  absl::Status Validate() const;
  nlohmann::json ToJson() const;
};

// The tokenized splits. test may be empty (no predictions then).
struct TaskData {
  GlueTask task = GlueTask::kMrpc;
  std::vector<TokenizedPair> train, dev, test;
};

// Reads DIR/<TASK>/{train,dev,test}.tsv and tokenizes them; train and dev must be labelled, and a
// missing test.tsv is allowed (no predictions are written then).
absl::StatusOr<TaskData> LoadTaskData(GlueTask task, const std::string& glue_dir, const WordPieceTokenizer& tokenizer);

// A fresh model for one run: the pretrained encoder with a classification head (num_labels of
// the task) initialised from `seed`.
using ModelFactory = std::function<absl::StatusOr<LoadedModel>(uint64_t seed)>;

// The learning rate of update `k` (0-based) of `total`: peak * (k + 1) / warmup during the
// warm-up, then peak * (total - k) / (total - warmup), so that no update has rate 0.
double WarmupLinearDecay(double peak, int64_t k, int64_t total, int64_t warmup);
// ceil(ratio * total), as transformers' get_linear_schedule_with_warmup is usually given.
int64_t WarmupSteps(double ratio, int64_t total);

// A permutation of [0, n) for one epoch of one seed (Fisher-Yates on SplitMix64, so the same on
// every platform and standard library).
std::vector<int64_t> EpochOrder(int64_t n, uint64_t seed, int64_t epoch);

struct EpochResult {
  int64_t epoch = 0;        // 1-based
  double train_loss = 0;    // mean over the epoch's examples
  double dev_loss = 0;
  GlueMetrics dev;
  double seconds = 0;       // training and evaluation of this epoch
};

struct RunResult {
  double lr = 0;
  uint64_t seed = 0;
  int64_t steps = 0;
  double seconds = 0;
  std::vector<EpochResult> epochs;
  std::vector<int32_t> test_predictions;  // label ids, in the order of TaskData::test
  const GlueMetrics& final_dev() const { return epochs.back().dev; }
  nlohmann::json ToJson(GlueTask task) const;
};

// Progress lines (one per epoch); may be empty.
using FinetuneLog = std::function<void(const std::string&)>;

// One run at learning rate `lr` with `seed`.
absl::StatusOr<RunResult> FinetuneRun(const FinetuneConfig& config, double lr, uint64_t seed, const ModelFactory& factory,
                                      const WordPieceTokenizer& tokenizer, const TaskData& data, const FinetuneLog& log);

// The statistics over seeds of one learning rate: per metric, at the final epoch and per epoch.
struct LrSummary {
  double lr = 0;
  std::map<std::string, SeedStats> final_stats;
  std::vector<std::map<std::string, SeedStats>> epoch_stats;
};

struct FinetuneReport {
  FinetuneConfig config;
  std::vector<RunResult> runs;       // learning rate major, then seed
  std::vector<LrSummary> by_lr;      // in config.learning_rates order
  size_t best_lr = 0;                // index into by_lr: the highest median final-epoch dev score
  size_t best_run = 0;               // index into runs: the best seed's run at the best learning rate
  nlohmann::json ToJson() const;
  // The table a person reads: one row per learning rate, mean +- std, median and max per metric.
  std::string Table() const;
};

// The statistics and the best choices for finished runs (config.learning_rates x config.seeds).
FinetuneReport SummarizeRuns(const FinetuneConfig& config, std::vector<RunResult> runs);

// Every learning rate x seed, then SummarizeRuns.
absl::StatusOr<FinetuneReport> FinetuneAll(const FinetuneConfig& config, const ModelFactory& factory,
                                           const WordPieceTokenizer& tokenizer, const TaskData& data,
                                           const FinetuneLog& log);

// Writes OUT/results.json (the report plus `context`, e.g. the checkpoint) and, when the best run
// has test predictions, OUT/MRPC.tsv or OUT/RTE.tsv in the GLUE submission format
// ("index\tprediction", labels by name: MRPC 0/1, RTE entailment/not_entailment).
absl::Status WriteFinetuneOutputs(const FinetuneReport& report, const TaskData& data, const std::string& out_dir,
                                  const nlohmann::json& context);

}  // namespace lamina
