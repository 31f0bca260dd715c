// Whether a byte stream is text: a binary file (an executable, an image, a mislabelled archive)
// fed to `prepare` or `tokenize` would otherwise become sequences of garbage tokens that train
// without a warning. A stream whose invalid UTF-8 or NUL bytes pass a small fraction (and a few
// bytes) is refused, naming the first such byte's offset; a few stray bytes in a large corpus
// (Wikipedia dumps have some) or in a line typed to `tokenize` are tolerated.
#pragma once

#include <cstdint>
#include <string>

#include "absl/status/status.h"
#include "absl/strings/string_view.h"

namespace lamina {

class TextCheck {
 public:
  // Refused beyond this fraction of bad bytes and more than kFewBadBytes of them, judged once
  // kMinBytes have been seen (or at the end).
  static constexpr double kMaxBadFraction = 0.01;
  static constexpr uint64_t kFewBadBytes = 8;
  static constexpr uint64_t kMinBytes = 4096;

  explicit TextCheck(std::string name) : name_(std::move(name)) {}

  // Counts the bytes of the next line (without its newline); `newline` adds one good byte.
  void Add(absl::string_view line, bool newline = true);
  // OK while the stream still looks like text; `at_end` judges a stream shorter than kMinBytes too.
  absl::Status Check(bool at_end) const;

  uint64_t bytes() const { return bytes_; }
  uint64_t bad_bytes() const { return bad_; }

 private:
  std::string name_;
  uint64_t bytes_ = 0, bad_ = 0;
  int64_t first_bad_ = -1;  // byte offset in the stream
};

}  // namespace lamina
