// The data a run trains on, opened from its config: the dataset `lamina prepare` wrote and the
// masking vocab of the tokenizer it was prepared with, each checked against the model.
#pragma once

#include <memory>

#include "absl/status/statusor.h"
#include "data/dataset.h"
#include "data/masking.h"
#include "pretrain/run_config.h"

namespace lamina {

struct TrainData {
  std::shared_ptr<const MlmDataset> dataset;
  MaskingVocab vocab;
  int64_t seq_len = 0;  // of the train split
};

// Opens data.train with data.vocab. Errors name the key: a missing path, a vocab larger than
// model.vocab_size, a dataset prepared with another vocab, or sequences longer than
// model.max_positions.
absl::StatusOr<TrainData> OpenTrainData(const RunConfig& config);

}  // namespace lamina
