#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <map>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "core/file_util.h"
#include "data/text_reader.h"
#include "data/wordpiece.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"

namespace lamina {
namespace {

std::string SourceDir() {
  const char* dir = std::getenv("LAMINA_SOURCE_DIR");
  return dir != nullptr ? dir : ".";
}
std::string SharedData() { return SourceDir() + "/../shared/data"; }
std::string BertVocabPath() { return SharedData() + "/vocab/bert-base-uncased-vocab.txt"; }

// A small vocabulary for the rule-by-rule tests, so they run without the shared data.
constexpr const char* kTinyVocab =
    "[PAD]\n[UNK]\n[CLS]\n[SEP]\n[MASK]\n"  // 0-4
    "the\nquick\nfox\nun\n##aff\n##able\n##a\n##ff\n"  // 5-12
    ",\n.\n!\n$\n+\n^\n`\n|\n[\n]\n"  // 13-22
    "a\nb\nab\n##b\ncafe\nhello\nworld\n"  // 23-29
    "中\n–\n¿\nж\n##ж\ne\n##e\nmask\n"  // 30-37
    "σ\n##σ\n";  // 38-39

WordPieceTokenizer Tiny() {
  absl::StatusOr<WordPieceTokenizer> t = WordPieceTokenizer::FromVocabText(kTinyVocab, "tiny.txt");
  EXPECT_TRUE(t.ok()) << t.status();
  return *std::move(t);
}

std::string Joined(const WordPieceTokenizer& t, absl::string_view text) { return absl::StrJoin(t.Tokenize(text), " "); }

std::string TempPath(absl::string_view stem) {
  return absl::StrCat(std::filesystem::temp_directory_path().string(), "/lamina_tok_", getpid(), "_", stem);
}

TEST(WordPiece, LoadsVocabAndSpecialIds) {
  WordPieceTokenizer t = Tiny();
  EXPECT_EQ(t.vocab_size(), 40);
  EXPECT_EQ(t.pad_id(), 0);
  EXPECT_EQ(t.unk_id(), 1);
  EXPECT_EQ(t.cls_id(), 2);
  EXPECT_EQ(t.sep_id(), 3);
  EXPECT_EQ(t.mask_id(), 4);
  for (int32_t id = 0; id < 5; ++id) EXPECT_TRUE(t.IsSpecial(id)) << id;
  EXPECT_FALSE(t.IsSpecial(5));
  EXPECT_EQ(t.token(9), "##aff");
  EXPECT_EQ(t.FindToken("##aff"), 9);
  EXPECT_EQ(t.FindToken("aff"), std::nullopt);
}

TEST(WordPiece, VocabHashIsFnv1aOfTheFileBytes) {
  // FNV-1a 64 of "a" is 0xaf63dc4c8601ec8c; a vocab whose only difference is one byte hashes apart.
  std::string vocab = "[PAD]\n[UNK]\n[CLS]\n[SEP]\n[MASK]\n";
  uint64_t h = 0xcbf29ce484222325ull;
  for (unsigned char b : vocab) h = (h ^ b) * 0x100000001b3ull;
  EXPECT_EQ(WordPieceTokenizer::FromVocabText(vocab, "v")->vocab_hash(), h);
  EXPECT_NE(WordPieceTokenizer::FromVocabText(vocab + "a\n", "v")->vocab_hash(),
            WordPieceTokenizer::FromVocabText(vocab + "b\n", "v")->vocab_hash());
  uint64_t ha = (0xcbf29ce484222325ull ^ 'a') * 0x100000001b3ull;
  EXPECT_EQ(ha, 0xaf63dc4c8601ec8cull);
}

TEST(WordPiece, LoadErrorsNameFileAndLine) {
  auto dup = WordPieceTokenizer::FromVocabText("[PAD]\n[UNK]\n[CLS]\n[SEP]\n[MASK]\nx\nx\n", "v.txt");
  ASSERT_FALSE(dup.ok());
  EXPECT_NE(dup.status().message().find("v.txt:7"), absl::string_view::npos) << dup.status();
  auto empty = WordPieceTokenizer::FromVocabText("[PAD]\n\n[UNK]\n", "v.txt");
  ASSERT_FALSE(empty.ok());
  EXPECT_NE(empty.status().message().find("v.txt:2: empty"), absl::string_view::npos) << empty.status();
  auto bad = WordPieceTokenizer::FromVocabText("[PAD]\n[UNK]\n[CLS]\n[SEP]\n[MASK]\n\xff\n", "v.txt");
  ASSERT_FALSE(bad.ok());
  EXPECT_NE(bad.status().message().find("v.txt:6: invalid UTF-8"), absl::string_view::npos) << bad.status();
  auto no_mask = WordPieceTokenizer::FromVocabText("[PAD]\n[UNK]\n[CLS]\n[SEP]\n", "v.txt");
  ASSERT_FALSE(no_mask.ok());
  EXPECT_NE(no_mask.status().message().find("[MASK]"), absl::string_view::npos) << no_mask.status();
  auto missing = WordPieceTokenizer::Load("/nonexistent/vocab.txt");
  ASSERT_FALSE(missing.ok());
  EXPECT_NE(missing.status().message().find("/nonexistent/vocab.txt"), absl::string_view::npos) << missing.status();
  // CRLF line ends and a missing final newline are accepted.
  auto crlf = WordPieceTokenizer::FromVocabText("[PAD]\r\n[UNK]\r\n[CLS]\r\n[SEP]\r\n[MASK]", "v.txt");
  ASSERT_TRUE(crlf.ok()) << crlf.status();
  EXPECT_EQ(crlf->mask_id(), 4);
}

TEST(WordPiece, GreedyLongestMatchFirst) {
  WordPieceTokenizer t = Tiny();
  EXPECT_EQ(Joined(t, "unaffable"), "un ##aff ##able");  // ##aff beats ##a + ##ff
  EXPECT_EQ(Joined(t, "the quick fox"), "the quick fox");
  EXPECT_EQ(Joined(t, "abb"), "ab ##b");
  // A word that cannot be covered becomes one [UNK], even when a prefix matched.
  EXPECT_EQ(Joined(t, "the unaffablez fox"), "the [UNK] fox");
  EXPECT_EQ(Joined(t, "zzz"), "[UNK]");
  std::vector<int32_t> ids = {42};
  t.Encode("the fox", &ids);  // appends
  EXPECT_EQ(ids, (std::vector<int32_t>{42, 5, 7}));
}

TEST(WordPiece, WordsOfMoreThan100CodePointsAreUnknown) {
  WordPieceTokenizer t = Tiny();
  std::string a100(100, 'a'), a101(101, 'a');
  EXPECT_EQ(t.Encode(a100).size(), 1u + 99u);  // a ##a ##a ...
  EXPECT_EQ(t.Encode(a101), std::vector<int32_t>{1});
  // The limit counts code points of the normalized word, not bytes.
  std::string zh100, zh101;
  for (int i = 0; i < 100; ++i) zh100 += "ж";
  zh101 = zh100 + "ж";
  EXPECT_EQ(t.Encode(zh100).size(), 100u);
  EXPECT_EQ(t.Encode(zh101), std::vector<int32_t>{1});
  // Accents are stripped before counting: 100 x (e + U+0301) is 100 code points.
  std::string e100, e101;
  for (int i = 0; i < 100; ++i) e100 += "e\xcc\x81";
  e101 = e100 + "e\xcc\x81";
  EXPECT_EQ(t.Encode(e100).size(), 100u);
  EXPECT_EQ(t.Encode(e101), std::vector<int32_t>{1});
}

TEST(WordPiece, LowerCasesAndStripsAccents) {
  WordPieceTokenizer t = Tiny();
  EXPECT_EQ(Joined(t, "The QUICK Fox"), "the quick fox");
  EXPECT_EQ(Joined(t, "CAFÉ Café café"), "cafe cafe cafe");
  EXPECT_EQ(Joined(t, "cafe\xcc\x81"), "cafe");  // decomposed accent
  EXPECT_EQ(Joined(t, "ΣΣ"), "σ ##σ");          // no final-sigma rule, as the reference
  EXPECT_EQ(Joined(t, "Ж"), "ж");
}

TEST(WordPiece, SplitsPunctuation) {
  WordPieceTokenizer t = Tiny();
  EXPECT_EQ(Joined(t, "hello,world!"), "hello , world !");
  EXPECT_EQ(Joined(t, "a–b ¿a"), "a – b ¿ a");  // Unicode Pd and Po
  // ASCII symbols that are not Unicode punctuation still split: $ (Sc) + (Sm) ^ ` (Sk) | (Sm).
  EXPECT_EQ(Joined(t, "a$b+a^b`a|b"), "a $ b + a ^ b ` a | b");
  EXPECT_EQ(Joined(t, "..."), ". . .");
}

TEST(WordPiece, CleansWhitespaceAndControls) {
  WordPieceTokenizer t = Tiny();
  EXPECT_EQ(Joined(t, "a\tb\na\rb"), "a b a b");
  EXPECT_EQ(Joined(t, "a\xc2\xa0" "b a\xe3\x80\x80" "b a\xe2\x80\xa8" "b"), "a b a b a b");  // NBSP, U+3000, U+2028
  // Dropped characters do not split the word: NUL, BEL, DEL, U+0085, U+200B, U+FEFF, U+FFFD, U+E000.
  EXPECT_EQ(Joined(t, std::string("a\0b", 3)), "ab");
  EXPECT_EQ(Joined(t, "a\x07" "b a\x7f" "b a\xc2\x85" "b"), "ab ab ab");
  EXPECT_EQ(Joined(t, "a\xe2\x80\x8b" "b a\xef\xbb\xbf" "b a\xef\xbf\xbd" "b a\xee\x80\x80" "b"), "ab ab ab ab");
  EXPECT_EQ(Joined(t, "   "), "");
  EXPECT_EQ(Joined(t, ""), "");
}

TEST(WordPiece, IsolatesCjkIdeographs) {
  WordPieceTokenizer t = Tiny();
  EXPECT_EQ(Joined(t, "ab中ab"), "ab 中 ab");
  EXPECT_EQ(Joined(t, "中中"), "中 中");
}

TEST(WordPiece, SpecialTokensInTextStayWhole) {
  WordPieceTokenizer t = Tiny();
  EXPECT_EQ(Joined(t, "the [MASK] fox"), "the [MASK] fox");
  EXPECT_EQ(Joined(t, "a[MASK]b"), "a [MASK] b");
  EXPECT_EQ(Joined(t, "[CLS]a[SEP]b[SEP][PAD][UNK]"), "[CLS] a [SEP] b [SEP] [PAD] [UNK]");
  EXPECT_EQ(Joined(t, "[[MASK]]"), "[ [MASK] ]");
  // Case-sensitive, and only when written exactly.
  EXPECT_EQ(Joined(t, "[mask]"), "[ mask ]");
  EXPECT_EQ(Joined(t, "[MASK"), "[ mask");
  EXPECT_EQ(Joined(t, std::string("[MA\0SK]", 7)), "[ mask ]");
}

TEST(WordPiece, InvalidUtf8IsDroppedWithoutSplitting) {
  WordPieceTokenizer t = Tiny();
  EXPECT_EQ(Joined(t, "a\x80" "b"), "ab");                  // lone continuation byte
  EXPECT_EQ(Joined(t, "a\xe4\xb8" "b"), "ab");              // truncated 3-byte sequence
  EXPECT_EQ(Joined(t, "ab\xe4\xb8"), "ab");                 // truncated at the end
  EXPECT_EQ(Joined(t, "ab\xf0"), "ab");                     // lone lead byte at the end
  EXPECT_EQ(Joined(t, "a\xc0\xaf" "b"), "ab");              // overlong '/', not punctuation
  EXPECT_EQ(Joined(t, "a\xe0\x80\xaf" "b"), "ab");          // 3-byte overlong '/'
  EXPECT_EQ(Joined(t, "a\xf0\x80\x80\xaf" "b"), "ab");      // 4-byte overlong '/'
  EXPECT_EQ(Joined(t, "a\xed\xa0\x80" "b"), "ab");          // UTF-16 surrogate U+D800
  EXPECT_EQ(Joined(t, "a\xf4\x90\x80\x80" "b"), "ab");      // above U+10FFFF
  EXPECT_EQ(Joined(t, "a\xff\xfe" "b"), "ab");              // never valid bytes
  EXPECT_EQ(Joined(t, "a\xe4" "中b"), "a 中 b");            // bad lead byte, then a valid character
  // Random bytes never crash and give ids in range.
  std::mt19937 rng(7);
  for (int round = 0; round < 2000; ++round) {
    std::string s(rng() % 40, '\0');
    for (char& ch : s) ch = static_cast<char>(rng() & 0xFF);
    for (int32_t id : t.Encode(s)) ASSERT_TRUE(id >= 0 && id < t.vocab_size());
  }
}

TEST(WordPiece, ConcurrentEncodesAgree) {
  WordPieceTokenizer t = Tiny();
  const std::string text = "the quick FOX, unaffable! a[MASK]b café 中 ab";
  const std::vector<int32_t> expect = t.Encode(text);
  std::vector<std::thread> threads;
  std::vector<int> mismatches(4, 0);
  for (int k = 0; k < 4; ++k) {
    threads.emplace_back([&, k] {
      WordPieceTokenizer copy = t;  // copies share the vocabulary
      for (int i = 0; i < 2000; ++i) mismatches[k] += (k % 2 ? copy : t).Encode(text) != expect;
    });
  }
  for (auto& th : threads) th.join();
  for (int k = 0; k < 4; ++k) EXPECT_EQ(mismatches[k], 0) << "thread " << k;
}

std::string Escaped(absl::string_view s) {
  std::string out;
  for (unsigned char c : s) {
    if (c < 0x20 || c == 0x7f) {
      absl::StrAppend(&out, "\\x", absl::Hex(c, absl::kZeroPad2));
    } else {
      out.push_back(static_cast<char>(c));
    }
  }
  return out;
}

// The text the fixture generator builds for a code point sweep (see make_tokenizer_ref.py).
std::string CodepointText(int32_t first, int32_t last) {
  std::string s;
  for (int32_t c = first; c <= last; ++c) {
    if (c >= 0xD800 && c <= 0xDFFF) continue;
    std::string ch;
    if (c < 0x80) {
      ch = std::string(1, static_cast<char>(c));
    } else if (c < 0x800) {
      ch = {static_cast<char>(0xC0 | c >> 6), static_cast<char>(0x80 | (c & 0x3F))};
    } else if (c < 0x10000) {
      ch = {static_cast<char>(0xE0 | c >> 12), static_cast<char>(0x80 | (c >> 6 & 0x3F)),
            static_cast<char>(0x80 | (c & 0x3F))};
    } else {
      ch = {static_cast<char>(0xF0 | c >> 18), static_cast<char>(0x80 | (c >> 12 & 0x3F)),
            static_cast<char>(0x80 | (c >> 6 & 0x3F)), static_cast<char>(0x80 | (c & 0x3F))};
    }
    absl::StrAppend(&s, "x", ch, "x ", ch, " ");
  }
  return s;
}

// GLUE text is not in the fixture (licence): line `line` (1-based), tab column `col` of the file.
class GlueCells {
 public:
  const std::string* Cell(const std::string& rel, int line, int col) {
    auto it = files_.find(rel);
    if (it == files_.end()) {
      std::vector<std::string> lines;
      absl::StatusOr<std::string> contents = ReadFile(SharedData() + "/" + rel);
      if (contents.ok()) {
        absl::string_view text = *contents;
        if (absl::StartsWith(text, "\xef\xbb\xbf")) text.remove_prefix(3);
        lines = absl::StrSplit(text, '\n');
      }
      it = files_.emplace(rel, std::move(lines)).first;
    }
    if (line < 1 || line > static_cast<int>(it->second.size())) return nullptr;
    std::vector<std::string> fields = absl::StrSplit(it->second[line - 1], '\t');
    if (col >= static_cast<int>(fields.size())) return nullptr;
    cell_ = fields[col];
    return &cell_;
  }

