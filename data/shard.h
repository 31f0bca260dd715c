// Binary token shards: fixed-length rows of token ids, written by `lamina prepare` and
// memory-mapped by the loader.
//
// File layout (little-endian):
//   bytes 0..63   header: char magic[8] = "LAMSHARD"; u32 version (1); u32 bytes per id (2 = uint16,
//                 4 = int32); u32 seq_len; u32 vocab_size; u64 vocab_hash; u64 sequences; zeros.
//   bytes 64..    sequences * seq_len ids, row-major; each row is [CLS] tokens [SEP] [PAD]...
// The manifest records each file's size and the CRC-32 (zlib) of the whole file.
#pragma once

#include <cstdint>
#include <cstdio>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace lamina {

inline constexpr char kShardMagic[8] = {'L', 'A', 'M', 'S', 'H', 'A', 'R', 'D'};
inline constexpr uint32_t kShardVersion = 1;
inline constexpr size_t kShardHeaderBytes = 64;

// Ids are stored as uint16 when every id fits (vocab_size <= 65536), else int32.
enum class ShardDtype : uint32_t { kUint16 = 2, kInt32 = 4 };

inline ShardDtype DtypeForVocab(int64_t vocab_size) {
  return vocab_size <= 65536 ? ShardDtype::kUint16 : ShardDtype::kInt32;
}
const char* DtypeName(ShardDtype d);

struct ShardHeader {
  ShardDtype dtype = ShardDtype::kUint16;
  uint32_t seq_len = 0;
  uint32_t vocab_size = 0;
  uint64_t vocab_hash = 0;
  uint64_t sequences = 0;
};

struct ShardInfo {
  std::string file;  // name within the dataset directory
  int64_t sequences = 0;
  uint64_t bytes = 0;
  uint32_t crc32 = 0;
};

// Writes rows to `dir/<split>-NNNNN.bin`, starting a new file every `sequences_per_shard` rows.
// Each file is written under a ".tmp" name and renamed once complete.
class ShardWriter {
 public:
  ShardWriter(std::string dir, std::string split, ShardHeader header, int64_t sequences_per_shard);
  ~ShardWriter();
  ShardWriter(const ShardWriter&) = delete;
  ShardWriter& operator=(const ShardWriter&) = delete;

  // Appends one row of header.seq_len ids.
  absl::Status Append(const int32_t* row);
  // Closes the last file; returns every file written, in order.
  absl::StatusOr<std::vector<ShardInfo>> Finish();

 private:
  absl::Status OpenNext();
  absl::Status CloseCurrent();

  std::string dir_, split_;
  ShardHeader header_;
  int64_t per_shard_;
  std::FILE* file_ = nullptr;
  std::string tmp_path_;
  ShardInfo current_;
  uint32_t payload_crc_ = 0;
  std::vector<char> row_bytes_;
  std::vector<ShardInfo> done_;
};

// A read-only memory mapping of one shard file, checked against what the manifest expects.
class MappedShard {
 public:
  // Maps `path` and checks magic, version, dtype, seq_len, vocab hash/size, the sequence count and
  // the file size against `expected` and `expected_info`; with `verify_crc` also the CRC-32.
  // Errors name the file and say what was expected.
  static absl::StatusOr<MappedShard> Open(const std::string& path, const ShardHeader& expected,
                                          const ShardInfo& expected_info, bool verify_crc);
  MappedShard() = default;
  MappedShard(MappedShard&& other) noexcept;
  MappedShard& operator=(MappedShard&& other) noexcept;
  ~MappedShard();

  int64_t sequences() const { return sequences_; }
  // Copies row `i` as int32 ids into out[0, seq_len).
  void CopyRow(int64_t i, int32_t* out) const;

 private:
  void Unmap();

  void* map_ = nullptr;
  size_t map_bytes_ = 0;
  const unsigned char* payload_ = nullptr;
  ShardDtype dtype_ = ShardDtype::kUint16;
  int64_t seq_len_ = 0, sequences_ = 0;
};

// Reads a shard header from the first kShardHeaderBytes of `bytes`; `path` names it in errors.
absl::StatusOr<ShardHeader> ParseShardHeader(const unsigned char* bytes, size_t size, const std::string& path);

}  // namespace lamina
