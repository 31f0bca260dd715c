#include "data/documents.h"

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_replace.h"
#include "core/status.h"

namespace lamina {
namespace {

bool IsBlank(const std::string& line) {
  for (char c : line)
    if (!absl::ascii_isspace(static_cast<unsigned char>(c))) return false;
  return true;
}

bool IsDocOpen(const std::string& line) { return absl::StartsWith(line, "<doc ") || line == "<doc>"; }

bool IsDocClose(const std::string& line) { return absl::StripAsciiWhitespace(line) == "</doc>"; }

}  // namespace

std::string TagAttribute(const std::string& tag, const std::string& name) {
  const std::string key = absl::StrCat(" ", name, "=\"");
  const size_t at = tag.find(key);
  if (at == std::string::npos) return "";
  const size_t begin = at + key.size();
  const size_t end = tag.find('"', begin);
  if (end == std::string::npos) return "";
  // &amp; last, so that "&amp;quot;" decodes to "&quot;" and not to '"'.
  return absl::StrReplaceAll(tag.substr(begin, end - begin),
                             {{"&quot;", "\""}, {"&lt;", "<"}, {"&gt;", ">"}, {"&#39;", "'"}, {"&#039;", "'"}, {"&amp;", "&"}});
}

absl::StatusOr<std::unique_ptr<DocumentReader>> DocumentReader::Open(const std::string& path) {
  ASSIGN_OR_RETURN(std::unique_ptr<TextReader> reader, TextReader::Open(path));
  std::unique_ptr<DocumentReader> r(new DocumentReader(std::move(reader)));
  // Probe the layout on the first non-blank line, and keep that line for Next().
  while (true) {
    ASSIGN_OR_RETURN(const bool got, r->reader_->ReadLine(&r->pending_));
    if (!got) break;
    if (!IsBlank(r->pending_)) {
      r->has_pending_ = true;
      r->pending_line_ = r->reader_->line_number();
      r->wiki_ = IsDocOpen(r->pending_);
      break;
    }
  }
  return r;
}

absl::StatusOr<bool> DocumentReader::ReadLine(std::string* line) {
  if (has_pending_) {
    has_pending_ = false;
    line->swap(pending_);
    line_number_ = pending_line_;
    return true;
  }
  ASSIGN_OR_RETURN(const bool got, reader_->ReadLine(line));
  line_number_ = reader_->line_number();
  return got;
}

absl::StatusOr<bool> DocumentReader::Next(Document* doc) {
  doc->text.clear();
  doc->title.clear();
  doc->first_line = 0;
  return wiki_ ? NextWiki(doc) : NextPlain(doc);
}

absl::StatusOr<bool> DocumentReader::NextWiki(Document* doc) {
  // Skip to the next <doc ...> tag.
  while (true) {
    ASSIGN_OR_RETURN(const bool got, ReadLine(&line_));
    if (!got) return false;
    if (IsDocOpen(line_)) break;
  }
  doc->first_line = line_number_;
  doc->title = TagAttribute(line_, "title");
  bool first_body_line = true;
  while (true) {
    ASSIGN_OR_RETURN(const bool got, ReadLine(&line_));
    if (!got) {
      return absl::DataLossError(absl::StrCat(reader_->path(), ":", doc->first_line, ": <doc> is not closed by </doc> before the end of the file"));
    }
    if (IsDocClose(line_)) return true;
    if (IsDocOpen(line_)) {
      return absl::InvalidArgumentError(
          absl::StrCat(reader_->path(), ":", line_number_, ": <doc> inside the <doc> opened at line ", doc->first_line, " (missing </doc>)"));
    }
    if (IsBlank(line_)) continue;
    const bool is_title = first_body_line && !doc->title.empty() && absl::StripAsciiWhitespace(line_) == doc->title;
    first_body_line = false;
    if (is_title) continue;
    if (!doc->text.empty()) doc->text.push_back('\n');
    doc->text.append(line_);
  }
}

absl::StatusOr<bool> DocumentReader::NextPlain(Document* doc) {
  while (true) {
    ASSIGN_OR_RETURN(const bool got, ReadLine(&line_));
    if (!got) return doc->first_line != 0;
    if (IsBlank(line_)) {
      if (doc->first_line != 0) return true;
      continue;
    }
    if (doc->first_line == 0) {
      doc->first_line = line_number_;
    } else {
      doc->text.push_back('\n');
    }
    doc->text.append(line_);
  }
}

}  // namespace lamina
