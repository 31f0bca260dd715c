#include "data/text_check.h"

#include <utf8proc.h>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"

namespace lamina {

void TextCheck::Add(absl::string_view line, bool newline) {
  const auto* p = reinterpret_cast<const utf8proc_uint8_t*>(line.data());
  utf8proc_ssize_t left = static_cast<utf8proc_ssize_t>(line.size());
  while (left > 0) {
    utf8proc_int32_t c;
    const utf8proc_ssize_t n = utf8proc_iterate(p, left, &c);
    const bool bad = n <= 0 || c == 0;
    const utf8proc_ssize_t step = n <= 0 ? 1 : n;
    if (bad) {
      if (first_bad_ < 0) first_bad_ = static_cast<int64_t>(bytes_);
      bad_ += static_cast<uint64_t>(step);
    }
    bytes_ += static_cast<uint64_t>(step);
    p += step;
    left -= step;
  }
  if (newline) ++bytes_;
}

absl::Status TextCheck::Check(bool at_end) const {
  if (bytes_ == 0) return absl::OkStatus();
  if (!at_end && bytes_ < kMinBytes) return absl::OkStatus();
  const double fraction = static_cast<double>(bad_) / static_cast<double>(bytes_);
  if (fraction <= kMaxBadFraction || bad_ <= kFewBadBytes) return absl::OkStatus();
  return absl::InvalidArgumentError(absl::StrFormat(
      "%s: not UTF-8 text: %d of the first %d bytes are invalid UTF-8 or NUL (%.1f%%, more than %.0f%%), the first at "
      "byte offset %d (of the decompressed text)",
      name_, bad_, bytes_, 100 * fraction, 100 * kMaxBadFraction, first_bad_));
}

}  // namespace lamina
