#include "data/shard.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zlib.h>

#include <bit>
#include <cerrno>
#include <cstring>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "core/status.h"

namespace lamina {

static_assert(std::endian::native == std::endian::little, "shards are little-endian and read in place");

const char* DtypeName(ShardDtype d) { return d == ShardDtype::kUint16 ? "uint16" : "int32"; }

namespace {

void PutU32(unsigned char* p, uint32_t v) { std::memcpy(p, &v, 4); }
void PutU64(unsigned char* p, uint64_t v) { std::memcpy(p, &v, 8); }
uint32_t GetU32(const unsigned char* p) {
  uint32_t v;
  std::memcpy(&v, p, 4);
  return v;
}
uint64_t GetU64(const unsigned char* p) {
  uint64_t v;
  std::memcpy(&v, p, 8);
  return v;
}

void EncodeHeader(const ShardHeader& h, unsigned char out[kShardHeaderBytes]) {
  std::memset(out, 0, kShardHeaderBytes);
  std::memcpy(out, kShardMagic, 8);
  PutU32(out + 8, kShardVersion);
  PutU32(out + 12, static_cast<uint32_t>(h.dtype));
  PutU32(out + 16, h.seq_len);
  PutU32(out + 20, h.vocab_size);
  PutU64(out + 24, h.vocab_hash);
  PutU64(out + 32, h.sequences);
}

uint32_t Crc32(uint32_t crc, const void* data, size_t n) {
  // zlib's crc32 takes uInt lengths; feed large regions in pieces.
  const auto* p = static_cast<const Bytef*>(data);
  while (n > 0) {
    const uInt piece = static_cast<uInt>(std::min<size_t>(n, 1u << 30));
    crc = static_cast<uint32_t>(crc32(crc, p, piece));
    p += piece;
    n -= piece;
  }
  return crc;
}

}  // namespace

absl::StatusOr<ShardHeader> ParseShardHeader(const unsigned char* bytes, size_t size, const std::string& path) {
  if (size < kShardHeaderBytes) {
    return absl::DataLossError(absl::StrCat(path, ": ", size, " bytes is shorter than the ", kShardHeaderBytes,
                                            "-byte shard header (truncated file?)"));
  }
  if (std::memcmp(bytes, kShardMagic, 8) != 0) {
    return absl::InvalidArgumentError(absl::StrCat(path, ": not a lamina token shard (expected magic \"LAMSHARD\")"));
  }
  const uint32_t version = GetU32(bytes + 8);
  if (version != kShardVersion) {
    return absl::InvalidArgumentError(absl::StrCat(path, ": shard format version ", version, ", this build reads version ",
                                                   kShardVersion, " (re-run `lamina prepare`)"));
  }
  ShardHeader h;
  const uint32_t width = GetU32(bytes + 12);
  if (width != 2 && width != 4) return absl::InvalidArgumentError(absl::StrCat(path, ": bad id width ", width, " (expected 2 or 4)"));
  h.dtype = static_cast<ShardDtype>(width);
  h.seq_len = GetU32(bytes + 16);
  h.vocab_size = GetU32(bytes + 20);
  h.vocab_hash = GetU64(bytes + 24);
  h.sequences = GetU64(bytes + 32);
  return h;
}

// ---------------------------------------------------------------------------------------------
// ShardWriter

ShardWriter::ShardWriter(std::string dir, std::string split, ShardHeader header, int64_t sequences_per_shard)
    : dir_(std::move(dir)), split_(std::move(split)), header_(header), per_shard_(sequences_per_shard) {
  row_bytes_.resize(static_cast<size_t>(header_.seq_len) * static_cast<size_t>(header_.dtype));
}

ShardWriter::~ShardWriter() {
  if (file_ != nullptr) {
    std::fclose(file_);
    ::unlink(tmp_path_.c_str());
  }
}

absl::Status ShardWriter::OpenNext() {
  current_ = ShardInfo();
  current_.file = absl::StrFormat("%s-%05d.bin", split_, done_.size());
  tmp_path_ = absl::StrCat(dir_, "/", current_.file, ".tmp");
  file_ = std::fopen(tmp_path_.c_str(), "wb");
  if (file_ == nullptr) return absl::PermissionDeniedError(absl::StrCat("cannot create ", tmp_path_, ": ", std::strerror(errno)));
  std::setvbuf(file_, nullptr, _IOFBF, 1 << 20);
  unsigned char zeros[kShardHeaderBytes] = {0};
  if (std::fwrite(zeros, 1, kShardHeaderBytes, file_) != kShardHeaderBytes) {
    return absl::DataLossError(absl::StrCat("writing ", tmp_path_, ": ", std::strerror(errno)));
  }
  payload_crc_ = Crc32(0, nullptr, 0);
  return absl::OkStatus();
}

absl::Status ShardWriter::Append(const int32_t* row) {
  if (file_ == nullptr) RETURN_IF_ERROR(OpenNext());
  if (header_.dtype == ShardDtype::kUint16) {
    for (uint32_t t = 0; t < header_.seq_len; ++t) {
      const uint16_t v = static_cast<uint16_t>(row[t]);
      std::memcpy(row_bytes_.data() + 2 * t, &v, 2);
    }
  } else {
    std::memcpy(row_bytes_.data(), row, row_bytes_.size());
  }
  if (std::fwrite(row_bytes_.data(), 1, row_bytes_.size(), file_) != row_bytes_.size()) {
    return absl::DataLossError(absl::StrCat("writing ", tmp_path_, ": ", std::strerror(errno)));
  }
  payload_crc_ = Crc32(payload_crc_, row_bytes_.data(), row_bytes_.size());
  ++current_.sequences;
  if (current_.sequences == per_shard_) RETURN_IF_ERROR(CloseCurrent());
  return absl::OkStatus();
}

absl::Status ShardWriter::CloseCurrent() {
  ShardHeader h = header_;
  h.sequences = static_cast<uint64_t>(current_.sequences);
  unsigned char head[kShardHeaderBytes];
  EncodeHeader(h, head);
  const uint64_t payload_bytes = static_cast<uint64_t>(current_.sequences) * row_bytes_.size();
  bool ok = std::fseek(file_, 0, SEEK_SET) == 0 && std::fwrite(head, 1, kShardHeaderBytes, file_) == kShardHeaderBytes &&
            std::fflush(file_) == 0 && ::fsync(::fileno(file_)) == 0;
  const int err = errno;
  ok = (std::fclose(file_) == 0) && ok;
  file_ = nullptr;
  if (!ok) {
    ::unlink(tmp_path_.c_str());
    return absl::DataLossError(absl::StrCat("writing ", tmp_path_, ": ", std::strerror(err)));
  }
  current_.bytes = kShardHeaderBytes + payload_bytes;
  current_.crc32 = static_cast<uint32_t>(crc32_combine(Crc32(0, head, kShardHeaderBytes), payload_crc_, static_cast<z_off_t>(payload_bytes)));
  const std::string final_path = absl::StrCat(dir_, "/", current_.file);
  if (::rename(tmp_path_.c_str(), final_path.c_str()) != 0) {
    const int e = errno;
    ::unlink(tmp_path_.c_str());
    return absl::DataLossError(absl::StrCat("renaming ", tmp_path_, " to ", final_path, ": ", std::strerror(e)));
  }
  done_.push_back(current_);
  return absl::OkStatus();
}

absl::StatusOr<std::vector<ShardInfo>> ShardWriter::Finish() {
  if (file_ != nullptr) RETURN_IF_ERROR(CloseCurrent());
  return done_;
}

// ---------------------------------------------------------------------------------------------
// MappedShard

MappedShard::MappedShard(MappedShard&& other) noexcept { *this = std::move(other); }

MappedShard& MappedShard::operator=(MappedShard&& other) noexcept {
  if (this != &other) {
    Unmap();
    map_ = std::exchange(other.map_, nullptr);
    map_bytes_ = std::exchange(other.map_bytes_, 0);
    payload_ = std::exchange(other.payload_, nullptr);
    dtype_ = other.dtype_;
    seq_len_ = other.seq_len_;
    sequences_ = std::exchange(other.sequences_, 0);
  }
  return *this;
}

MappedShard::~MappedShard() { Unmap(); }

void MappedShard::Unmap() {
  if (map_ != nullptr) ::munmap(map_, map_bytes_);
  map_ = nullptr;
}

absl::StatusOr<MappedShard> MappedShard::Open(const std::string& path, const ShardHeader& expected,
                                              const ShardInfo& expected_info, bool verify_crc) {
  const int fd = ::open(path.c_str(), O_RDONLY);
  if (fd < 0) return absl::NotFoundError(absl::StrCat("cannot open shard ", path, ": ", std::strerror(errno)));
  struct stat st;
  if (::fstat(fd, &st) != 0) {
    const int e = errno;
    ::close(fd);
    return absl::DataLossError(absl::StrCat("cannot stat ", path, ": ", std::strerror(e)));
  }
  const size_t size = static_cast<size_t>(st.st_size);
  MappedShard shard;
  if (size > 0) {
    void* map = ::mmap(nullptr, size, PROT_READ, MAP_SHARED, fd, 0);
    if (map == MAP_FAILED) {
      const int e = errno;
      ::close(fd);
      return absl::DataLossError(absl::StrCat("cannot mmap ", path, ": ", std::strerror(e)));
    }
    shard.map_ = map;
    shard.map_bytes_ = size;
  }
  ::close(fd);
  const auto* bytes = static_cast<const unsigned char*>(shard.map_);
  ASSIGN_OR_RETURN(const ShardHeader h, ParseShardHeader(bytes, size, path));
  if (h.vocab_hash != expected.vocab_hash || h.vocab_size != expected.vocab_size) {
    return absl::FailedPreconditionError(absl::StrFormat(
        "%s: made with a different vocabulary (vocab hash %016x, size %u) than the manifest says (hash %016x, size %u)", path,
        h.vocab_hash, h.vocab_size, expected.vocab_hash, expected.vocab_size));
  }
  if (h.dtype != expected.dtype || h.seq_len != expected.seq_len) {
    return absl::InvalidArgumentError(absl::StrCat(path, ": holds ", DtypeName(h.dtype), " rows of ", h.seq_len, " ids, expected ",
                                                   DtypeName(expected.dtype), " rows of ", expected.seq_len));
  }
  if (static_cast<int64_t>(h.sequences) != expected_info.sequences) {
    return absl::InvalidArgumentError(
        absl::StrCat(path, ": header says ", h.sequences, " sequences, the manifest says ", expected_info.sequences));
  }
  const uint64_t want_bytes = kShardHeaderBytes + h.sequences * h.seq_len * static_cast<uint64_t>(h.dtype);
  if (size != want_bytes || size != expected_info.bytes) {
    return absl::DataLossError(absl::StrCat(path, ": ", size, " bytes, expected ", expected_info.bytes, " (", h.sequences,
                                            " sequences of ", h.seq_len, " ", DtypeName(h.dtype), " ids plus the header)",
                                            size < want_bytes ? "; the file is truncated" : ""));
  }
  if (verify_crc) {
    const uint32_t crc = Crc32(Crc32(0, nullptr, 0), bytes, size);
    if (crc != expected_info.crc32) {
      return absl::DataLossError(
          absl::StrFormat("%s: CRC-32 %08x does not match the manifest's %08x (the file is corrupt or from another run)", path,
                          crc, expected_info.crc32));
    }
  }
  ::madvise(shard.map_, size, MADV_RANDOM);
  shard.payload_ = bytes + kShardHeaderBytes;
  shard.dtype_ = h.dtype;
  shard.seq_len_ = h.seq_len;
  shard.sequences_ = static_cast<int64_t>(h.sequences);
  return shard;
}

void MappedShard::CopyRow(int64_t i, int32_t* out) const {
  const size_t width = static_cast<size_t>(dtype_);
  const unsigned char* row = payload_ + static_cast<size_t>(i) * static_cast<size_t>(seq_len_) * width;
  if (dtype_ == ShardDtype::kUint16) {
    for (int64_t t = 0; t < seq_len_; ++t) {
      uint16_t v;
      std::memcpy(&v, row + 2 * t, 2);
      out[t] = v;
    }
  } else {
    std::memcpy(out, row, static_cast<size_t>(seq_len_) * 4);
  }
}

}  // namespace lamina
