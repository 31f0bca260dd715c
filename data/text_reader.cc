#include "data/text_reader.h"

#include <lzma.h>
#include <zlib.h>

#include <cerrno>
#include <cstring>
#include <vector>

#include "absl/strings/str_cat.h"
#include "core/status.h"

namespace lamina {

const char* CompressionName(Compression c) {
  switch (c) {
    case Compression::kNone:
      return "plain";
    case Compression::kXz:
      return "xz";
    case Compression::kGzip:
      return "gzip";
  }
  return "?";
}

namespace {
constexpr size_t kInputChunk = 1 << 20;
constexpr size_t kTextChunk = 1 << 20;
}  // namespace

// Turns the file's bytes into text, one buffer at a time.
class TextReader::Decoder {
 public:
  explicit Decoder(std::string path) : path_(std::move(path)), in_(kInputChunk) {}
  virtual ~Decoder() = default;
  // Writes up to `cap` decoded bytes to `out`; 0 means the end of the input.
  virtual absl::StatusOr<size_t> Decode(std::FILE* f, char* out, size_t cap, uint64_t* file_bytes) = 0;

 protected:
  // Reads the next piece of the file into in_; false at the end of the file.
  absl::StatusOr<bool> ReadInput(std::FILE* f, uint64_t* file_bytes) {
    in_len_ = std::fread(in_.data(), 1, in_.size(), f);
    if (in_len_ == 0 && std::ferror(f)) {
      return absl::DataLossError(absl::StrCat("reading ", path_, ": ", std::strerror(errno)));
    }
    *file_bytes += in_len_;
    return in_len_ > 0;
  }

  std::string path_;
  std::vector<uint8_t> in_;
  size_t in_len_ = 0;
};

namespace {

class PlainDecoder : public TextReader::Decoder {
 public:
  using Decoder::Decoder;
  absl::StatusOr<size_t> Decode(std::FILE* f, char* out, size_t cap, uint64_t* file_bytes) override {
    const size_t n = std::fread(out, 1, cap, f);
    if (n == 0 && std::ferror(f)) return absl::DataLossError(absl::StrCat("reading ", path_, ": ", std::strerror(errno)));
    *file_bytes += n;
    return n;
  }
};

class XzDecoder : public TextReader::Decoder {
 public:
  explicit XzDecoder(std::string path) : Decoder(std::move(path)) {}
  ~XzDecoder() override { lzma_end(&strm_); }

  absl::Status Init() {
    if (lzma_stream_decoder(&strm_, UINT64_MAX, LZMA_CONCATENATED) != LZMA_OK) {
      return absl::InternalError(absl::StrCat("cannot initialise the xz decoder for ", path_));
    }
    return absl::OkStatus();
  }

  absl::StatusOr<size_t> Decode(std::FILE* f, char* out, size_t cap, uint64_t* file_bytes) override {
    if (finished_) return 0;
    strm_.next_out = reinterpret_cast<uint8_t*>(out);
    strm_.avail_out = cap;
    while (strm_.avail_out > 0) {
      if (strm_.avail_in == 0 && !eof_) {
        ASSIGN_OR_RETURN(const bool got, ReadInput(f, file_bytes));
        eof_ = !got;
        strm_.next_in = in_.data();
        strm_.avail_in = in_len_;
      }
      const lzma_ret ret = lzma_code(&strm_, eof_ ? LZMA_FINISH : LZMA_RUN);
      if (ret == LZMA_STREAM_END) {
        finished_ = true;
        break;
      }
      if (ret != LZMA_OK) {
        return absl::DataLossError(absl::StrCat(path_, ": corrupt or truncated xz data (liblzma error ", ret, ") after ",
                                                strm_.total_in, " compressed bytes"));
      }
    }
    return cap - strm_.avail_out;
  }

 private:
  lzma_stream strm_ = LZMA_STREAM_INIT;
  bool eof_ = false, finished_ = false;
};

class GzipDecoder : public TextReader::Decoder {
 public:
  explicit GzipDecoder(std::string path) : Decoder(std::move(path)) {}
  ~GzipDecoder() override {
    if (initialised_) inflateEnd(&z_);
  }

  absl::Status Init() {
    // 15 + 32: the largest window, with gzip/zlib header detection.
    if (inflateInit2(&z_, 15 + 32) != Z_OK) return absl::InternalError(absl::StrCat("cannot initialise zlib for ", path_));
    initialised_ = true;
    return absl::OkStatus();
  }

