#include "data/prepare.h"

#include <sys/wait.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <map>
#include <set>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "core/file_util.h"
#include "core/philox.h"
#include "data/dataset.h"
#include "gtest/gtest.h"
#include "data/text_check.h"
#include "tests/data/mlm_test_util.h"

namespace lamina {
namespace {

using datatest::TempDir;
using Row = std::vector<int32_t>;

constexpr int kSeqLen = 16;

// The corpus: 40 plain documents, 30 WikiExtractor documents (xz), 30 plain documents (gz).
struct Corpus {
  TempDir dir;
  std::vector<std::string> docs;  // every document's text, in input order
  std::vector<std::string> files;

  Corpus() {
    const std::vector<std::string> a = datatest::SyntheticDocs(40, 1), b = datatest::SyntheticDocs(30, 2),
                                    c = datatest::SyntheticDocs(30, 3);
    datatest::WritePlain(dir.path("a.txt"), datatest::PlainCorpus(a));
    datatest::WriteXz(dir.path("b.txt.xz"), datatest::WikiCorpus(b, 100));
    datatest::WriteGz(dir.path("c.txt.gz"), datatest::PlainCorpus(c));
    files = {dir.path("a.txt"), dir.path("b.txt.xz"), dir.path("c.txt.gz")};
    for (const auto* part : {&a, &b, &c}) docs.insert(docs.end(), part->begin(), part->end());
  }
};

PrepareOptions Options(const Corpus& corpus, const std::string& out) {
  PrepareOptions o;
  o.inputs = corpus.files;
  o.out_dir = out;
  o.seq_len = kSeqLen;
  o.val_docs = 7;
  o.threads = 2;
  o.sequences_per_shard = 50;
  o.progress = false;
  return o;
}

// The rows a document must become: [CLS] piece [SEP] [PAD]..., pieces of seq_len - 2 tokens.
std::vector<Row> ExpectedRows(const WordPieceTokenizer& tok, const std::string& text) {
  std::vector<Row> rows;
  const std::vector<int32_t> ids = tok.Encode(text);
  for (size_t b = 0; b < ids.size(); b += kSeqLen - 2) {
    Row r = {tok.cls_id()};
    for (size_t i = b; i < std::min(ids.size(), b + kSeqLen - 2); ++i) r.push_back(ids[i]);
    r.push_back(tok.sep_id());
    r.resize(kSeqLen, tok.pad_id());
    rows.push_back(r);
  }
  return rows;
}

std::vector<Row> Rows(const TokenSplit& split) {
  std::vector<Row> rows(static_cast<size_t>(split.num_sequences()), Row(kSeqLen));
  for (int64_t i = 0; i < split.num_sequences(); ++i) split.CopyRow(i, rows[i].data());
  return rows;
}

TEST(Prepare, RoundTripKeepsDocumentsWholeAndHoldsOutTheSmallestKeys) {
  Corpus corpus;
  TempDir out;
  const WordPieceTokenizer tok = datatest::TinyTokenizer();
  absl::StatusOr<Manifest> m = PrepareCorpus(tok, Options(corpus, out.path("ds")));
  ASSERT_TRUE(m.ok()) << m.status();
  absl::StatusOr<std::shared_ptr<const MlmDataset>> ds = MlmDataset::Open(out.path("ds"), {.expected_vocab_hash = tok.vocab_hash()});
  ASSERT_TRUE(ds.ok()) << ds.status();

  // The held-out documents are the 7 with the smallest keys, written in document order.
  std::vector<std::pair<uint64_t, int>> keys;
  for (int n = 0; n < static_cast<int>(corpus.docs.size()); ++n) {
    const uint64_t key = static_cast<uint64_t>(PhiloxAt(kHoldoutSeed, kHoldoutStream, 2 * n)) << 32 |
                         PhiloxAt(kHoldoutSeed, kHoldoutStream, 2 * n + 1);
    keys.push_back({key, n});
  }
  std::sort(keys.begin(), keys.end());
  std::set<int> val_docs;
  for (int i = 0; i < 7; ++i) val_docs.insert(keys[i].second);
  std::vector<Row> want_val, want_train;
  int64_t train_tokens = 0;
  for (int n = 0; n < static_cast<int>(corpus.docs.size()); ++n) {
    const std::vector<Row> rows = ExpectedRows(tok, corpus.docs[n]);
    auto& dst = val_docs.count(n) ? want_val : want_train;
    dst.insert(dst.end(), rows.begin(), rows.end());
    if (!val_docs.count(n)) train_tokens += static_cast<int64_t>(tok.Encode(corpus.docs[n]).size());
  }
  EXPECT_EQ(Rows((*ds)->val()), want_val);
  // Train rows are the remaining documents' rows, each document's rows consecutive and in order;
  // documents displaced from the hold-out candidates come later, so compare as a multiset.
  std::vector<Row> got_train = Rows((*ds)->train());
  std::sort(got_train.begin(), got_train.end());
  std::sort(want_train.begin(), want_train.end());
  EXPECT_EQ(got_train, want_train);

  EXPECT_EQ(m->train.documents, 93);
  EXPECT_EQ(m->val.documents, 7);
  EXPECT_EQ(m->train.sequences, static_cast<int64_t>(want_train.size()));
  EXPECT_EQ(m->val.sequences, static_cast<int64_t>(want_val.size()));
  EXPECT_EQ(m->train.tokens, train_tokens);
  EXPECT_EQ(m->train.tokens + 2 * m->train.sequences + m->train.padding, m->train.sequences * kSeqLen);
  EXPECT_EQ(m->train.shards.size(), static_cast<size_t>((m->train.sequences + 49) / 50));
  EXPECT_EQ(m->dtype, ShardDtype::kUint16);
  ASSERT_EQ(m->sources.size(), 3u);
  EXPECT_EQ(m->sources[0].compression, "plain");
  EXPECT_EQ(m->sources[1].compression, "xz");
  EXPECT_EQ(m->sources[1].layout, "wikiextractor");
  EXPECT_EQ(m->sources[2].compression, "gzip");
  EXPECT_EQ(m->sources[2].documents, 30);
  EXPECT_EQ(m->sources[1].bytes, std::filesystem::file_size(corpus.files[1]));

  // The manifest on disk parses back to the returned one.
  absl::StatusOr<Manifest> reread = Manifest::Parse(*ReadFile(out.path("ds/manifest.json")), "manifest.json");
  ASSERT_TRUE(reread.ok()) << reread.status();
  EXPECT_EQ(reread->ToJson(), m->ToJson());
}

std::map<std::string, std::string> DirContents(const std::string& dir) {
  std::map<std::string, std::string> files;
  for (const auto& e : std::filesystem::directory_iterator(dir)) files[e.path().filename().string()] = *ReadFile(e.path().string());
  return files;
}

TEST(Prepare, OutputIsByteIdenticalAcrossRunsAndThreadCounts) {
  Corpus corpus;
  TempDir out;
  const WordPieceTokenizer tok = datatest::TinyTokenizer();
  std::vector<std::map<std::string, std::string>> runs;
  for (int threads : {1, 3, 1}) {
    PrepareOptions o = Options(corpus, out.path(absl::StrCat("t", threads)));
    o.threads = threads;
    ASSERT_TRUE(PrepareCorpus(tok, o).ok());
    runs.push_back(DirContents(o.out_dir));
  }
  ASSERT_GT(runs[0].size(), 3u);
  EXPECT_EQ(runs[0], runs[1]);
  EXPECT_EQ(runs[0], runs[2]);
  // Re-preparing into the same directory with larger shards replaces the dataset and leaves no
  // stale shard behind.
  PrepareOptions o = Options(corpus, out.path("t1"));
  o.sequences_per_shard = 100000;
  ASSERT_TRUE(PrepareCorpus(tok, o).ok());
  std::map<std::string, std::string> now = DirContents(o.out_dir);
  EXPECT_EQ(now.size(), 3u);  // manifest, train-00000.bin, val-00000.bin
  EXPECT_TRUE(MlmDataset::Open(o.out_dir).ok());
}

TEST(Prepare, LimitsStopAtDocumentBoundaries) {
  Corpus corpus;
  TempDir out;
  const WordPieceTokenizer tok = datatest::TinyTokenizer();
  PrepareOptions o = Options(corpus, out.path("docs"));
  o.max_docs = 45;  // all of a.txt and 5 documents of b.txt.xz
  absl::StatusOr<Manifest> m = PrepareCorpus(tok, o);
  ASSERT_TRUE(m.ok()) << m.status();
  EXPECT_EQ(m->train.documents + m->val.documents, 45);
  ASSERT_EQ(m->sources.size(), 2u);
  EXPECT_EQ(m->sources[1].documents, 5);

  o.max_docs = 0;
  o.max_bytes = 1;  // stops after the first document
  o.val_docs = 0;
  o.out_dir = out.path("bytes");
  m = PrepareCorpus(tok, o);
  ASSERT_TRUE(m.ok()) << m.status();
  EXPECT_EQ(m->train.documents, 1);
  EXPECT_EQ(m->val.documents, 0);
  EXPECT_TRUE(m->val.shards.empty());
}

TEST(Prepare, UserErrorsAreReported) {
  Corpus corpus;
  TempDir out;
  const WordPieceTokenizer tok = datatest::TinyTokenizer();
  PrepareOptions o = Options(corpus, out.path("x"));
  o.val_docs = 100;
  absl::Status s = PrepareCorpus(tok, o).status();
  EXPECT_TRUE(absl::StrContains(s.message(), "--val-docs 100")) << s;
  o.val_docs = 1;
  o.inputs.push_back(corpus.dir.path("missing.txt"));
  s = PrepareCorpus(tok, o).status();
  EXPECT_TRUE(absl::StrContains(s.message(), "missing.txt")) << s;
  o.inputs.pop_back();
  o.seq_len = 2;
  EXPECT_FALSE(PrepareCorpus(tok, o).ok());
}

// An empty input is an error rather than an empty dataset, and so is a binary file, named with
// the offset of its first byte that is not UTF-8 text; a few stray bytes in text are tolerated.
TEST(Prepare, EmptyAndBinaryInputsAreRefused) {
  Corpus corpus;
  TempDir out;
  const WordPieceTokenizer tok = datatest::TinyTokenizer();
  PrepareOptions o = Options(corpus, out.path("x"));
  o.val_docs = 0;
  datatest::WritePlain(corpus.dir.path("empty.txt"), "");
  o.inputs = {corpus.dir.path("empty.txt")};
  absl::Status s = PrepareCorpus(tok, o).status();
  EXPECT_TRUE(absl::StrContains(s.message(), "empty.txt: no non-empty documents")) << s;

  std::string binary = "w1 w2 w3\n";
  for (int i = 0; i < 8192; ++i) binary.push_back(static_cast<char>((i * 131 + 7) % 256));
  datatest::WritePlain(corpus.dir.path("binary.bin"), binary);
  o.inputs = {corpus.dir.path("binary.bin")};
  s = PrepareCorpus(tok, o).status();
  EXPECT_TRUE(absl::StrContains(s.message(), "binary.bin: not UTF-8 text")) << s;
  EXPECT_TRUE(absl::StrContains(s.message(), "the first at byte offset 10")) << s;

  std::string mostly_text = datatest::PlainCorpus(datatest::SyntheticDocs(40, 5));
  mostly_text.insert(100, "\xff\xfe");
  datatest::WritePlain(corpus.dir.path("stray.txt"), mostly_text);
  o.inputs = {corpus.dir.path("stray.txt")};
  EXPECT_TRUE(PrepareCorpus(tok, o).ok());
}

TEST(TextCheck, CountsInvalidUtf8AndNulBytes) {
  TextCheck ok("ok");
  ok.Add("plain ascii, caf\xc3\xa9, \xe6\x97\xa5\xe6\x9c\xac");
  EXPECT_EQ(ok.bad_bytes(), 0u);
  EXPECT_TRUE(ok.Check(true).ok());
  TextCheck few("few");
  few.Add(std::string("ab\0c\xc3(", 6));  // a NUL and a truncated two-byte sequence
  EXPECT_EQ(few.bad_bytes(), 2u);
  EXPECT_EQ(few.bytes(), 7u);  // with the newline
  EXPECT_TRUE(few.Check(true).ok()) << "a few stray bytes are tolerated";
  TextCheck bad("bad");
  bad.Add(std::string("ab\0c\xc3(\xff\xff\xff\xff\xff\xff\xff\xff", 14));
  EXPECT_EQ(bad.bad_bytes(), 10u);
  EXPECT_TRUE(bad.Check(false).ok()) << "fewer than kMinBytes: judged at the end";
  const absl::Status s = bad.Check(true);
  EXPECT_TRUE(absl::StrContains(s.message(), "bad: not UTF-8 text: 10 of the first 15 bytes")) << s;
  EXPECT_TRUE(absl::StrContains(s.message(), "byte offset 2")) << s;
}

// A prepared dataset whose files the rejection tests then damage.
class DamagedShard : public ::testing::Test {
 protected:
  void SetUp() override {
    PrepareOptions o = Options(corpus_, out_.path("ds"));
    ASSERT_TRUE(PrepareCorpus(tok_, o).ok());
    shard_ = out_.path("ds/train-00001.bin");
    bytes_ = *ReadFile(shard_);
  }
  void Damage(const std::string& bytes) { ASSERT_TRUE(WriteFileAtomic(shard_, bytes).ok()); }
  // Opening fails with a message naming the shard and containing `what`.
  void ExpectRejected(const std::string& what, const DatasetOptions& options = {}) {
    absl::StatusOr<std::shared_ptr<const MlmDataset>> ds = MlmDataset::Open(out_.path("ds"), options);
    ASSERT_FALSE(ds.ok());
    EXPECT_TRUE(absl::StrContains(ds.status().message(), "train-00001.bin")) << ds.status();
    EXPECT_TRUE(absl::StrContains(ds.status().message(), what)) << ds.status();
  }

