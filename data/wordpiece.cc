#include "data/wordpiece.h"

#include <utf8proc.h>

#include <algorithm>
#include <array>
#include <utility>

#include "absl/container/flat_hash_map.h"
#include "absl/strings/str_cat.h"
#include "core/file_util.h"
#include "core/status.h"

namespace lamina {
namespace {

// Words of more than this many code points become [UNK] (HF max_input_chars_per_word).
constexpr size_t kMaxWordChars = 100;

// What the normalizer and pre-tokenizer make of one input code point.
enum class CharKind : uint8_t {
  kDrop,     // removed by clean-up (controls, U+0000, U+FFFD); does not split the word
  kSpace,    // whitespace: ends the current word
  kIsolate,  // punctuation or CJK ideograph: its normalized form is a word of its own
  kWord,     // its normalized form (possibly empty, e.g. a combining mark) joins the current word
  kMixed,    // normalized form holds both word and punctuation characters; classified one by one
};

// The CJK ideograph ranges of `tokenizers`, which reads 0x2B920 where BERT's Python has 0x2B820.
bool IsCjk(int32_t c) {
  return (c >= 0x4E00 && c <= 0x9FFF) || (c >= 0x3400 && c <= 0x4DBF) || (c >= 0x20000 && c <= 0x2A6DF) ||
         (c >= 0x2A700 && c <= 0x2B73F) || (c >= 0x2B740 && c <= 0x2B81F) || (c >= 0x2B920 && c <= 0x2CEAF) ||
         (c >= 0xF900 && c <= 0xFAFF) || (c >= 0x2F800 && c <= 0x2FA1F);
}

// The Unicode White_Space property (stable since Unicode 6.3), as Rust's char::is_whitespace.
bool IsWhiteSpace(int32_t c) {
  return (c >= 0x09 && c <= 0x0D) || c == 0x20 || c == 0x85 || c == 0xA0 || c == 0x1680 ||
         (c >= 0x2000 && c <= 0x200A) || c == 0x2028 || c == 0x2029 || c == 0x202F || c == 0x205F || c == 0x3000;
}

// Removed by clean-up. Unassigned code points (Cn) are kept, as the reference keeps them.
bool IsDropped(int32_t c) {
  if (c == '\t' || c == '\n' || c == '\r') return false;
  if (c == 0 || c == 0xFFFD) return true;
  const utf8proc_category_t cat = utf8proc_category(c);
  return cat == UTF8PROC_CATEGORY_CC || cat == UTF8PROC_CATEGORY_CF || cat == UTF8PROC_CATEGORY_CO ||
         cat == UTF8PROC_CATEGORY_CS;
}

bool IsPunctuation(int32_t c) {
  if ((c >= 33 && c <= 47) || (c >= 58 && c <= 64) || (c >= 91 && c <= 96) || (c >= 123 && c <= 126)) return true;
  const utf8proc_category_t cat = utf8proc_category(c);
  return cat >= UTF8PROC_CATEGORY_PC && cat <= UTF8PROC_CATEGORY_PO;
}

void AppendUtf8(int32_t c, std::string* out) {
  utf8proc_uint8_t buf[4];
  const auto n = utf8proc_encode_char(c, buf);
  out->append(reinterpret_cast<const char*>(buf), static_cast<size_t>(n));
}

// Strips accents (NFD, drop Mn) and lower-cases one code point, the order `tokenizers` uses.
// Characters are independent here because clean-up, accent stripping and lower-casing all act
// character by character (canonical reordering only permutes marks, which are then dropped).
std::vector<int32_t> NormalizeChar(int32_t c) {
  utf8proc_int32_t decomposed[32];
  int boundclass = 0;
  utf8proc_ssize_t n = utf8proc_decompose_char(c, decomposed, 32, UTF8PROC_DECOMPOSE, &boundclass);
  if (n < 0 || n > 32) {
    decomposed[0] = c;
    n = 1;
  }
  std::vector<int32_t> out;
  for (utf8proc_ssize_t i = 0; i < n; ++i) {
    if (utf8proc_category(decomposed[i]) == UTF8PROC_CATEGORY_MN) continue;
    out.push_back(utf8proc_tolower(decomposed[i]));
  }
  return out;
}

struct CharRule {
  CharKind kind = CharKind::kDrop;
  std::string normalized;  // UTF-8
};

// The reference tests "control", "punctuation" and "non-spacing mark" against Unicode 8.0 tables
// (the `unicode_categories` crate), so characters assigned since are none of these there, and a
// few changed category. These ranges give the reference's class where it differs from utf8proc's
// Unicode 15 data; tests/fixtures/make_unicode_overrides.py derives them by probing the reference.
struct KindOverride {
  int32_t first, last;
  CharKind kind;
};
constexpr KindOverride kKindOverrides[] = {
#include "data/wordpiece_unicode_overrides.inc"
};

std::optional<CharKind> OverriddenKind(int32_t c) {
  const auto* it = std::upper_bound(std::begin(kKindOverrides), std::end(kKindOverrides), c,
                                    [](int32_t v, const KindOverride& o) { return v < o.first; });
  if (it == std::begin(kKindOverrides) || c > (it - 1)->last) return std::nullopt;
  return (it - 1)->kind;
}

CharRule ComputeRule(int32_t c) {
  CharRule rule;
  if (const std::optional<CharKind> kind = OverriddenKind(c)) {
    rule.kind = *kind;
    if (rule.kind == CharKind::kIsolate) {
      AppendUtf8(c, &rule.normalized);
    } else if (rule.kind == CharKind::kWord) {  // a mark the reference does not know: kept
      utf8proc_int32_t decomposed[32];
      int boundclass = 0;
      const utf8proc_ssize_t n = utf8proc_decompose_char(c, decomposed, 32, UTF8PROC_DECOMPOSE, &boundclass);
      for (utf8proc_ssize_t i = 0; i < n && i < 32; ++i) AppendUtf8(utf8proc_tolower(decomposed[i]), &rule.normalized);
    }
    return rule;
  }
  if (IsDropped(c)) return rule;
  if (IsWhiteSpace(c)) {
    rule.kind = CharKind::kSpace;
    return rule;
  }
  const std::vector<int32_t> chars = NormalizeChar(c);
  bool any_punct = false, any_word = false;
  for (int32_t d : chars) {
    AppendUtf8(d, &rule.normalized);
    (IsPunctuation(d) ? any_punct : any_word) = true;
  }
  if (IsCjk(c) || (any_punct && !any_word && chars.size() == 1)) {
    rule.kind = CharKind::kIsolate;
  } else if (any_punct) {
    rule.kind = CharKind::kMixed;
  } else {
    rule.kind = CharKind::kWord;
  }
  return rule;
}

// Precomputed rules for code points below kTableSize (every script in practical use); rarer code
// points are computed on the fly. Packed as kind (3 bits) | length (5 bits) | arena offset (24 bits).
class CharTable {
 public:
  static constexpr int32_t kTableSize = 0x30000;

