#include "pretrain/train_data.h"

#include "absl/strings/str_cat.h"
#include "core/status.h"
#include "data/wordpiece.h"

namespace lamina {

absl::StatusOr<TrainData> OpenTrainData(const RunConfig& config) {
  if (config.data.vocab.empty()) return absl::InvalidArgumentError("data.vocab: the vocab.txt the data was prepared with");
  if (config.data.train.empty()) return absl::InvalidArgumentError("data.train: a dataset directory from `lamina prepare`");
  auto tokenizer = WordPieceTokenizer::Load(config.data.vocab);
  if (!tokenizer.ok()) return Annotate(tokenizer.status(), "data.vocab");
  if (tokenizer->vocab_size() > config.model.vocab_size)
    return absl::InvalidArgumentError(absl::StrCat("model.vocab_size (", config.model.vocab_size, ") is smaller than ",
                                                   config.data.vocab, " (", tokenizer->vocab_size(), " tokens)"));
  auto dataset = MlmDataset::Open(config.data.train, DatasetOptions::ForVocab(*tokenizer));
  if (!dataset.ok()) return Annotate(dataset.status(), "data.train");
  TrainData data;
  data.dataset = *dataset;
  data.seq_len = data.dataset->train().seq_len();
  if (data.seq_len > config.model.max_positions)
    return absl::InvalidArgumentError(absl::StrCat("the dataset's seq_len ", data.seq_len,
                                                   " exceeds model.max_positions ", config.model.max_positions));
  data.vocab = MaskingVocab::FromTokenizer(*tokenizer);
  return data;
}

}  // namespace lamina