  Corpus corpus_;
  TempDir out_;
  WordPieceTokenizer tok_ = datatest::TinyTokenizer();
  std::string shard_, bytes_;
};

TEST_F(DamagedShard, IntactOpens) { EXPECT_TRUE(MlmDataset::Open(out_.path("ds")).ok()); }

TEST_F(DamagedShard, TruncatedIsRejected) {
  Damage(bytes_.substr(0, bytes_.size() - 10));
  ExpectRejected("truncated");
  Damage(bytes_.substr(0, 20));
  ExpectRejected("shorter than the 64-byte shard header");
}

TEST_F(DamagedShard, ForeignFileIsRejected) {
  std::string b = bytes_;
  b.replace(0, 8, "GGUF\0\0\0\0");
  Damage(b);
  ExpectRejected("not a lamina token shard");
  b = bytes_;
  b[8] = 9;  // format version 9
  Damage(b);
  ExpectRejected("format version 9");
}

TEST_F(DamagedShard, OtherVocabIsRejected) {
  std::string b = bytes_;
  b[24] ^= 1;  // the vocab hash in the header
  Damage(b);
  ExpectRejected("different vocabulary");
  // A dataset made with another vocab than the one in use is refused at the manifest.
  Damage(bytes_);
  absl::StatusOr<std::shared_ptr<const MlmDataset>> ds = MlmDataset::Open(out_.path("ds"), {.expected_vocab_hash = tok_.vocab_hash() ^ 1});
  ASSERT_FALSE(ds.ok());
  EXPECT_TRUE(absl::StrContains(ds.status().message(), "re-run `lamina prepare` with this vocab")) << ds.status();
}

// Edited manifests: special ids other than the vocab's (they would change every loss silently),
// negative counts and integers past 2^63-1 are refused, naming the key.
TEST_F(DamagedShard, EditedManifestIsRejected) {
  const std::string path = out_.path("ds/manifest.json");
  const std::string original = *ReadFile(path);
  auto open_edited = [&](const std::string& from, const std::string& to) {
    std::string text = original;
    const size_t at = text.find(from);
    EXPECT_NE(at, std::string::npos) << from;
    text.replace(at, from.size(), to);
    EXPECT_TRUE(WriteFileAtomic(path, text).ok());
    return MlmDataset::Open(out_.path("ds"), {.expected_vocab_hash = tok_.vocab_hash(),
                                              .expected_special_ids = tok_.special_ids()});
  };
  EXPECT_TRUE(open_edited("", "").ok());
  const std::string pad = absl::StrCat("\"pad\": ", tok_.pad_id());
  absl::StatusOr<std::shared_ptr<const MlmDataset>> ds = open_edited(pad, absl::StrCat("\"pad\": ", tok_.cls_id()));
  ASSERT_FALSE(ds.ok());
  EXPECT_TRUE(absl::StrContains(ds.status().message(), absl::StrCat("special_ids.pad is ", tok_.cls_id(),
                                                                     " but the vocab in use has it at ", tok_.pad_id())))
      << ds.status();
  ds = open_edited("\"tokens\": ", "\"tokens\": -");
  ASSERT_FALSE(ds.ok());
  EXPECT_TRUE(absl::StrContains(ds.status().message(), "\"splits.train.tokens\" must be an integer from 0 to 2^63-1, got -"))
      << ds.status();
  ds = open_edited(absl::StrCat("\"cls\": ", tok_.cls_id()), "\"cls\": 9223372036854775808");
  ASSERT_FALSE(ds.ok());
  EXPECT_TRUE(absl::StrContains(ds.status().message(), "\"special_ids.cls\" must be an integer from 0 to 2^63-1, got 9223372036854775808"))
      << ds.status();
  ds = open_edited("{", "{,");
  ASSERT_FALSE(ds.ok());
  EXPECT_TRUE(absl::StrContains(ds.status().message(), "manifest.json: not valid JSON: parse error at line 1, column 2"))
      << ds.status();
}

TEST_F(DamagedShard, SizeOrContentMismatchIsRejected) {
  Damage(bytes_ + "extra");
  ExpectRejected("bytes, expected");
  std::string b = bytes_;
  b[100] ^= 0x40;
  Damage(b);
  ExpectRejected("CRC-32");
  // Without the CRC check the same file opens (it is the right size and shape).
  EXPECT_TRUE(MlmDataset::Open(out_.path("ds"), {.verify_crc = false}).ok());
}

TEST(PrepareCli, RunsWithPositionalAndCommaInputs) {
  const char* bin = std::getenv("LAMINA_BINARY");
  if (bin == nullptr || !std::filesystem::exists(bin)) GTEST_SKIP() << "LAMINA_BINARY is not built";
  Corpus corpus;
  TempDir out;
  ASSERT_TRUE(WriteFileAtomic(out.path("vocab.txt"), datatest::TinyVocabText()).ok());
  const std::string common = absl::StrCat(bin, " prepare --vocab=", out.path("vocab.txt"), " --seq_len=16 --val_docs=3 --progress=false");
  const std::string cmd = absl::StrCat(common, " --out=", out.path("cli"), " --input=", corpus.files[0], ",", corpus.files[1], " ",
                                       corpus.files[2], " 2>", out.path("log"));
  ASSERT_EQ(std::system(cmd.c_str()), 0) << *ReadFile(out.path("log"));
  absl::StatusOr<std::shared_ptr<const MlmDataset>> ds = MlmDataset::Open(out.path("cli"));
  ASSERT_TRUE(ds.ok()) << ds.status();
  EXPECT_EQ((*ds)->manifest().sources.size(), 3u);
  EXPECT_EQ((*ds)->manifest().val.documents, 3);
  // A missing input is a user error with a non-zero exit and a message.
  const int rc = std::system(absl::StrCat(common, " --out=", out.path("cli2"), " ", corpus.dir.path("nope.txt"), " 2>", out.path("log")).c_str());
  EXPECT_NE(rc, 0);
  EXPECT_TRUE(absl::StrContains(*ReadFile(out.path("log")), "nope.txt"));
}

TEST(PrepareRealData, FirstTwoMegabytesOfWikipedia) {
  const std::string data = datatest::SharedDataDir();
  const std::string wiki = data + "/enwiki-2015-wikiextractor/wiki_AA.txt.xz";
  const std::string vocab = data + "/vocab/bert-base-uncased-vocab.txt";
  if (!std::filesystem::exists(wiki) || !std::filesystem::exists(vocab)) GTEST_SKIP() << "no shared data at " << data;
  absl::StatusOr<WordPieceTokenizer> tok = WordPieceTokenizer::Load(vocab);
  ASSERT_TRUE(tok.ok()) << tok.status();
  TempDir out;
  PrepareOptions o;
  o.inputs = {wiki};
  o.out_dir = out.path("wiki");
  o.seq_len = 128;
  o.val_docs = 2;
  o.max_bytes = 2000000;
  o.progress = false;
  absl::StatusOr<Manifest> m = PrepareCorpus(*tok, o);
  ASSERT_TRUE(m.ok()) << m.status();
  // 2 MB of English is ~2/5 M words, ~1/2 M wordpieces; the articles are long, so few documents.
  EXPECT_GE(m->sources[0].text_bytes, 2000000u);
  EXPECT_LT(m->sources[0].text_bytes, 3000000u);
  EXPECT_EQ(m->sources[0].layout, "wikiextractor");
  const int64_t docs = m->train.documents + m->val.documents;
  EXPECT_EQ(docs, m->sources[0].documents);
  EXPECT_GE(docs, 5);
  EXPECT_EQ(m->val.documents, 2);
  const int64_t tokens = m->train.tokens + m->val.tokens;
  EXPECT_GT(tokens, 350000);
  EXPECT_LT(tokens, 700000);
  EXPECT_EQ(m->vocab_size, 30522);
  EXPECT_EQ(m->dtype, ShardDtype::kUint16);
  EXPECT_GE(m->train.sequences + m->val.sequences, tokens / 126);

  absl::StatusOr<std::shared_ptr<const MlmDataset>> ds = MlmDataset::Open(o.out_dir, {.expected_vocab_hash = tok->vocab_hash()});
  ASSERT_TRUE(ds.ok()) << ds.status();
  // Article 12 (Anarchism) starts its first row with its first sentence, the title line dropped.
  const std::vector<int32_t> want = tok->Encode("Anarchism is a political philosophy");
  bool found = false;
  Row row(128);
  for (const TokenSplit* split : {&(*ds)->train(), &(*ds)->val()}) {
    for (int64_t i = 0; i < split->num_sequences() && !found; ++i) {
      split->CopyRow(i, row.data());
      found = row[0] == tok->cls_id() && std::equal(want.begin(), want.end(), row.begin() + 1);
    }
  }
  EXPECT_TRUE(found);
}

}  // namespace
}  // namespace lamina