  CharTable() : packed_(kTableSize) {
    for (int32_t c = 0; c < kTableSize; ++c) {
      const CharRule rule = ComputeRule(c);
      LAMINA_CHECK(rule.normalized.size() < 32 && arena_.size() < (1u << 24));
      packed_[c] = static_cast<uint32_t>(rule.kind) << 29 | static_cast<uint32_t>(rule.normalized.size()) << 24 |
                   static_cast<uint32_t>(arena_.size());
      arena_ += rule.normalized;
    }
  }

  CharKind Kind(int32_t c) const { return static_cast<CharKind>(packed_[c] >> 29); }
  absl::string_view Normalized(int32_t c) const {
    return absl::string_view(arena_.data() + (packed_[c] & 0xFFFFFF), (packed_[c] >> 24) & 31);
  }

 private:
  std::vector<uint32_t> packed_;
  std::string arena_;
};

const CharTable& Table() {
  static const CharTable* table = new CharTable();
  return *table;
}

// Decodes one well-formed UTF-8 sequence at p[0..n) into *c and returns its length, or returns 0
// when p[0] does not start one (lone continuation byte, truncated or overlong sequence, surrogate,
// above U+10FFFF); the caller then drops that single byte, like U+FFFD in clean-up.
inline size_t DecodeUtf8(const unsigned char* p, size_t n, int32_t* c) {
  const unsigned b0 = p[0];
  auto cont = [&](size_t i) { return i < n && (p[i] & 0xC0) == 0x80; };
  if (b0 < 0x80) {
    *c = static_cast<int32_t>(b0);
    return 1;
  }
  if (b0 >= 0xC2 && b0 <= 0xDF) {
    if (!cont(1)) return 0;
    *c = static_cast<int32_t>((b0 & 0x1F) << 6 | (p[1] & 0x3F));
    return 2;
  }
  if (b0 >= 0xE0 && b0 <= 0xEF) {
    if (!cont(1) || !cont(2)) return 0;
    if (b0 == 0xE0 && p[1] < 0xA0) return 0;  // overlong
    if (b0 == 0xED && p[1] > 0x9F) return 0;  // UTF-16 surrogate
    *c = static_cast<int32_t>((b0 & 0x0F) << 12 | (p[1] & 0x3F) << 6 | (p[2] & 0x3F));
    return 3;
  }
  if (b0 >= 0xF0 && b0 <= 0xF4) {
    if (!cont(1) || !cont(2) || !cont(3)) return 0;
    if (b0 == 0xF0 && p[1] < 0x90) return 0;  // overlong
    if (b0 == 0xF4 && p[1] > 0x8F) return 0;  // above U+10FFFF
    *c = static_cast<int32_t>((b0 & 0x07) << 18 | (p[1] & 0x3F) << 12 | (p[2] & 0x3F) << 6 | (p[3] & 0x3F));
    return 4;
  }
  return 0;
}

uint64_t Fnv1a64(absl::string_view bytes) {
  uint64_t h = 0xcbf29ce484222325ull;
  for (unsigned char b : bytes) {
    h ^= b;
    h *= 0x100000001b3ull;
  }
  return h;
}

constexpr std::array<absl::string_view, 5> kSpecialTokens = {"[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"};

}  // namespace

struct WordPieceTokenizer::Vocab {
  std::vector<std::string> tokens;
  // Keys point into `tokens`, which never changes after the maps are built.
  absl::flat_hash_map<absl::string_view, int32_t> whole;   // every token
  absl::flat_hash_map<absl::string_view, int32_t> suffix;  // "##x" tokens, keyed by "x"
  size_t max_whole_bytes = 0, max_suffix_bytes = 0;
  std::array<int32_t, 5> special_ids{};  // in kSpecialTokens order
  std::array<int32_t, 128> ascii_isolate_id{};  // id of each ASCII punctuation character on its own
  int32_t unk_id = -1;

