// Streaming line reader over plain, xz (liblzma) or gzip (zlib) text files. The compression is
// recognised from the file's first bytes (not its name); concatenated xz streams and gzip members
// are read through. Memory use is a fixed-size buffer, whatever the file size.
#pragma once

#include <cstdint>
#include <cstdio>
#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "data/text_check.h"

namespace lamina {

enum class Compression { kNone, kXz, kGzip };

const char* CompressionName(Compression c);

class TextReader {
 public:
  // Opens `path`; NotFound when it cannot be opened.
  static absl::StatusOr<std::unique_ptr<TextReader>> Open(const std::string& path);
  ~TextReader();
  TextReader(const TextReader&) = delete;
  TextReader& operator=(const TextReader&) = delete;

  // Reads the next line into `line` without its "\n" (nor a "\r" before it). Returns false at the
  // end of the input; an error (naming the file) on a read failure, corrupt compressed data, or
  // input that is not UTF-8 text (data/text_check.h).
  // A last line without a final newline is returned as a line.
  absl::StatusOr<bool> ReadLine(std::string* line);

  const std::string& path() const { return path_; }
  Compression compression() const { return compression_; }
  // Size of the file on disk and how much of it has been consumed so far (for progress and ETA).
  uint64_t file_size() const { return file_size_; }
  uint64_t file_bytes_read() const { return file_bytes_read_; }
  // Decompressed bytes handed out so far, newlines included.
  uint64_t text_bytes_read() const { return text_bytes_read_; }
  // 1-based number of the line most recently returned.
  int64_t line_number() const { return line_number_; }

  class Decoder;

 private:
  TextReader() = default;
  // Refills `text_` from the decoder; returns false at the end of the input.
  absl::StatusOr<bool> Refill();

  std::string path_;
  Compression compression_ = Compression::kNone;
  std::FILE* file_ = nullptr;
  std::unique_ptr<Decoder> decoder_;
  std::string text_;       // decoded bytes not yet handed out: [text_pos_, text_end_)
  size_t text_pos_ = 0, text_end_ = 0;
  bool text_done_ = false;
  uint64_t file_size_ = 0, file_bytes_read_ = 0, text_bytes_read_ = 0;
  int64_t line_number_ = 0;
  TextCheck check_{""};
};

}  // namespace lamina
