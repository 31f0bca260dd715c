#include "data/glue.h"

#include <algorithm>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "core/file_util.h"
#include "core/status.h"

namespace lamina {
namespace {

absl::Status RowError(const std::string& path, int64_t line, absl::string_view what) {
  return absl::InvalidArgumentError(absl::StrCat(path, ":", line, ": ", what));
}

absl::StatusOr<int64_t> ParseIndex(const std::string& path, int64_t line, absl::string_view field) {
  int64_t value;
  if (!absl::SimpleAtoi(field, &value) || value < 0) {
    return RowError(path, line, absl::StrCat("expected a non-negative integer index, found '", field, "'"));
  }
  return value;
}

// The lines of a GLUE file without BOM, "\r" and the empty piece after the final newline.
absl::StatusOr<std::vector<std::string>> ReadLines(const std::string& path) {
  ASSIGN_OR_RETURN(std::string contents, ReadFile(path));
  absl::string_view text = contents;
  if (absl::StartsWith(text, "\xef\xbb\xbf")) text.remove_prefix(3);
  std::vector<std::string> lines = absl::StrSplit(text, '\n');
  if (!lines.empty() && lines.back().empty()) lines.pop_back();
  for (std::string& line : lines) {
    if (!line.empty() && line.back() == '\r') line.pop_back();
  }
  if (lines.empty()) return absl::InvalidArgumentError(absl::StrCat(path, ": empty file (no header line)"));
  return lines;
}

absl::StatusOr<std::vector<GlueExample>> ReadMrpc(const std::string& path, const std::vector<std::string>& lines) {
  const std::vector<absl::string_view> header = absl::StrSplit(lines[0], '\t');
  const std::vector<absl::string_view> tail = {"#1 ID", "#2 ID", "#1 String", "#2 String"};
  const bool header_ok = header.size() == 5 && std::equal(tail.begin(), tail.end(), header.begin() + 1);
  if (!header_ok || (header[0] != "Quality" && header[0] != "index")) {
    return RowError(path, 1, "expected the MRPC header 'Quality|index<TAB>#1 ID<TAB>#2 ID<TAB>#1 String<TAB>#2 String'");
  }
  const bool labelled = header[0] == "Quality";
  std::vector<GlueExample> examples;
  for (size_t i = 1; i < lines.size(); ++i) {
    const int64_t line = static_cast<int64_t>(i) + 1;
    const std::vector<absl::string_view> f = absl::StrSplit(lines[i], '\t');
    if (f.size() != 5) {
      return RowError(path, line, absl::StrCat("expected 5 tab-separated fields, found ", f.size()));
    }
    GlueExample ex;
    ex.line = line;
    ex.text_a = std::string(f[3]);
    ex.text_b = std::string(f[4]);
    if (labelled) {
      if (f[0] != "0" && f[0] != "1") return RowError(path, line, absl::StrCat("expected Quality 0 or 1, found '", f[0], "'"));
      ex.label = f[0] == "1" ? 1 : 0;
      ex.index = static_cast<int64_t>(examples.size());
    } else {
      ASSIGN_OR_RETURN(ex.index, ParseIndex(path, line, f[0]));
    }
    examples.push_back(std::move(ex));
  }
  return examples;
}

absl::StatusOr<std::vector<GlueExample>> ReadRte(const std::string& path, const std::vector<std::string>& lines) {
  const std::vector<absl::string_view> header = absl::StrSplit(lines[0], '\t');
  const bool labelled = header == std::vector<absl::string_view>{"index", "sentence1", "sentence2", "label"};
  if (!labelled && header != std::vector<absl::string_view>{"index", "sentence1", "sentence2"}) {
    return RowError(path, 1, "expected the RTE header 'index<TAB>sentence1<TAB>sentence2[<TAB>label]'");
  }
  const std::vector<std::string>& names = GlueLabelNames(GlueTask::kRte);
  std::vector<GlueExample> examples;
  for (size_t i = 1; i < lines.size(); ++i) {
    const int64_t line = static_cast<int64_t>(i) + 1;
    const std::vector<absl::string_view> f = absl::StrSplit(lines[i], '\t');
    if (labelled ? f.size() < 4 : f.size() != 3) {
      return RowError(path, line, absl::StrCat("expected ", labelled ? "4" : "3", " tab-separated fields, found ", f.size()));
    }
    GlueExample ex;
    ex.line = line;
    ASSIGN_OR_RETURN(ex.index, ParseIndex(path, line, f[0]));
    ex.text_a = std::string(f[1]);
    ex.text_b = std::string(f[2]);
    if (labelled) {
      // The label is the last field; anything between sentence2 and it must be empty.
      for (size_t k = 3; k + 1 < f.size(); ++k) {
        if (!f[k].empty()) {
          return RowError(path, line, absl::StrCat("expected 4 fields, found ", f.size(), " with non-empty field ", k + 1));
        }
      }
      auto it = std::find(names.begin(), names.end(), f.back());
      if (it == names.end()) {
        return RowError(path, line, absl::StrCat("expected label entailment or not_entailment, found '", f.back(), "'"));
      }
      ex.label = static_cast<int32_t>(it - names.begin());
    }
    examples.push_back(std::move(ex));
  }
  return examples;
}

}  // namespace

absl::StatusOr<GlueTask> ParseGlueTask(absl::string_view name) {
  const std::string lower = absl::AsciiStrToLower(name);
  if (lower == "mrpc") return GlueTask::kMrpc;
  if (lower == "rte") return GlueTask::kRte;
  return absl::InvalidArgumentError(absl::StrCat("unknown GLUE task '", name, "' (expected mrpc or rte)"));
}

const char* GlueTaskName(GlueTask task) { return task == GlueTask::kMrpc ? "MRPC" : "RTE"; }

const std::vector<std::string>& GlueLabelNames(GlueTask task) {
  static const std::vector<std::string> mrpc = {"0", "1"};
  static const std::vector<std::string> rte = {"entailment", "not_entailment"};
  return task == GlueTask::kMrpc ? mrpc : rte;
}

absl::StatusOr<std::vector<GlueExample>> ReadGlueTsv(GlueTask task, const std::string& path) {
  ASSIGN_OR_RETURN(std::vector<std::string> lines, ReadLines(path));
  return task == GlueTask::kMrpc ? ReadMrpc(path, lines) : ReadRte(path, lines);
}

absl::StatusOr<std::vector<GlueExample>> ReadGlueSplit(GlueTask task, const std::string& glue_dir,
                                                       absl::string_view split) {
  if (split != "train" && split != "dev" && split != "test") {
    return absl::InvalidArgumentError(absl::StrCat("unknown GLUE split '", split, "' (expected train, dev or test)"));
  }
  return ReadGlueTsv(task, absl::StrCat(glue_dir, "/", GlueTaskName(task), "/", split, ".tsv"));
}

std::vector<TokenizedPair> TokenizePairs(const WordPieceTokenizer& tokenizer, const std::vector<GlueExample>& examples) {
  std::vector<TokenizedPair> pairs(examples.size());
  for (size_t i = 0; i < examples.size(); ++i) {
    tokenizer.Encode(examples[i].text_a, &pairs[i].a);
    tokenizer.Encode(examples[i].text_b, &pairs[i].b);
    pairs[i].label = examples[i].label;
    pairs[i].index = examples[i].index;
  }
  return pairs;
}

void TruncateLongestFirst(int64_t budget, int64_t* len_a, int64_t* len_b) {
  while (*len_a + *len_b > budget) {
    if (*len_a > *len_b) {
      --*len_a;
    } else {
      --*len_b;
    }
  }
}

void EncodePairRow(const WordPieceTokenizer& tokenizer, absl::Span<const int32_t> a, absl::Span<const int32_t> b,
                   int64_t seq, int32_t* input_ids, int32_t* token_types, int32_t* attention_mask) {
  LAMINA_CHECK(seq >= 3, "a pair row needs room for [CLS] and two [SEP], seq=", seq);
  int64_t la = static_cast<int64_t>(a.size()), lb = static_cast<int64_t>(b.size());
  TruncateLongestFirst(seq - 3, &la, &lb);
  int64_t t = 0;
  auto put = [&](int32_t id, int32_t type) {
    input_ids[t] = id;
    token_types[t] = type;
    attention_mask[t] = 1;
    ++t;
  };
  put(tokenizer.cls_id(), 0);
  for (int64_t i = 0; i < la; ++i) put(a[i], 0);
  put(tokenizer.sep_id(), 0);
  for (int64_t i = 0; i < lb; ++i) put(b[i], 1);
  put(tokenizer.sep_id(), 1);
  for (; t < seq; ++t) {
    input_ids[t] = tokenizer.pad_id();
    token_types[t] = 0;
    attention_mask[t] = 0;
  }
}

EncoderBatch MakePairBatch(const WordPieceTokenizer& tokenizer, const std::vector<TokenizedPair>& pairs,
                           absl::Span<const int64_t> rows, int64_t seq) {
  EncoderBatch batch;
  batch.batch = static_cast<int64_t>(rows.size());
  batch.seq = seq;
  batch.input_ids.resize(batch.batch * seq);
  batch.token_types.resize(batch.batch * seq);
  batch.attention_mask.resize(batch.batch * seq);
  batch.labels.resize(batch.batch);
  for (int64_t r = 0; r < batch.batch; ++r) {
    LAMINA_CHECK(rows[r] >= 0 && rows[r] < static_cast<int64_t>(pairs.size()), "pair row ", rows[r]);
    const TokenizedPair& p = pairs[rows[r]];
    EncodePairRow(tokenizer, p.a, p.b, seq, &batch.input_ids[r * seq], &batch.token_types[r * seq],
                  &batch.attention_mask[r * seq]);
    batch.labels[r] = p.label;
  }
  return batch;
}

}  // namespace lamina
