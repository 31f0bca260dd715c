// GLUE sentence-pair tasks (MRPC, RTE): reading the GLUE .tsv files and encoding pairs as
// `[CLS] a [SEP] b [SEP]` rows of an EncoderBatch.
//
// The files are split on tabs only, never CSV-unquoted (quotes in them are unbalanced), a UTF-8
// BOM at the start is skipped, and a "\r" before "\n" is dropped.
//   MRPC train/dev: Quality  #1 ID  #2 ID  #1 String  #2 String    (Quality 0/1 is the label)
//   MRPC test:      index    #1 ID  #2 ID  #1 String  #2 String
//   RTE train/dev:  index  sentence1  sentence2  label             (entailment=0, not_entailment=1)
//   RTE test:       index  sentence1  sentence2
// RTE's label is the last field; empty fields between sentence2 and it are allowed (one train row
// has one). Whether a file is labelled is read from its header. Any other shape is an error
// naming the file and line.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/types/span.h"
#include "data/wordpiece.h"
#include "model/batch.h"

namespace lamina {

enum class GlueTask { kMrpc, kRte };

// "mrpc" / "rte" (any case).
absl::StatusOr<GlueTask> ParseGlueTask(absl::string_view name);
const char* GlueTaskName(GlueTask task);  // "MRPC", "RTE": also the folder name under the GLUE dir
// The label names in id order: MRPC {"0", "1"}, RTE {"entailment", "not_entailment"}.
const std::vector<std::string>& GlueLabelNames(GlueTask task);
inline int NumGlueLabels(GlueTask task) { return static_cast<int>(GlueLabelNames(task).size()); }

struct GlueExample {
  std::string text_a, text_b;
  int32_t label = -1;  // -1 in unlabelled (test) files
  int64_t index = 0;   // the index column where the file has one, else the 0-based row number
  int64_t line = 0;    // 1-based line in the file, for messages
};

absl::StatusOr<std::vector<GlueExample>> ReadGlueTsv(GlueTask task, const std::string& path);
// Reads DIR/MRPC/SPLIT.tsv or DIR/RTE/SPLIT.tsv; split is train, dev or test.
absl::StatusOr<std::vector<GlueExample>> ReadGlueSplit(GlueTask task, const std::string& glue_dir,
                                                       absl::string_view split);

// Both sentences tokenized once (no special tokens), ready to be laid out at any length.
struct TokenizedPair {
  std::vector<int32_t> a, b;
  int32_t label = -1;
  int64_t index = 0;
};
std::vector<TokenizedPair> TokenizePairs(const WordPieceTokenizer& tokenizer, const std::vector<GlueExample>& examples);

// The lengths a and b are cut to so that both fit in `budget` tokens: BERT's / HF's
// 'longest_first' rule, removing one token at a time from the end of the longer one (from b when
// they are equally long).
void TruncateLongestFirst(int64_t budget, int64_t* len_a, int64_t* len_b);

// Writes one row of `seq` tokens: [CLS] a [SEP] b [SEP] after truncation to seq - 3 content
// tokens, then [PAD]. Token types are 0 for [CLS] a [SEP], 1 for b [SEP], 0 for padding;
// attention is 1 on real tokens. seq must be >= 3.
void EncodePairRow(const WordPieceTokenizer& tokenizer, absl::Span<const int32_t> a, absl::Span<const int32_t> b,
                   int64_t seq, int32_t* input_ids, int32_t* token_types, int32_t* attention_mask);

// An EncoderBatch of the pairs at `rows` (indices into `pairs`), seq tokens each, with their
// labels in batch.labels (-1 for unlabelled pairs) and no MLM positions.
EncoderBatch MakePairBatch(const WordPieceTokenizer& tokenizer, const std::vector<TokenizedPair>& pairs,
                           absl::Span<const int64_t> rows, int64_t seq);

}  // namespace lamina
