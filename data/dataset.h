// A prepared MLM dataset directory (manifest.json + memory-mapped shards), opened read-only.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "data/manifest.h"
#include "data/shard.h"
#include "data/wordpiece.h"

namespace lamina {

// The rows of one split (train or val) across its shards, addressed by a global row index.
class TokenSplit {
 public:
  int64_t num_sequences() const { return starts_.empty() ? 0 : starts_.back(); }
  int32_t seq_len() const { return seq_len_; }
  // Copies row `i` (0 <= i < num_sequences()) as int32 ids into out[0, seq_len()).
  void CopyRow(int64_t i, int32_t* out) const;

 private:
  friend class MlmDataset;
  std::vector<MappedShard> shards_;
  std::vector<int64_t> starts_;  // starts_[k] = first row of shard k; one past the end last
  int32_t seq_len_ = 0;
};

struct DatasetOptions {
  // When non-zero, the manifest's vocab hash must equal it (ForVocab below sets it).
  uint64_t expected_vocab_hash = 0;
  // When set, the manifest's special ids must be these (the tokenizer's: the loader pads, masks
  // and frames sequences by them, so an edited manifest would change every loss silently).
  std::optional<SpecialIds> expected_special_ids = std::nullopt;
  // Check each shard's CRC-32 against the manifest (reads every byte once, ~0.2 s per 100 MB).
  bool verify_crc = true;

  // The options that hold a dataset to the vocab in use: its hash and its special ids.
  static DatasetOptions ForVocab(const WordPieceTokenizer& tokenizer) {
    DatasetOptions o;
    o.expected_vocab_hash = tokenizer.vocab_hash();
    o.expected_special_ids = tokenizer.special_ids();
    return o;
  }
};

class MlmDataset {
 public:
  // Reads `dir`/manifest.json and maps every shard, checking each against the manifest. Errors
  // name the file and what was expected.
  static absl::StatusOr<std::shared_ptr<const MlmDataset>> Open(const std::string& dir, const DatasetOptions& options = {});

  const std::string& dir() const { return dir_; }
  const Manifest& manifest() const { return manifest_; }
  const TokenSplit& train() const { return train_; }
  const TokenSplit& val() const { return val_; }

 private:
  std::string dir_;
  Manifest manifest_;
  TokenSplit train_, val_;
};

}  // namespace lamina
