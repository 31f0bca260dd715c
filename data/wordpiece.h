// The BERT uncased WordPiece tokenizer, matching Hugging Face `tokenizers`
// BertWordPieceTokenizer(vocab, lowercase=True) (clean_text, handle_chinese_chars, strip_accents
// on) token for token; tests/fixtures/tokenizer_ref.tsv.xz pins that. The pipeline, per input:
//
//   1. Special tokens written in the text exactly as "[PAD]", "[UNK]", "[CLS]", "[SEP]" or "[MASK]"
//      (case-sensitive, anywhere, even inside a word: "a[MASK]b" -> a [MASK] b) are cut out first
//      and emitted whole, as `tokenizers` does with its added special tokens. "[mask]" is ordinary
//      text (-> "[", "mask", "]").
//   2. Invalid UTF-8 never fails: every byte that does not start a well-formed sequence (lone
//      continuation bytes, truncated sequences, overlong forms, UTF-16 surrogates, > U+10FFFF)
//      becomes U+FFFD, which step 3 drops; so invalid bytes vanish without splitting a word, as
//      in Python's decode(errors="replace") followed by the reference tokenizer.
//   3. Clean-up: drop U+0000, U+FFFD and control characters (categories Cc Cf Co Cs Cn, except
//      \t \n \r); map whitespace (\t \n \r and the Unicode White_Space characters) to a space.
//   4. CJK ideographs get spaces around them.
//   5. Strip accents (NFD, drop Mn), then lower-case (utf8proc).
//   6. Split on spaces, then isolate each punctuation character (Unicode P* and ASCII
//      33-47 58-64 91-96 123-126).
//   7. Greedy longest-match-first WordPiece with "##" continuations; a word of more than 100 code
//      points, or one that cannot be covered by vocab pieces, becomes [UNK].
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace lamina {

class WordPieceTokenizer {
 public:
  // Reads a BERT vocab.txt (one token per line; id = line number). Errors name the file and line
  // (empty or duplicate tokens, missing special tokens, invalid UTF-8).
  static absl::StatusOr<WordPieceTokenizer> Load(const std::string& vocab_path);
  // The same from the file's contents; `name` is used in error messages.
  static absl::StatusOr<WordPieceTokenizer> FromVocabText(absl::string_view contents, absl::string_view name);

  // Appends the ids of `text` (no [CLS]/[SEP] added). Thread-safe (const, no shared mutable state).
  void Encode(absl::string_view text, std::vector<int32_t>* ids) const;
  std::vector<int32_t> Encode(absl::string_view text) const;
  // The wordpiece strings of `text`, e.g. "Unaffable" -> {"una", "##ffa", "##ble"}.
  std::vector<std::string> Tokenize(absl::string_view text) const;

  int32_t vocab_size() const;
  const std::string& token(int32_t id) const;
  std::optional<int32_t> FindToken(absl::string_view token) const;

  int32_t pad_id() const { return pad_id_; }
  int32_t unk_id() const { return unk_id_; }
  int32_t cls_id() const { return cls_id_; }
  int32_t sep_id() const { return sep_id_; }
  int32_t mask_id() const { return mask_id_; }
  // Whether id is one of the special tokens ([PAD] [UNK] [CLS] [SEP] [MASK]); masking never picks them.
  bool IsSpecial(int32_t id) const {
    return id == pad_id_ || id == unk_id_ || id == cls_id_ || id == sep_id_ || id == mask_id_;
  }
  // FNV-1a 64 of the vocab file's bytes, recorded in shard manifests.
  uint64_t vocab_hash() const { return vocab_hash_; }

  // Copies share the immutable vocabulary.
  struct Vocab;

 private:
  explicit WordPieceTokenizer(std::shared_ptr<const Vocab> vocab);

  std::shared_ptr<const Vocab> vocab_;
  int32_t pad_id_ = -1, unk_id_ = -1, cls_id_ = -1, sep_id_ = -1, mask_id_ = -1;
  uint64_t vocab_hash_ = 0;
};

}  // namespace lamina
