// Corpus preparation (`lamina prepare`): text files -> WordPiece ids -> fixed-length sequences in
// binary shards plus manifest.json (data/manifest.h, data/shard.h).
//
// - Input files (plain, .xz, .gz; recognised by content) are read in the order given and split
//   into documents (data/documents.h). Documents are numbered in that order; documents with no
//   tokens are skipped and not numbered.
// - Tokenization runs on `threads` worker threads; results are consumed in document order, so the
//   output does not depend on the thread count.
// - Text that spells a special token other than [UNK] ("[CLS]", "[SEP]", "[PAD]", "[MASK]") is
//   stored as [UNK], so the only structure tokens in a row are the ones prepare adds.
// - Each document is cut into pieces of at most seq_len - 2 tokens, each stored as one row
//   [CLS] piece [SEP] padded with [PAD] to seq_len. Rows never mix documents.
// - Validation hold-out: the val_docs documents with the smallest Philox key
//   PhiloxAt(kHoldoutSeed, kHoldoutStream, 2n)<<32 | PhiloxAt(.., 2n+1) of their number n (a
//   uniform random sample, fixed for a given corpus, spread over every input file) form the val
//   split, written in document order. Candidates are kept in memory until the end (only val_docs
//   documents); the others go to the train split as soon as they are known not to be held out, so
//   the train split is in document order except for documents displaced from the candidate set.
// - --max-docs / --max-bytes stop early, at a document boundary: after max_docs documents, or after
//   the document during which the decompressed text read reaches max_bytes (summed over inputs).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "data/manifest.h"
#include "data/wordpiece.h"

namespace lamina {

inline constexpr uint64_t kHoldoutSeed = 0x484F4C444F5554;  // "HOLDOUT"
inline constexpr uint64_t kHoldoutStream = 0x56414C;        // "VAL"

struct PrepareOptions {
  std::vector<std::string> inputs;
  std::string out_dir;
  int seq_len = 128;
  int64_t val_docs = 500;
  int threads = 0;                      // 0: one per hardware thread
  int64_t max_docs = 0;                 // 0: no limit
  int64_t max_bytes = 0;                // 0: no limit
  int64_t sequences_per_shard = 65536;  // rows per shard file
  bool progress = true;                 // progress on stderr (a bar on a terminal, else a line every 10 s)
};

// Prepares the dataset in options.out_dir (created if needed; a previous dataset there is replaced)
// and returns its manifest.
absl::StatusOr<Manifest> PrepareCorpus(const WordPieceTokenizer& tokenizer, const PrepareOptions& options);

}  // namespace lamina
