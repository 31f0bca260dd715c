#include "data/text_reader.h"

#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "data/documents.h"
#include "gtest/gtest.h"
#include "tests/data/mlm_test_util.h"

namespace lamina {
namespace {

using datatest::TempDir;

std::vector<std::string> ReadAll(const std::string& path, absl::Status* status = nullptr) {
  std::vector<std::string> lines;
  absl::StatusOr<std::unique_ptr<TextReader>> r = TextReader::Open(path);
  EXPECT_TRUE(r.ok()) << r.status();
  if (!r.ok()) return lines;
  std::string line;
  while (true) {
    absl::StatusOr<bool> got = (*r)->ReadLine(&line);
    if (!got.ok()) {
      if (status != nullptr) *status = got.status();
      break;
    }
    if (!*got) break;
    lines.push_back(line);
  }
  return lines;
}

std::string SampleText() {
  // CRLF, empty lines, a line longer than the 1 MB decode buffer, non-ASCII, no final newline.
  std::string text = "first line\r\nsecond\n\n\nüñíçødé ✓\n";
  text += std::string(3 << 20, 'x') + "\n";
  for (int i = 0; i < 20000; ++i) absl::StrAppend(&text, "line ", i, "\n");
  text += "last without newline";
  return text;
}

std::vector<std::string> SampleLines() {
  std::vector<std::string> lines = {"first line", "second", "", "", "üñíçødé ✓", std::string(3 << 20, 'x')};
  for (int i = 0; i < 20000; ++i) lines.push_back(absl::StrCat("line ", i));
  lines.push_back("last without newline");
  return lines;
}

TEST(TextReader, PlainXzAndGzipGiveTheSameLines) {
  TempDir dir;
  const std::string text = SampleText();
  datatest::WritePlain(dir.path("a.txt"), text);
  datatest::WriteXz(dir.path("a.txt.xz"), text);
  datatest::WriteGz(dir.path("a.txt.gz"), text);
  // The format comes from the content, not the name.
  datatest::WriteXz(dir.path("misnamed.gz"), text);
  const std::vector<std::string> want = SampleLines();
  for (const char* name : {"a.txt", "a.txt.xz", "a.txt.gz", "misnamed.gz"}) {
    EXPECT_EQ(ReadAll(dir.path(name)), want) << name;
  }
  auto r = TextReader::Open(dir.path("misnamed.gz"));
  ASSERT_TRUE(r.ok());
  EXPECT_EQ((*r)->compression(), Compression::kXz);
  std::string line;
  while (*(*r)->ReadLine(&line)) {
  }
  EXPECT_EQ((*r)->text_bytes_read(), text.size());
  EXPECT_EQ((*r)->file_bytes_read(), (*r)->file_size());
  EXPECT_EQ((*r)->line_number(), static_cast<int64_t>(want.size()));
}

TEST(TextReader, ConcatenatedStreamsAndMembersAreReadThrough) {
  TempDir dir;
  datatest::WriteXz(dir.path("a.xz"), "one\ntwo\n");
  datatest::WriteXz(dir.path("b.xz"), "three\n");
  datatest::WriteGz(dir.path("a.gz"), "one\ntwo\n");
  datatest::WriteGz(dir.path("b.gz"), "three\n");
  for (const char* ext : {"xz", "gz"}) {
    std::string both = *ReadFile(dir.path(absl::StrCat("a.", ext))) + *ReadFile(dir.path(absl::StrCat("b.", ext)));
    datatest::WritePlain(dir.path(absl::StrCat("ab.", ext)), both);
    EXPECT_EQ(ReadAll(dir.path(absl::StrCat("ab.", ext))), (std::vector<std::string>{"one", "two", "three"})) << ext;
  }
}

TEST(TextReader, TruncatedOrCorruptInputIsAnErrorNamingTheFile) {
  TempDir dir;
  const std::string text = SampleText();
  datatest::WriteXz(dir.path("full.xz"), text);
  datatest::WriteGz(dir.path("full.gz"), text);
  for (const char* ext : {"xz", "gz"}) {
    std::string bytes = *ReadFile(dir.path(absl::StrCat("full.", ext)));
    const std::string cut = dir.path(absl::StrCat("cut.", ext));
    datatest::WritePlain(cut, bytes.substr(0, bytes.size() / 2));
    absl::Status status;
    ReadAll(cut, &status);
    EXPECT_FALSE(status.ok()) << ext;
    EXPECT_NE(status.message().find(cut), std::string::npos) << status;

    const std::string bad = dir.path(absl::StrCat("bad.", ext));
    for (size_t i = 64; i < bytes.size(); i += 997) bytes[i] ^= 0x5A;
    datatest::WritePlain(bad, bytes);
    status = absl::OkStatus();
    ReadAll(bad, &status);
    EXPECT_FALSE(status.ok()) << ext;
    EXPECT_NE(status.message().find(bad), std::string::npos) << status;
  }
  EXPECT_EQ(TextReader::Open(dir.path("missing.txt")).status().code(), absl::StatusCode::kNotFound);
}

std::vector<Document> ReadDocs(const std::string& path, absl::Status* status = nullptr) {
  std::vector<Document> docs;
  auto r = DocumentReader::Open(path);
  EXPECT_TRUE(r.ok()) << r.status();
  if (!r.ok()) return docs;
  Document d;
  while (true) {
    absl::StatusOr<bool> got = (*r)->Next(&d);
    if (!got.ok()) {
      if (status != nullptr) *status = got.status();
      break;
    }
    if (!*got) break;
    docs.push_back(d);
  }
  return docs;
}

TEST(Documents, WikiExtractorMarkupDropsTheRepeatedTitle) {
  TempDir dir;
  datatest::WriteXz(dir.path("wiki.xz"),
                   "<doc id=\"12\" url=\"http://en.wikipedia.org/wiki?curid=12\" title=\"Anarchism\">\n"
                   "Anarchism\n\nAnarchism is a political philosophy.\nHistory.\nIt has a history.\n</doc>\n"
                   "<doc id=\"25\" url=\"u\" title=\"AT&amp;T &quot;Bell&quot;\">\nAT&T \"Bell\"\n\nA company.\n</doc>\n"
                   "<doc id=\"30\" url=\"u\" title=\"Other\">\nNot the title\nBody.\n</doc>\n");
  auto r = DocumentReader::Open(dir.path("wiki.xz"));
  ASSERT_TRUE(r.ok());
  EXPECT_TRUE((*r)->wikiextractor());
  const std::vector<Document> docs = ReadDocs(dir.path("wiki.xz"));
  ASSERT_EQ(docs.size(), 3u);
  EXPECT_EQ(docs[0].title, "Anarchism");
  EXPECT_EQ(docs[0].text, "Anarchism is a political philosophy.\nHistory.\nIt has a history.");
  EXPECT_EQ(docs[0].first_line, 1);
  EXPECT_EQ(docs[1].title, "AT&T \"Bell\"");
  EXPECT_EQ(docs[1].text, "A company.");
  EXPECT_EQ(docs[1].first_line, 8);
  // A first line that is not the title is kept.
  EXPECT_EQ(docs[2].text, "Not the title\nBody.");
}

TEST(Documents, WikiExtractorErrorsNameFileAndLine) {
  TempDir dir;
  datatest::WritePlain(dir.path("open.txt"), "<doc id=\"1\" title=\"A\">\nA\ntext\n<doc id=\"2\" title=\"B\">\nB\n</doc>\n");
  absl::Status status;
  ReadDocs(dir.path("open.txt"), &status);
  EXPECT_NE(status.message().find(absl::StrCat(dir.path("open.txt"), ":4")), std::string::npos) << status;
  datatest::WritePlain(dir.path("unclosed.txt"), "\n<doc id=\"1\" title=\"A\">\nA\ntext\n");
  status = absl::OkStatus();
  ReadDocs(dir.path("unclosed.txt"), &status);
  EXPECT_NE(status.message().find(absl::StrCat(dir.path("unclosed.txt"), ":2")), std::string::npos) << status;
  EXPECT_NE(status.message().find("</doc>"), std::string::npos) << status;
}

TEST(Documents, PlainTextSplitsOnBlankLines) {
  TempDir dir;
  datatest::WriteGz(dir.path("plain.gz"), "\n\none\ntwo\n\n  \t\nthree\n\n\n\nfour\nfive");
  const std::vector<Document> docs = ReadDocs(dir.path("plain.gz"));
  ASSERT_EQ(docs.size(), 3u);
  EXPECT_EQ(docs[0].text, "one\ntwo");
  EXPECT_EQ(docs[0].first_line, 3);
  EXPECT_EQ(docs[1].text, "three");
  EXPECT_EQ(docs[2].text, "four\nfive");
  EXPECT_EQ(docs[2].first_line, 11);
  datatest::WritePlain(dir.path("empty.txt"), "\n \n");
  EXPECT_TRUE(ReadDocs(dir.path("empty.txt")).empty());
}

}  // namespace
}  // namespace lamina