  // Greedy longest-match-first WordPiece of one normalized word (UTF-8, no spaces).
  void EncodeWord(absl::string_view word, std::vector<int32_t>* ids) const {
    if (word.size() > kMaxWordChars) {
      size_t chars = 0;
      for (unsigned char b : word) chars += (b & 0xC0) != 0x80;
      if (chars > kMaxWordChars) {
        ids->push_back(unk_id);
        return;
      }
    }
    const size_t first = ids->size();
    size_t start = 0;
    while (start < word.size()) {
      const auto& map = start == 0 ? whole : suffix;
      size_t end = std::min(word.size(), start + (start == 0 ? max_whole_bytes : max_suffix_bytes));
      while (end < word.size() && (static_cast<unsigned char>(word[end]) & 0xC0) == 0x80) --end;
      int32_t found = -1;
      while (end > start) {
        auto it = map.find(word.substr(start, end - start));
        if (it != map.end()) {
          found = it->second;
          break;
        }
        do --end;
        while (end > start && (static_cast<unsigned char>(word[end]) & 0xC0) == 0x80);
      }
      if (found < 0) {
        ids->resize(first);
        ids->push_back(unk_id);
        return;
      }
      ids->push_back(found);
      start = end;
    }
  }

  // Normalizes, pre-tokenizes and encodes text that holds no special token.
  void EncodeSegment(absl::string_view text, std::string* word, std::vector<int32_t>* ids) const {
    const CharTable& table = Table();
    const auto* p = reinterpret_cast<const unsigned char*>(text.data());
    const size_t n = text.size();
    word->clear();
    auto flush = [&] {
      if (!word->empty()) {
        EncodeWord(*word, ids);
        word->clear();
      }
    };
    size_t i = 0;
    while (i < n) {
      const unsigned char b = p[i];
      if (b < 0x80) {  // ASCII fast path
        ++i;
        if ((b >= 'a' && b <= 'z') || (b >= '0' && b <= '9')) {
          word->push_back(static_cast<char>(b));
        } else if (b >= 'A' && b <= 'Z') {
          word->push_back(static_cast<char>(b + ('a' - 'A')));
        } else if (b == ' ' || b == '\t' || b == '\n' || b == '\r') {
          flush();
        } else if (ascii_isolate_id[b] >= 0) {
          flush();
          ids->push_back(ascii_isolate_id[b]);
        }  // else an ASCII control character: dropped
        continue;
      }
      int32_t c;
      const size_t len = DecodeUtf8(p + i, n - i, &c);
      if (len == 0) {  // invalid byte: U+FFFD, dropped by clean-up
        ++i;
        continue;
      }
      i += len;
      if (c < CharTable::kTableSize) {
        AppendChar(table.Kind(c), table.Normalized(c), word, ids);
      } else {
        const CharRule rule = ComputeRule(c);
        AppendChar(rule.kind, rule.normalized, word, ids);
      }
    }
    flush();
  }

