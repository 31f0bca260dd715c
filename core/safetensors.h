// Reading and writing safetensors files (https://github.com/huggingface/safetensors):
//
//   u64 little-endian N | N bytes of JSON header | data buffer
//   header = {"<name>": {"dtype": "F32", "shape": [2, 3], "data_offsets": [begin, end]}, ...,
//             "__metadata__": {"<key>": "<string>", ...}}   (offsets relative to the data buffer)
//
// The reader checks the whole header before any tensor byte is touched, and rejects (with an
// error naming the file and, where there is one, the tensor):
//   - a header length past the end of the file or above 100 MB (the reference implementation's cap),
//   - a header that is not a JSON object starting with '{', has duplicate keys at any level, nests
//     deeper than a header can (3 levels), has invalid UTF-8 or trailing non-space bytes,
//   - an entry that is not {dtype, shape, data_offsets} exactly (unknown keys are rejected), an
//     unsupported dtype (F32, F16, BF16 and I32 are supported), a dimension that is not a
//     non-negative integer below 2^63, an element or byte count that overflows 64 bits,
//   - data_offsets with begin > end, or end - begin != elements * dtype size,
//   - tensors that overlap, leave a gap between them, or do not cover the data buffer exactly
//     (the format forbids holes and trailing bytes, so a file cannot smuggle other content).
// Empty tensors (a zero dimension) have begin == end and may sit anywhere in the order.
//
// Files are memory-mapped: views stay valid while the SafetensorsFile lives. A file that another
// process truncates after it was opened can still fault on access (SIGBUS); lamina never does that
// to its own files (they are replaced by rename).
#pragma once

#include <cstddef>
#include <cstdint>
#include <map>
#include <span>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "core/dtype.h"

namespace lamina {

// Largest header the reader accepts (bytes), as in the reference implementation.
inline constexpr uint64_t kSafetensorsMaxHeaderBytes = 100'000'000;

// The format's dtype names ("F32", "F16", "BF16", "I32"); an error for dtypes it does not support here.
absl::StatusOr<std::string> SafetensorsDTypeName(DType dtype);

struct SafetensorsTensorInfo {
  std::string name;
  DType dtype = DType::kF32;
  std::vector<int64_t> shape;
  uint64_t begin = 0;  // byte offsets into the data buffer
  uint64_t end = 0;
  uint64_t numel() const;
  uint64_t bytes() const { return end - begin; }
};

class SafetensorsFile {
 public:
  // Maps and validates `path`.
  static absl::StatusOr<SafetensorsFile> Open(const std::string& path);
  // Validates an in-memory file (tests, fuzzing); `name` is used in error messages.
  static absl::StatusOr<SafetensorsFile> FromBytes(std::vector<uint8_t> bytes, const std::string& name);

  SafetensorsFile(SafetensorsFile&& o) noexcept { *this = std::move(o); }
  SafetensorsFile& operator=(SafetensorsFile&& o) noexcept;
  SafetensorsFile(const SafetensorsFile&) = delete;
  SafetensorsFile& operator=(const SafetensorsFile&) = delete;
  ~SafetensorsFile();

  const std::string& path() const { return path_; }
  // Tensors in the order of their data (by begin offset).
  const std::vector<SafetensorsTensorInfo>& tensors() const { return tensors_; }
  const std::map<std::string, std::string>& metadata() const { return metadata_; }
  // The tensor called `name`, or NotFound naming the file and the tensor.
  absl::StatusOr<const SafetensorsTensorInfo*> Find(absl::string_view name) const;
  // The raw little-endian bytes of a tensor of this file.
  std::span<const uint8_t> Data(const SafetensorsTensorInfo& t) const;
  // A floating-point tensor (F32, F16 or BF16) converted to float.
  absl::StatusOr<std::vector<float>> ReadFloats(absl::string_view name) const;
  // The same into `out`, which must have exactly numel() elements.
  absl::Status ReadFloatsInto(const SafetensorsTensorInfo& t, std::span<float> out) const;

 private:
  SafetensorsFile() = default;
  absl::Status Parse();
  const uint8_t* base() const { return mapped_ != nullptr ? mapped_ : owned_.data(); }

  std::string path_;
  std::vector<uint8_t> owned_;
  const uint8_t* mapped_ = nullptr;
  size_t size_ = 0;
  uint64_t data_start_ = 0;
  std::vector<SafetensorsTensorInfo> tensors_;
  std::map<std::string, size_t> index_;
  std::map<std::string, std::string> metadata_;
};

// One tensor to write: `data` points at numel * DTypeSize(dtype) bytes of host memory.
struct SafetensorsEntry {
  std::string name;
  DType dtype = DType::kF32;
  std::vector<int64_t> shape;
  const void* data = nullptr;
};

// The whole file in memory (small files: tests, fuzzing seeds). Tensors are stored in the given
// order; the header is padded with spaces to a multiple of 8 bytes, as the reference writer does.
absl::StatusOr<std::string> SerializeSafetensors(std::span<const SafetensorsEntry> tensors,
                                                 const std::map<std::string, std::string>& metadata = {});

// Streams the same bytes to `path` atomically: written to `path.tmp.PID`, fsynced, renamed over
// `path`, and the directory fsynced. A crash leaves the old file (or none), never a partial one.
absl::Status WriteSafetensors(const std::string& path, std::span<const SafetensorsEntry> tensors,
                              const std::map<std::string, std::string>& metadata = {});

}  // namespace lamina
