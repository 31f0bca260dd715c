// Helpers shared by the MLM data tests: a tiny vocabulary, a synthetic corpus and compressed files.
#pragma once

#include <lzma.h>
#include <unistd.h>
#include <zlib.h>

#include <cstdlib>
#include <filesystem>
#include <random>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "core/file_util.h"
#include "data/prepare.h"
#include "data/wordpiece.h"
#include "gtest/gtest.h"

namespace lamina::datatest {

inline std::string SharedDataDir() {
  const char* src = std::getenv("LAMINA_SOURCE_DIR");
  return absl::StrCat(src != nullptr ? src : ".", "/../shared/data");
}

// A fresh directory under the system temp dir, removed when the object goes.
class TempDir {
 public:
  TempDir() {
    std::string tmpl = (std::filesystem::temp_directory_path() / "lamina_data_test_XXXXXX").string();
    path_ = ::mkdtemp(tmpl.data());
  }
  ~TempDir() { std::filesystem::remove_all(path_); }
  std::string path(const std::string& name = "") const { return name.empty() ? path_ : absl::StrCat(path_, "/", name); }

 private:
  std::string path_;
};

// 5 specials, 60 whole words "w0".."w59", 20 continuations "##s0".."##s19".
inline std::string TinyVocabText() {
  std::string v = "[PAD]\n[UNK]\n[CLS]\n[SEP]\n[MASK]\n";
  for (int i = 0; i < 60; ++i) absl::StrAppend(&v, "w", i, "\n");
  for (int i = 0; i < 20; ++i) absl::StrAppend(&v, "##s", i, "\n");
  return v;
}

inline WordPieceTokenizer TinyTokenizer() {
  absl::StatusOr<WordPieceTokenizer> t = WordPieceTokenizer::FromVocabText(TinyVocabText(), "tiny_vocab.txt");
  EXPECT_TRUE(t.ok()) << t.status();
  return *std::move(t);
}

// Documents of random words ("w12", sometimes "w12s3" which tokenizes to w12 ##s3), lines of
// 1-12 words, 1-8 lines, lengths spread so that some documents span several 16-token rows.
inline std::vector<std::string> SyntheticDocs(int count, uint32_t seed) {
  std::mt19937 rng(seed);
  std::vector<std::string> docs;
  for (int d = 0; d < count; ++d) {
    std::string doc;
    const int lines = 1 + static_cast<int>(rng() % 8);
    for (int l = 0; l < lines; ++l) {
      if (l > 0) doc += "\n";
      const int words = 1 + static_cast<int>(rng() % 12);
      for (int w = 0; w < words; ++w) {
        if (w > 0) doc += " ";
        absl::StrAppend(&doc, "w", rng() % 60);
        if (rng() % 4 == 0) absl::StrAppend(&doc, "s", rng() % 20);
      }
    }
    docs.push_back(doc);
  }
  return docs;
}

// Plain-text layout: documents separated by blank lines.
inline std::string PlainCorpus(const std::vector<std::string>& docs) {
  std::string s;
  for (const std::string& d : docs) absl::StrAppend(&s, d, "\n\n");
  return s;
}

// WikiExtractor layout, with the title repeated as the first body line.
inline std::string WikiCorpus(const std::vector<std::string>& docs, int first_id) {
  std::string s;
  for (size_t i = 0; i < docs.size(); ++i) {
    const int id = first_id + static_cast<int>(i);
    absl::StrAppend(&s, "<doc id=\"", id, "\" url=\"http://x/?curid=", id, "\" title=\"Title ", id, "\">\nTitle ", id, "\n\n", docs[i],
                    "\n</doc>\n");
  }
  return s;
}

inline void WriteXz(const std::string& path, const std::string& text) {
  std::string out(lzma_stream_buffer_bound(text.size()), '\0');
  size_t out_pos = 0;
  ASSERT_EQ(lzma_easy_buffer_encode(6, LZMA_CHECK_CRC64, nullptr, reinterpret_cast<const uint8_t*>(text.data()), text.size(),
                                    reinterpret_cast<uint8_t*>(out.data()), &out_pos, out.size()),
            LZMA_OK);
  out.resize(out_pos);
  ASSERT_TRUE(WriteFileAtomic(path, out).ok());
}

inline void WriteGz(const std::string& path, const std::string& text) {
  gzFile f = gzopen(path.c_str(), "wb");
  ASSERT_NE(f, nullptr);
  ASSERT_EQ(gzwrite(f, text.data(), static_cast<unsigned>(text.size())), static_cast<int>(text.size()));
  ASSERT_EQ(gzclose(f), Z_OK);
}

inline void WritePlain(const std::string& path, const std::string& text) { ASSERT_TRUE(WriteFileAtomic(path, text).ok()); }

// dir/vocab.txt (the tiny vocab) and dir/ds: 300 synthetic documents drawn from `seed`,
// prepared at seq 16 with `val_docs` held out: the dataset of the training-loop tests.
inline void WriteSyntheticDataset(const TempDir& dir, uint32_t seed, int64_t val_docs, int64_t seq_len = 16,
                                  const std::string& name = "ds") {
  WritePlain(dir.path("vocab.txt"), TinyVocabText());
  WritePlain(dir.path("corpus.txt"), PlainCorpus(SyntheticDocs(300, seed)));
  PrepareOptions o;
  o.inputs = {dir.path("corpus.txt")};
  o.out_dir = dir.path(name);
  o.seq_len = seq_len;
  o.val_docs = val_docs;
  o.progress = false;
  auto m = PrepareCorpus(TinyTokenizer(), o);
  ASSERT_TRUE(m.ok()) << m.status();
}

}  // namespace lamina::datatest
