#include "data/glue.h"

#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "core/file_util.h"
#include "gtest/gtest.h"

namespace lamina {
namespace {

std::string GlueDir() {
  const char* dir = std::getenv("LAMINA_SOURCE_DIR");
  return absl::StrCat(dir != nullptr ? dir : ".", "/../shared/data/glue");
}

// Writes `contents` to a fresh temporary file, removed by the destructor.
class TempFile {
 public:
  explicit TempFile(absl::string_view contents) {
    static int counter = 0;
    path_ = absl::StrCat(std::filesystem::temp_directory_path().string(), "/lamina_glue_", getpid(), "_", counter++,
                         ".tsv");
    EXPECT_TRUE(WriteFileAtomic(path_, std::string(contents)).ok());
  }
  ~TempFile() { std::remove(path_.c_str()); }
  const std::string& path() const { return path_; }

 private:
  std::string path_;
};

void ExpectErrorAt(const absl::StatusOr<std::vector<GlueExample>>& r, const std::string& path, int line,
                   absl::string_view what) {
  ASSERT_FALSE(r.ok()) << "expected an error about " << what;
  const std::string where = absl::StrCat(path, ":", line, ":");
  EXPECT_NE(r.status().message().find(where), absl::string_view::npos) << r.status();
  EXPECT_NE(r.status().message().find(what), absl::string_view::npos) << r.status();
}

TEST(Glue, ReadsTheSharedSplitsWithTheirCounts) {
  if (!std::filesystem::exists(GlueDir())) GTEST_SKIP() << "no GLUE data at " << GlueDir();
  struct Split {
    GlueTask task;
    const char* split;
    size_t count;
    int ones;  // examples with label 1 (-1: unlabelled)
  };
  const Split splits[] = {{GlueTask::kMrpc, "train", 3668, 2474}, {GlueTask::kMrpc, "dev", 408, 279},
                          {GlueTask::kMrpc, "test", 1725, -1},    {GlueTask::kRte, "train", 2490, 1241},
                          {GlueTask::kRte, "dev", 277, 131},      {GlueTask::kRte, "test", 3000, -1}};
  for (const Split& s : splits) {
    auto examples = ReadGlueSplit(s.task, GlueDir(), s.split);
    ASSERT_TRUE(examples.ok()) << examples.status();
    EXPECT_EQ(examples->size(), s.count) << GlueTaskName(s.task) << " " << s.split;
    int ones = 0, unlabelled = 0;
    for (size_t i = 0; i < examples->size(); ++i) {
      const GlueExample& ex = (*examples)[i];
      ones += ex.label == 1;
      unlabelled += ex.label == -1;
      EXPECT_EQ(ex.index, static_cast<int64_t>(i)) << "indices run 0..n-1";
      EXPECT_FALSE(ex.text_a.empty());
      EXPECT_FALSE(ex.text_b.empty());
      EXPECT_EQ(ex.text_a.find('\t'), std::string::npos);
    }
    if (s.ones < 0) {
      EXPECT_EQ(unlabelled, static_cast<int>(s.count)) << GlueTaskName(s.task) << " " << s.split;
    } else {
      EXPECT_EQ(ones, s.ones) << GlueTaskName(s.task) << " " << s.split;
      EXPECT_EQ(unlabelled, 0);
    }
  }
  // The irregular RTE train row (an empty field before the label) keeps its label.
  auto rte = ReadGlueSplit(GlueTask::kRte, GlueDir(), "train");
  ASSERT_TRUE(rte.ok());
  const GlueExample& wargames = (*rte)[2164];
  EXPECT_EQ(wargames.line, 2166);
  EXPECT_EQ(wargames.text_b, "The film \"WarGames\" was shot in 1983.");
  EXPECT_EQ(wargames.label, 1);  // not_entailment
}

TEST(Glue, SkipsBomAndKeepsUnbalancedQuotes) {
  TempFile f(
      "\xef\xbb\xbfQuality\t#1 ID\t#2 ID\t#1 String\t#2 String\n"
      "1\t10\t11\tHe said \"hello.\tShe \"agreed\n"
      "0\t12\t13\t\"Open quote\tno close\n");
  auto r = ReadGlueTsv(GlueTask::kMrpc, f.path());
  ASSERT_TRUE(r.ok()) << r.status();
  ASSERT_EQ(r->size(), 2u);
  EXPECT_EQ((*r)[0].label, 1);
  EXPECT_EQ((*r)[0].text_a, "He said \"hello.");
  EXPECT_EQ((*r)[0].text_b, "She \"agreed");
  EXPECT_EQ((*r)[1].label, 0);
  EXPECT_EQ((*r)[1].text_a, "\"Open quote");
  EXPECT_EQ((*r)[1].line, 3);
}

TEST(Glue, ReadsMrpcTestIndexAndCrLf) {
  TempFile f("index\t#1 ID\t#2 ID\t#1 String\t#2 String\r\n0\t1\t2\ta\tb\r\n1\t3\t4\tc\td\r\n");
  auto r = ReadGlueTsv(GlueTask::kMrpc, f.path());
  ASSERT_TRUE(r.ok()) << r.status();
  ASSERT_EQ(r->size(), 2u);
  EXPECT_EQ((*r)[1].index, 1);
  EXPECT_EQ((*r)[1].label, -1);
  EXPECT_EQ((*r)[1].text_b, "d");
}

TEST(Glue, RteLabelComesFromTheLastField) {
  TempFile f(
      "index\tsentence1\tsentence2\tlabel\n"
      "0\tA man sleeps.\tA person sleeps.\tentailment\n"
      "1\tIt was shot in 1983.\tThe film \"X\" was shot in 1983.\t\tnot_entailment\n");
  auto r = ReadGlueTsv(GlueTask::kRte, f.path());
  ASSERT_TRUE(r.ok()) << r.status();
  ASSERT_EQ(r->size(), 2u);
  EXPECT_EQ((*r)[0].label, 0);
  EXPECT_EQ((*r)[1].label, 1);
  EXPECT_EQ((*r)[1].text_b, "The film \"X\" was shot in 1983.");
  TempFile test("index\tsentence1\tsentence2\n7\ta\tb\n");
  auto t = ReadGlueTsv(GlueTask::kRte, test.path());
  ASSERT_TRUE(t.ok()) << t.status();
  EXPECT_EQ((*t)[0].index, 7);
  EXPECT_EQ((*t)[0].label, -1);
}

TEST(Glue, MalformedRowsNameFileAndLine) {
  const std::string mrpc_header = "Quality\t#1 ID\t#2 ID\t#1 String\t#2 String\n";
  {
    TempFile f(mrpc_header + "1\t1\t2\ta\tb\n1\t1\t2\tonly four\n");
    ExpectErrorAt(ReadGlueTsv(GlueTask::kMrpc, f.path()), f.path(), 3, "expected 5 tab-separated fields, found 4");
  }
  {
    TempFile f(mrpc_header + "yes\t1\t2\ta\tb\n");
    ExpectErrorAt(ReadGlueTsv(GlueTask::kMrpc, f.path()), f.path(), 2, "Quality 0 or 1");
  }
  {
    TempFile f(mrpc_header + "1\t1\t2\ta\tb\n\n1\t1\t2\ta\tb\n");  // a blank line inside
    ExpectErrorAt(ReadGlueTsv(GlueTask::kMrpc, f.path()), f.path(), 3, "found 1");
  }
  {
    TempFile f("index\tsentence1\tsentence2\tlabel\n0\ta\tb\tmaybe\n");
    ExpectErrorAt(ReadGlueTsv(GlueTask::kRte, f.path()), f.path(), 2, "entailment or not_entailment");
  }
  {
    TempFile f("index\tsentence1\tsentence2\tlabel\n0\ta\tb\tstray\tentailment\n");
    ExpectErrorAt(ReadGlueTsv(GlueTask::kRte, f.path()), f.path(), 2, "non-empty field 4");
  }
  {
    TempFile f("index\tsentence1\tsentence2\tlabel\nx\ta\tb\tentailment\n");
    ExpectErrorAt(ReadGlueTsv(GlueTask::kRte, f.path()), f.path(), 2, "index");
  }
  {
    TempFile f("index\tsentence1\tsentence2\n0\ta\tb\tentailment\n");  // a label in a test file
    ExpectErrorAt(ReadGlueTsv(GlueTask::kRte, f.path()), f.path(), 2, "expected 3 tab-separated fields");
  }
  {
    TempFile f("sentence1\tsentence2\tlabel\n");
    ExpectErrorAt(ReadGlueTsv(GlueTask::kRte, f.path()), f.path(), 1, "RTE header");
  }
  {
    TempFile f(mrpc_header);
    ExpectErrorAt(ReadGlueTsv(GlueTask::kRte, f.path()), f.path(), 1, "RTE header");  // wrong task
  }
  {
    TempFile f("");
    auto r = ReadGlueTsv(GlueTask::kMrpc, f.path());
    ASSERT_FALSE(r.ok());
    EXPECT_NE(r.status().message().find("empty file"), absl::string_view::npos) << r.status();
  }
  EXPECT_FALSE(ReadGlueTsv(GlueTask::kMrpc, "/nonexistent/train.tsv").ok());
  EXPECT_FALSE(ReadGlueSplit(GlueTask::kMrpc, GlueDir(), "validation").ok());
  EXPECT_FALSE(ParseGlueTask("sst2").ok());
  EXPECT_EQ(*ParseGlueTask("RTE"), GlueTask::kRte);
  EXPECT_EQ(NumGlueLabels(GlueTask::kMrpc), 2);
}

TEST(Glue, LongestFirstTruncationRemovesFromTheLongerThenFromB) {
  auto cut = [](int64_t budget, int64_t a, int64_t b) {
    TruncateLongestFirst(budget, &a, &b);
    return std::make_pair(a, b);
  };
  EXPECT_EQ(cut(10, 3, 4), std::make_pair(int64_t{3}, int64_t{4}));  // fits
  EXPECT_EQ(cut(5, 5, 3), std::make_pair(int64_t{3}, int64_t{2}));   // a shrinks to 3, then the tie cuts b
  EXPECT_EQ(cut(4, 2, 10), std::make_pair(int64_t{2}, int64_t{2}));  // only the longer one shrinks
  EXPECT_EQ(cut(3, 4, 4), std::make_pair(int64_t{2}, int64_t{1}));   // ties take from b first
  EXPECT_EQ(cut(5, 3, 7), std::make_pair(int64_t{3}, int64_t{2}));   // b 7->3, then the tie cuts b again
  EXPECT_EQ(cut(5, 4, 4), std::make_pair(int64_t{3}, int64_t{2}));
  EXPECT_EQ(cut(0, 4, 4), std::make_pair(int64_t{0}, int64_t{0}));
}

TEST(Glue, EncodesPairsAsClsASepBSep) {
  auto tok = WordPieceTokenizer::FromVocabText(
      "[PAD]\n[UNK]\n[CLS]\n[SEP]\n[MASK]\nthe\ncat\nsat\non\nmat\na\ndog\nran\n.\n", "v.txt");
  ASSERT_TRUE(tok.ok()) << tok.status();
  std::vector<GlueExample> examples(2);
  examples[0].text_a = "The cat sat on the mat.";  // 5 6 7 8 5 9 13
  examples[0].text_b = "A dog ran.";               // 10 11 12 13
  examples[0].label = 1;
  examples[1].text_a = "cat";
  examples[1].text_b = "dog";
  examples[1].label = 0;
  const std::vector<TokenizedPair> pairs = TokenizePairs(*tok, examples);
  EXPECT_EQ(pairs[0].a, (std::vector<int32_t>{5, 6, 7, 8, 5, 9, 13}));
  EXPECT_EQ(pairs[0].b, (std::vector<int32_t>{10, 11, 12, 13}));

  // seq 10 leaves 7 content tokens for 7 + 4: a 7->6->5->4, then the tie cuts b to 3.
  const std::vector<int64_t> rows = {0, 1};
  EncoderBatch batch = MakePairBatch(*tok, pairs, rows, 10);
  EXPECT_EQ(batch.batch, 2);
  EXPECT_EQ(batch.seq, 10);
  EXPECT_EQ(std::vector<int32_t>(batch.input_ids.begin(), batch.input_ids.begin() + 10),
            (std::vector<int32_t>{2, 5, 6, 7, 8, 3, 10, 11, 12, 3}));
  EXPECT_EQ(std::vector<int32_t>(batch.token_types.begin(), batch.token_types.begin() + 10),
            (std::vector<int32_t>{0, 0, 0, 0, 0, 0, 1, 1, 1, 1}));
  // Row 1 is short: [CLS] cat [SEP] dog [SEP] then padding with type 0 and attention 0.
  EXPECT_EQ(std::vector<int32_t>(batch.input_ids.begin() + 10, batch.input_ids.end()),
            (std::vector<int32_t>{2, 6, 3, 11, 3, 0, 0, 0, 0, 0}));
  EXPECT_EQ(std::vector<int32_t>(batch.token_types.begin() + 10, batch.token_types.end()),
            (std::vector<int32_t>{0, 0, 0, 1, 1, 0, 0, 0, 0, 0}));
  EXPECT_EQ(std::vector<int32_t>(batch.attention_mask.begin() + 10, batch.attention_mask.end()),
            (std::vector<int32_t>{1, 1, 1, 1, 1, 0, 0, 0, 0, 0}));
  EXPECT_EQ(batch.labels, (std::vector<int32_t>{1, 0}));
  EXPECT_TRUE(batch.mlm_positions.empty());

  // The smallest row: only [CLS] [SEP] [SEP].
  EncoderBatch tiny = MakePairBatch(*tok, pairs, rows, 3);
  EXPECT_EQ(tiny.input_ids, (std::vector<int32_t>{2, 3, 3, 2, 3, 3}));
  EXPECT_EQ(tiny.token_types, (std::vector<int32_t>{0, 0, 1, 0, 0, 1}));
}

}  // namespace
}  // namespace lamina