  absl::StatusOr<size_t> Decode(std::FILE* f, char* out, size_t cap, uint64_t* file_bytes) override {
    if (finished_) return 0;
    z_.next_out = reinterpret_cast<Bytef*>(out);
    z_.avail_out = static_cast<uInt>(cap);
    while (z_.avail_out > 0) {
      if (z_.avail_in == 0 && !eof_) {
        ASSIGN_OR_RETURN(const bool got, ReadInput(f, file_bytes));
        eof_ = !got;
        z_.next_in = in_.data();
        z_.avail_in = static_cast<uInt>(in_len_);
      }
      if (z_.avail_in == 0 && eof_) {
        if (in_member_) return absl::DataLossError(absl::StrCat(path_, ": truncated gzip data"));
        finished_ = true;
        break;
      }
      in_member_ = true;
      const int ret = inflate(&z_, Z_NO_FLUSH);
      if (ret == Z_STREAM_END) {
        // Another gzip member may follow (as `cat a.gz b.gz` makes).
        in_member_ = false;
        inflateReset(&z_);
        continue;
      }
      if (ret != Z_OK && ret != Z_BUF_ERROR) {
        return absl::DataLossError(absl::StrCat(path_, ": corrupt gzip data (", z_.msg ? z_.msg : "zlib error", ")"));
      }
    }
    return cap - z_.avail_out;
  }

 private:
  z_stream z_{};
  bool initialised_ = false, eof_ = false, finished_ = false, in_member_ = false;
};

}  // namespace

absl::StatusOr<std::unique_ptr<TextReader>> TextReader::Open(const std::string& path) {
  std::unique_ptr<TextReader> r(new TextReader());
  r->path_ = path;
  r->check_ = TextCheck(path);
  r->file_ = std::fopen(path.c_str(), "rb");
  if (r->file_ == nullptr) return absl::NotFoundError(absl::StrCat("cannot open ", path, ": ", std::strerror(errno)));
  if (std::fseek(r->file_, 0, SEEK_END) == 0) {
    const long size = std::ftell(r->file_);
    if (size > 0) r->file_size_ = static_cast<uint64_t>(size);
  }
  std::rewind(r->file_);
  unsigned char magic[6] = {0};
  const size_t got = std::fread(magic, 1, sizeof(magic), r->file_);
  std::rewind(r->file_);
  static const unsigned char kXzMagic[6] = {0xFD, '7', 'z', 'X', 'Z', 0x00};
  if (got == 6 && std::memcmp(magic, kXzMagic, 6) == 0) {
    auto d = std::make_unique<XzDecoder>(path);
    RETURN_IF_ERROR(d->Init());
    r->compression_ = Compression::kXz;
    r->decoder_ = std::move(d);
  } else if (got >= 2 && magic[0] == 0x1F && magic[1] == 0x8B) {
    auto d = std::make_unique<GzipDecoder>(path);
    RETURN_IF_ERROR(d->Init());
    r->compression_ = Compression::kGzip;
    r->decoder_ = std::move(d);
  } else {
    r->decoder_ = std::make_unique<PlainDecoder>(path);
  }
  r->text_.resize(kTextChunk);
  return r;
}

TextReader::~TextReader() {
  decoder_.reset();
  if (file_ != nullptr) std::fclose(file_);
}

absl::StatusOr<bool> TextReader::Refill() {
  if (text_done_) return false;
  ASSIGN_OR_RETURN(const size_t n, decoder_->Decode(file_, text_.data(), text_.size(), &file_bytes_read_));
  text_pos_ = 0;
  text_end_ = n;
  if (n == 0) text_done_ = true;
  return n > 0;
}

absl::StatusOr<bool> TextReader::ReadLine(std::string* line) {
  line->clear();
  bool any = false;
  while (true) {
    if (text_pos_ == text_end_) {
      ASSIGN_OR_RETURN(const bool more, Refill());
      if (!more) break;
    }
    any = true;
    const char* begin = text_.data() + text_pos_;
    const char* nl = static_cast<const char*>(std::memchr(begin, '\n', text_end_ - text_pos_));
    if (nl == nullptr) {
      line->append(begin, text_end_ - text_pos_);
      text_bytes_read_ += text_end_ - text_pos_;
      text_pos_ = text_end_;
      continue;
    }
    line->append(begin, static_cast<size_t>(nl - begin));
    text_bytes_read_ += static_cast<size_t>(nl - begin) + 1;
    text_pos_ += static_cast<size_t>(nl - begin) + 1;
    break;
  }
  if (!any) {
    RETURN_IF_ERROR(check_.Check(/*at_end=*/true));
    return false;
  }
  check_.Add(*line);
  RETURN_IF_ERROR(check_.Check(/*at_end=*/false));
  if (!line->empty() && line->back() == '\r') line->pop_back();
  ++line_number_;
  return true;
}

}  // namespace lamina