 private:
  std::map<std::string, std::vector<std::string>> files_;
  std::string cell_;
};

TEST(WordPiece, MatchesHuggingFaceTokenizersOnReferenceFixture) {
  if (!std::filesystem::exists(BertVocabPath())) GTEST_SKIP() << "no BERT vocab at " << BertVocabPath();
  absl::StatusOr<WordPieceTokenizer> t = WordPieceTokenizer::Load(BertVocabPath());
  ASSERT_TRUE(t.ok()) << t.status();
  auto reader = TextReader::Open(SourceDir() + "/tests/fixtures/tokenizer_ref.jsonl.xz");
  ASSERT_TRUE(reader.ok()) << reader.status();
  GlueCells glue;
  std::map<std::string, int> checked, failed;
  int glue_missing = 0;
  std::string line;
  while (true) {
    absl::StatusOr<bool> more = (*reader)->ReadLine(&line);
    ASSERT_TRUE(more.ok()) << more.status();
    if (!*more) break;
    const nlohmann::json record = nlohmann::json::parse(line);
    const std::string src = record.at("src");
    std::string text, where;
    if (src == "text") {
      text = record.at("text");
      where = absl::StrCat(record.at("what").get<std::string>(), " '", Escaped(text.substr(0, 200)), "'");
    } else if (src == "glue") {
      const std::string rel = record.at("file");
      const std::string* cell = glue.Cell(rel, record.at("line"), record.at("col"));
      if (cell == nullptr) {
        ++glue_missing;
        continue;
      }
      text = *cell;
      where = absl::StrCat(rel, ":", record.at("line").get<int>(), " column ", record.at("col").get<int>());
    } else if (src == "bytes") {
      const std::string hex = record.at("hex");
      ASSERT_EQ(hex.size() % 2, 0u);
      for (size_t i = 0; i < hex.size(); i += 2) text.push_back(static_cast<char>(std::stoi(hex.substr(i, 2), nullptr, 16)));
      where = absl::StrCat("bytes ", hex);
    } else {
      ASSERT_EQ(src, "codepoints");
      text = CodepointText(record.at("first"), record.at("last"));
      where = absl::StrCat("code points U+", absl::Hex(record.at("first").get<int>()), "..U+",
                           absl::Hex(record.at("last").get<int>()));
    }
    const std::vector<int32_t> expect = record.at("ids").get<std::vector<int32_t>>();
    const std::vector<int32_t> got = t->Encode(text);
    ++checked[src];
    if (got != expect) {
      if (++failed[src] <= 10) {
        size_t i = 0;
        while (i < got.size() && i < expect.size() && got[i] == expect[i]) ++i;
        auto around = [&](const std::vector<int32_t>& ids) {
          std::string s;
          for (size_t k = i >= 3 ? i - 3 : 0; k < std::min(ids.size(), i + 5); ++k) absl::StrAppend(&s, t->token(ids[k]), " ");
          return s;
        };
        ADD_FAILURE() << where << ": first difference at token " << i << ": expected [" << around(expect)
                      << "] got [" << around(got) << "]";
      }
    }
  }
  for (const auto& [src, n] : checked) {
    EXPECT_EQ(failed[src], 0) << src << ": " << failed[src] << " of " << n << " records differ";
  }
  EXPECT_GE(checked["text"], 3000);
  EXPECT_GE(checked["codepoints"], 700);
  EXPECT_GE(checked["bytes"], 300);
  if (glue_missing > 0) {
    std::printf("note: %d GLUE records not checked: GLUE files absent under %s\n", glue_missing, SharedData().c_str());
  } else {
    EXPECT_GE(checked["glue"], 5000);
  }
}

// `lamina tokenize` prints one line per input line, matching the library.
TEST(WordPiece, TokenizeCommandMatchesLibrary) {
  const char* binary = std::getenv("LAMINA_BINARY");
  if (binary == nullptr || !std::filesystem::exists(binary)) GTEST_SKIP() << "LAMINA_BINARY not set or not built";
  const std::string vocab_path = TempPath("vocab.txt");
  ASSERT_TRUE(WriteFileAtomic(vocab_path, kTinyVocab).ok());
  WordPieceTokenizer t = Tiny();
  const std::vector<std::string> lines = {"the quick fox", "", "unaffable, a[MASK]b", "   ", "zzz café",
                                          std::string("a\0b", 3), "last line without newline"};
  const std::string input_path = TempPath("input.txt");
  ASSERT_TRUE(WriteFileAtomic(input_path, absl::StrJoin(lines, "\n")).ok());
  for (const bool ids : {true, false}) {
    const std::string output_path = TempPath("output.txt");
    const std::string cmd = absl::StrCat(binary, " tokenize --vocab=", vocab_path, ids ? " --ids" : " --tokens", " < ",
                                         input_path, " > ", output_path);
    ASSERT_EQ(std::system(cmd.c_str()), 0) << cmd;
    absl::StatusOr<std::string> out = ReadFile(output_path);
    ASSERT_TRUE(out.ok()) << out.status();
    std::string expect;
    for (const std::string& l : lines) {
      absl::StrAppend(&expect, ids ? absl::StrJoin(t.Encode(l), " ") : absl::StrJoin(t.Tokenize(l), " "), "\n");
    }
    EXPECT_EQ(*out, expect) << (ids ? "--ids" : "--tokens");
    std::remove(output_path.c_str());
  }
  // A missing vocab is a user error with a non-zero exit.
  const std::string bad = absl::StrCat(binary, " tokenize --vocab=/nonexistent/v.txt < ", input_path, " > /dev/null 2>&1");
  EXPECT_NE(std::system(bad.c_str()), 0);
  std::remove(vocab_path.c_str());
  std::remove(input_path.c_str());
}

}  // namespace
}  // namespace lamina
