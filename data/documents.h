// Splits a text file into documents, the unit that MLM sequences never cross.
//
// Two layouts, recognised per file from its first non-blank line:
//  - WikiExtractor: `<doc id="..." url="..." title="...">` ... `</doc>`. WikiExtractor repeats the
//    title as the first line of the body; that line is dropped when it equals the title attribute
//    (it is a heading fragment, not running text, and NVIDIA's BERT wiki formatting drops it too).
//    Blank lines inside a document are dropped; text outside <doc> elements is ignored. A <doc>
//    left open at the end of the file is an error naming the line where it began.
//  - Plain text: documents are separated by one or more blank lines (whitespace-only lines count
//    as blank). For one-document-per-line corpora, put a blank line between documents.
// A document's text is its lines joined with "\n".
#pragma once

#include <cstdint>
#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "data/text_reader.h"

namespace lamina {

struct Document {
  std::string text;
  std::string title;       // WikiExtractor's title attribute; empty for plain text
  int64_t first_line = 0;  // 1-based line of the document's start (its <doc> tag, or first text line)
};

class DocumentReader {
 public:
  static absl::StatusOr<std::unique_ptr<DocumentReader>> Open(const std::string& path);

  // Reads the next document; false at the end of the file. Errors name the file and line.
  absl::StatusOr<bool> Next(Document* doc);

  bool wikiextractor() const { return wiki_; }
  const TextReader& text_reader() const { return *reader_; }

 private:
  explicit DocumentReader(std::unique_ptr<TextReader> reader) : reader_(std::move(reader)) {}
  absl::StatusOr<bool> NextWiki(Document* doc);
  absl::StatusOr<bool> NextPlain(Document* doc);
  // Returns the next line, the one put back by the format probe first.
  absl::StatusOr<bool> ReadLine(std::string* line);

  std::unique_ptr<TextReader> reader_;
  bool wiki_ = false;
  bool has_pending_ = false;
  std::string pending_;
  int64_t pending_line_ = 0;
  int64_t line_number_ = 0;  // line number of the line ReadLine returned last
  std::string line_;
};

// The value of attribute `name` in a tag such as `<doc id="1" title="A &amp; B">`, with the XML
// entities WikiExtractor writes (&amp; &quot; &lt; &gt; &#39; &#039;) decoded; empty when absent.
std::string TagAttribute(const std::string& tag, const std::string& name);

}  // namespace lamina