  void AppendChar(CharKind kind, absl::string_view normalized, std::string* word, std::vector<int32_t>* ids) const {
    switch (kind) {
      case CharKind::kDrop:
        return;
      case CharKind::kWord:
        word->append(normalized.data(), normalized.size());
        return;
      case CharKind::kSpace:
      case CharKind::kIsolate:
        if (!word->empty()) {
          EncodeWord(*word, ids);
          word->clear();
        }
        if (kind == CharKind::kIsolate) EncodeWord(normalized, ids);
        return;
      case CharKind::kMixed: {
        const auto* q = reinterpret_cast<const unsigned char*>(normalized.data());
        for (size_t j = 0; j < normalized.size();) {
          int32_t d = 0;
          const size_t len = std::max<size_t>(1, DecodeUtf8(q + j, normalized.size() - j, &d));
          const absl::string_view piece = normalized.substr(j, len);
          j += len;
          if (IsPunctuation(d)) {
            if (!word->empty()) {
              EncodeWord(*word, ids);
              word->clear();
            }
            EncodeWord(piece, ids);
          } else {
            word->append(piece.data(), piece.size());
          }
        }
        return;
      }
    }
  }
};

WordPieceTokenizer::WordPieceTokenizer(std::shared_ptr<const Vocab> vocab)
    : vocab_(std::move(vocab)),
      pad_id_(vocab_->special_ids[0]),
      unk_id_(vocab_->special_ids[1]),
      cls_id_(vocab_->special_ids[2]),
      sep_id_(vocab_->special_ids[3]),
      mask_id_(vocab_->special_ids[4]) {}

absl::StatusOr<WordPieceTokenizer> WordPieceTokenizer::Load(const std::string& vocab_path) {
  ASSIGN_OR_RETURN(std::string contents, ReadFile(vocab_path));
  return FromVocabText(contents, vocab_path);
}

absl::StatusOr<WordPieceTokenizer> WordPieceTokenizer::FromVocabText(absl::string_view contents,
                                                                     absl::string_view name) {
  auto vocab = std::make_shared<Vocab>();
  size_t pos = 0;
  while (pos < contents.size()) {
    size_t eol = contents.find('\n', pos);
    if (eol == absl::string_view::npos) eol = contents.size();
    absl::string_view line = contents.substr(pos, eol - pos);
    if (!line.empty() && line.back() == '\r') line.remove_suffix(1);
    const size_t line_number = vocab->tokens.size() + 1;
    if (line.empty()) {
      return absl::InvalidArgumentError(absl::StrCat(name, ":", line_number, ": empty token"));
    }
    for (size_t i = 0; i < line.size();) {
      int32_t c;
      const size_t len = DecodeUtf8(reinterpret_cast<const unsigned char*>(line.data()) + i, line.size() - i, &c);
      if (len == 0) return absl::InvalidArgumentError(absl::StrCat(name, ":", line_number, ": invalid UTF-8"));
      i += len;
    }
    vocab->tokens.emplace_back(line);
    pos = eol + 1;
  }
  if (vocab->tokens.empty()) return absl::InvalidArgumentError(absl::StrCat(name, ": empty vocabulary"));
  vocab->whole.reserve(vocab->tokens.size());
  for (size_t id = 0; id < vocab->tokens.size(); ++id) {
    const absl::string_view token = vocab->tokens[id];
    if (!vocab->whole.emplace(token, static_cast<int32_t>(id)).second) {
      return absl::InvalidArgumentError(absl::StrCat(name, ":", id + 1, ": duplicate token '", token, "' (first on line ",
                                                     vocab->whole.at(token) + 1, ")"));
    }
    vocab->max_whole_bytes = std::max(vocab->max_whole_bytes, token.size());
    if (token.size() > 2 && token.substr(0, 2) == "##") {
      vocab->suffix.emplace(token.substr(2), static_cast<int32_t>(id));
      vocab->max_suffix_bytes = std::max(vocab->max_suffix_bytes, token.size() - 2);
    }
  }
  for (size_t k = 0; k < kSpecialTokens.size(); ++k) {
    auto it = vocab->whole.find(kSpecialTokens[k]);
    if (it == vocab->whole.end()) {
      return absl::InvalidArgumentError(absl::StrCat(name, ": the vocabulary has no ", kSpecialTokens[k], " token"));
    }
    vocab->special_ids[k] = it->second;
  }
  vocab->unk_id = vocab->special_ids[1];
  for (int b = 0; b < 128; ++b) {
    vocab->ascii_isolate_id[b] = -1;
    if (IsPunctuation(b)) {
      std::vector<int32_t> ids;
      vocab->EncodeWord(std::string(1, static_cast<char>(b)), &ids);
      vocab->ascii_isolate_id[b] = ids[0];
    }
  }
  Table();  // build the character table now rather than inside the first Encode
  WordPieceTokenizer tokenizer(std::move(vocab));
  tokenizer.vocab_hash_ = Fnv1a64(contents);
  return tokenizer;
}

void WordPieceTokenizer::Encode(absl::string_view text, std::vector<int32_t>* ids) const {
  std::string word;
  word.reserve(64);
  // Special tokens are cut out of the raw text first; the pieces between are encoded on their own.
  size_t segment_start = 0;
  size_t search = 0;
  while (true) {
    const size_t bracket = text.find('[', search);
    if (bracket == absl::string_view::npos) break;
    search = bracket + 1;
    const absl::string_view rest = text.substr(bracket);
    for (size_t k = 0; k < kSpecialTokens.size(); ++k) {
      if (rest.substr(0, kSpecialTokens[k].size()) == kSpecialTokens[k]) {
        vocab_->EncodeSegment(text.substr(segment_start, bracket - segment_start), &word, ids);
        ids->push_back(vocab_->special_ids[k]);
        segment_start = search = bracket + kSpecialTokens[k].size();
        break;
      }
    }
  }
  vocab_->EncodeSegment(text.substr(segment_start), &word, ids);
}

std::vector<int32_t> WordPieceTokenizer::Encode(absl::string_view text) const {
  std::vector<int32_t> ids;
  Encode(text, &ids);
  return ids;
}

std::vector<std::string> WordPieceTokenizer::Tokenize(absl::string_view text) const {
  std::vector<std::string> tokens;
  for (int32_t id : Encode(text)) tokens.push_back(vocab_->tokens[id]);
  return tokens;
}

int32_t WordPieceTokenizer::vocab_size() const { return static_cast<int32_t>(vocab_->tokens.size()); }

const std::string& WordPieceTokenizer::token(int32_t id) const {
  LAMINA_CHECK(id >= 0 && id < vocab_size(), "token id ", id);
  return vocab_->tokens[id];
}

std::optional<int32_t> WordPieceTokenizer::FindToken(absl::string_view token) const {
  auto it = vocab_->whole.find(token);
  if (it == vocab_->whole.end()) return std::nullopt;
  return it->second;
}

}  // namespace lamina
