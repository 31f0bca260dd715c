// Gradient norms at initialisation, per layer and parameter group, for several depths of one
// config: the measurement behind Xiong et al. 2020's Section 3 (in Post-LN the FFN weights'
// gradient grows with the layer index and the last layer's does not depend on the depth L; in
// Pre-LN it is flat over layers and shrinks like 1/sqrt(L)). `lamina grad-norms` prints it.
#pragma once

#include <cstdint>
#include <vector>

#include "absl/status/statusor.h"
#include "model/backend.h"
#include "model/layer_stats.h"
#include "nlohmann/json.hpp"
#include "pretrain/run_config.h"

namespace lamina {

struct InitGradNormsOptions {
  std::vector<int64_t> depths;  // model.layers values; empty = the config's own
  int64_t batches = 4;          // global batches (batch.global_batch sequences) per seed
  int64_t seeds = 2;            // run.seed, run.seed + 1, ...: the initialisation and the batches
};

struct DepthGradNorms {
  int64_t layers = 0;
  // Means over batches x seeds of each batch's norms. Dropout is off: the network the analysis
  // describes, and the same value on every backend.
  LayerGroupNorms grad_norm;
  std::vector<double> hidden_norm;  // BertModel::LayerOutputNorms of the last micro-batch
};

struct InitGradNorms {
  int64_t seq_len = 0;  // of the data measured on
  std::vector<DepthGradNorms> depths;

  // {"norm", "init", "hidden", "ffn", "heads", "batches", "seeds", "seed", "seq_len",
  //  "global_batch", "micro_batch", "depths": [{"layers", "grad_norm": {group: [per layer]},
  //  "hidden_norm": [per layer]}]}
  nlohmann::json ToJson(const RunConfig& config, const InitGradNormsOptions& options) const;
};

// For each depth: a model of the config at that depth, initialised from each seed, and the
// gradient of the mean MLM loss of each of `batches` global batches of the train split.
absl::StatusOr<InitGradNorms> MeasureInitGradNorms(const RunConfig& config, const InitGradNormsOptions& options,
                                                   Backend* backend);

}  // namespace lamina
