#include "core/safetensors.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <bit>
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <limits>
#include <set>
#include <tuple>

#include "absl/strings/str_cat.h"
#include "core/bf16.h"
#include "core/f16.h"
#include "core/file_util.h"
#include "core/status.h"
#include "nlohmann/json.hpp"

namespace lamina {

static_assert(std::endian::native == std::endian::little, "safetensors data is little-endian");

namespace {

constexpr char kMetadataKey[] = "__metadata__";
// The header object is depth 0, an entry 1, its shape 2; one more level still gets a precise error.
constexpr int kMaxHeaderDepth = 3;

absl::StatusOr<DType> ParseDType(const std::string& s) {
  if (s == "F32") return DType::kF32;
  if (s == "F16") return DType::kF16;
  if (s == "BF16") return DType::kBF16;
  if (s == "I32") return DType::kI32;
  return absl::InvalidArgumentError(absl::StrCat("unsupported dtype \"", s, "\" (supported: F32, F16, BF16, I32)"));
}

// Truncates long JSON snippets quoted in error messages.
std::string Snippet(const nlohmann::json& j) {
  std::string s = j.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
  if (s.size() > 80) s = s.substr(0, 77) + "...";
  return s;
}

// A u64 array element: non-negative integers only (nlohmann stores those as number_unsigned).
bool AsU64(const nlohmann::json& j, uint64_t* out) {
  if (!j.is_number_unsigned()) return false;
  *out = j.get<uint64_t>();
  return true;
}

absl::Status WriteAll(int fd, const void* data, size_t bytes, const std::string& path) {
  const char* p = static_cast<const char*>(data);
  while (bytes > 0) {
    const ssize_t n = ::write(fd, p, std::min<size_t>(bytes, size_t{1} << 30));
    if (n < 0) {
      if (errno == EINTR) continue;
      return absl::DataLossError(absl::StrCat("writing ", path, ": ", std::strerror(errno)));
    }
    p += n;
    bytes -= static_cast<size_t>(n);
  }
  return absl::OkStatus();
}

// The padded header (without the 8-byte length) and each tensor's byte size.
absl::StatusOr<std::string> BuildHeader(std::span<const SafetensorsEntry> tensors,
                                        const std::map<std::string, std::string>& metadata,
                                        std::vector<uint64_t>* sizes) {
  nlohmann::ordered_json header = nlohmann::ordered_json::object();
  if (!metadata.empty()) {
    nlohmann::ordered_json m = nlohmann::ordered_json::object();
    for (const auto& [k, v] : metadata) m[k] = v;
    header[kMetadataKey] = std::move(m);
  }
  std::set<std::string> seen;
  uint64_t offset = 0;
  sizes->clear();
  for (const SafetensorsEntry& t : tensors) {
    if (t.name.empty() || t.name == kMetadataKey)
      return absl::InvalidArgumentError(absl::StrCat("invalid tensor name \"", t.name, "\""));
    if (!seen.insert(t.name).second) return absl::InvalidArgumentError(absl::StrCat("duplicate tensor name \"", t.name, "\""));
    ASSIGN_OR_RETURN(std::string dtype, SafetensorsDTypeName(t.dtype));
    uint64_t numel = 1;
    for (int64_t d : t.shape) {
      if (d < 0 || __builtin_mul_overflow(numel, static_cast<uint64_t>(d), &numel))
        return absl::InvalidArgumentError(absl::StrCat("tensor \"", t.name, "\": invalid shape"));
    }
    uint64_t bytes;
    if (__builtin_mul_overflow(numel, DTypeSize(t.dtype), &bytes) || __builtin_add_overflow(offset, bytes, &bytes))
      return absl::InvalidArgumentError(absl::StrCat("tensor \"", t.name, "\": too large"));
    bytes -= offset;
    if (bytes > 0 && t.data == nullptr) return absl::InvalidArgumentError(absl::StrCat("tensor \"", t.name, "\": no data"));
    header[t.name] = {{"dtype", dtype}, {"shape", t.shape}, {"data_offsets", {offset, offset + bytes}}};
    offset += bytes;
    sizes->push_back(bytes);
  }
  std::string text;
  try {
    text = header.dump();
  } catch (const nlohmann::json::exception& e) {  // names or metadata that are not UTF-8
    return absl::InvalidArgumentError(absl::StrCat("cannot encode the header: ", e.what()));
  }
  text.append((8 - text.size() % 8) % 8, ' ');
  return text;
}

std::string LengthPrefix(uint64_t n) {
  std::string s(8, '\0');
  std::memcpy(s.data(), &n, 8);
  return s;
}

}  // namespace

absl::StatusOr<std::string> SafetensorsDTypeName(DType dtype) {
  switch (dtype) {
    case DType::kF32: return std::string("F32");
    case DType::kF16: return std::string("F16");
    case DType::kBF16: return std::string("BF16");
    case DType::kI32: return std::string("I32");
    default: return absl::InvalidArgumentError(absl::StrCat("dtype ", DTypeName(dtype), " cannot be stored in safetensors"));
  }
}

uint64_t SafetensorsTensorInfo::numel() const {
  uint64_t n = 1;
  for (int64_t d : shape) n *= static_cast<uint64_t>(d);  // cannot overflow: checked when parsed
  return n;
}

SafetensorsFile& SafetensorsFile::operator=(SafetensorsFile&& o) noexcept {
  if (this == &o) return *this;
  if (mapped_ != nullptr) ::munmap(const_cast<uint8_t*>(mapped_), size_);
  path_ = std::move(o.path_);
  owned_ = std::move(o.owned_);
  mapped_ = o.mapped_;
  size_ = o.size_;
  data_start_ = o.data_start_;
  tensors_ = std::move(o.tensors_);
  index_ = std::move(o.index_);
  metadata_ = std::move(o.metadata_);
  o.mapped_ = nullptr;
  o.size_ = 0;
  return *this;
}

SafetensorsFile::~SafetensorsFile() {
  if (mapped_ != nullptr) ::munmap(const_cast<uint8_t*>(mapped_), size_);
}

absl::StatusOr<SafetensorsFile> SafetensorsFile::Open(const std::string& path) {
  SafetensorsFile f;
  f.path_ = path;
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return absl::NotFoundError(absl::StrCat("cannot open ", path, ": ", std::strerror(errno)));
  struct stat st;
  if (::fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
    ::close(fd);
    return absl::InvalidArgumentError(absl::StrCat(path, ": not a regular file"));
  }
  f.size_ = static_cast<size_t>(st.st_size);
  if (f.size_ < 8) {
    ::close(fd);
    return absl::DataLossError(absl::StrCat(path, ": truncated: ", f.size_, " bytes, a safetensors file has at least 8"));
  }
  void* p = ::mmap(nullptr, f.size_, PROT_READ, MAP_PRIVATE, fd, 0);
  const int map_errno = errno;
  ::close(fd);
  if (p == MAP_FAILED) return absl::InternalError(absl::StrCat("cannot map ", path, ": ", std::strerror(map_errno)));
  f.mapped_ = static_cast<const uint8_t*>(p);
  RETURN_IF_ERROR(f.Parse());
  return f;
}

absl::StatusOr<SafetensorsFile> SafetensorsFile::FromBytes(std::vector<uint8_t> bytes, const std::string& name) {
  SafetensorsFile f;
  f.path_ = name;
  f.owned_ = std::move(bytes);
  f.size_ = f.owned_.size();
  RETURN_IF_ERROR(f.Parse());
  return f;
}

absl::Status SafetensorsFile::Parse() {
  auto fail = [&](auto&&... parts) { return absl::DataLossError(absl::StrCat(path_, ": ", parts...)); };
  if (size_ < 8) return fail("truncated: ", size_, " bytes, a safetensors file has at least 8");
  uint64_t header_len;
  std::memcpy(&header_len, base(), 8);
  if (header_len > kSafetensorsMaxHeaderBytes)
    return fail("header length ", header_len, " exceeds the limit of ", kSafetensorsMaxHeaderBytes, " bytes");
  if (header_len > size_ - 8)
    return fail("header length ", header_len, " runs past the end of the file (", size_, " bytes): truncated or corrupt");
  if (header_len == 0 || base()[8] != '{') return fail("header does not start with '{'");
  data_start_ = 8 + header_len;
  const uint64_t data_size = size_ - data_start_;

  // Duplicate keys are an error at every level (nlohmann would silently keep the last one).
  // Containers nested deeper than a valid header needs are dropped while parsing and reported:
  // printing or comparing a deeply nested value recurses and could exhaust the stack.
  std::vector<std::set<std::string>> keys;
  std::string duplicate;
  bool too_deep = false;
  auto callback = [&](int depth, nlohmann::json::parse_event_t event, nlohmann::json& parsed) {
    using E = nlohmann::json::parse_event_t;
    if ((event == E::object_start || event == E::array_start) && depth > kMaxHeaderDepth) {
      too_deep = true;
      return false;
    }
    if (event == E::object_start) keys.emplace_back();
    else if (event == E::object_end && !keys.empty()) keys.pop_back();
    else if (event == E::key && !keys.empty() && !keys.back().insert(parsed.get<std::string>()).second && duplicate.empty())
      duplicate = parsed.get<std::string>();
    return true;
  };
  const char* text = reinterpret_cast<const char*>(base()) + 8;
  nlohmann::json header;
  try {
    header = nlohmann::json::parse(text, text + header_len, callback, /*allow_exceptions=*/true);
  } catch (const nlohmann::json::exception& e) {
    return fail("header is not valid JSON: ", e.what());
  }
  if (too_deep) return fail("header nests deeper than ", kMaxHeaderDepth, " levels");
  if (!duplicate.empty()) return fail("header has the key \"", duplicate, "\" more than once");
  if (!header.is_object()) return fail("header is not a JSON object");

  for (const auto& item : header.items()) {
    const std::string& name = item.key();  // not a structured binding: lambdas below capture it
    const nlohmann::json& entry = item.value();
    if (name == kMetadataKey) {
      if (!entry.is_object()) return fail("__metadata__ is not an object of strings");
      for (const auto& [k, v] : entry.items()) {
        if (!v.is_string()) return fail("__metadata__.", k, " is not a string: ", Snippet(v));
        metadata_[k] = v.get<std::string>();
      }
      continue;
    }
    auto bad = [&](auto&&... parts) { return fail("tensor \"", name, "\": ", parts...); };
    if (!entry.is_object()) return bad("expected an object, got ", Snippet(entry));
    for (const auto& [k, v] : entry.items()) {
      if (k != "dtype" && k != "shape" && k != "data_offsets") return bad("unknown key \"", k, "\"");
    }
    if (!entry.contains("dtype") || !entry.contains("shape") || !entry.contains("data_offsets"))
      return bad("needs dtype, shape and data_offsets");
    SafetensorsTensorInfo t;
    t.name = name;
    const auto& dtype = entry.at("dtype");
    if (!dtype.is_string()) return bad("dtype is not a string: ", Snippet(dtype));
    auto parsed_dtype = ParseDType(dtype.get<std::string>());
    if (!parsed_dtype.ok()) return bad(parsed_dtype.status().message());
    t.dtype = *parsed_dtype;
    const auto& shape = entry.at("shape");
    if (!shape.is_array()) return bad("shape is not an array: ", Snippet(shape));
    uint64_t numel = 1;
    for (const auto& d : shape) {
      uint64_t dim;
      if (!AsU64(d, &dim) || dim > static_cast<uint64_t>(std::numeric_limits<int64_t>::max()))
        return bad("shape ", Snippet(shape), " has a dimension that is not an integer in [0, 2^63)");
      if (__builtin_mul_overflow(numel, dim, &numel)) return bad("shape ", Snippet(shape), " overflows 64 bits");
      t.shape.push_back(static_cast<int64_t>(dim));
    }
    uint64_t bytes;
    if (__builtin_mul_overflow(numel, DTypeSize(t.dtype), &bytes)) return bad("shape ", Snippet(shape), " overflows 64 bits");
    const auto& offsets = entry.at("data_offsets");
    if (!offsets.is_array() || offsets.size() != 2 || !AsU64(offsets[0], &t.begin) || !AsU64(offsets[1], &t.end))
      return bad("data_offsets must be two non-negative integers, got ", Snippet(offsets));
    if (t.begin > t.end) return bad("data_offsets [", t.begin, ", ", t.end, "] end before they begin");
    if (t.end > data_size)
      return bad("data_offsets [", t.begin, ", ", t.end, "] run past the end of the data (", data_size,
                 " bytes): truncated or corrupt");
    if (t.end - t.begin != bytes)
      return bad("data_offsets [", t.begin, ", ", t.end, "] hold ", t.end - t.begin, " bytes but ", DTypeName(t.dtype),
                 Snippet(shape), " needs ", bytes);
    tensors_.push_back(std::move(t));
  }

  // The tensors must tile the data buffer exactly, in offset order (as the reference checks).
  std::sort(tensors_.begin(), tensors_.end(), [](const SafetensorsTensorInfo& a, const SafetensorsTensorInfo& b) {
    return std::tie(a.begin, a.end, a.name) < std::tie(b.begin, b.end, b.name);
  });
  uint64_t pos = 0;
  for (size_t i = 0; i < tensors_.size(); ++i) {
    const SafetensorsTensorInfo& t = tensors_[i];
    if (t.begin < pos)
      return fail("tensor \"", t.name, "\" at [", t.begin, ", ", t.end, ") overlaps tensor \"", tensors_[i - 1].name,
                  "\" ending at ", pos);
    if (t.begin > pos) return fail("tensor \"", t.name, "\" starts at ", t.begin, ", leaving a gap after byte ", pos);
    pos = t.end;
  }
  if (pos != data_size) return fail("the tensors cover ", pos, " bytes of a ", data_size, "-byte data buffer");
  for (size_t i = 0; i < tensors_.size(); ++i) index_[tensors_[i].name] = i;
  return absl::OkStatus();
}

absl::StatusOr<const SafetensorsTensorInfo*> SafetensorsFile::Find(absl::string_view name) const {
  auto it = index_.find(std::string(name));
  if (it == index_.end()) return absl::NotFoundError(absl::StrCat(path_, ": no tensor \"", name, "\""));
  return &tensors_[it->second];
}

std::span<const uint8_t> SafetensorsFile::Data(const SafetensorsTensorInfo& t) const {
  return std::span<const uint8_t>(base() + data_start_ + t.begin, t.bytes());
}

absl::StatusOr<std::vector<float>> SafetensorsFile::ReadFloats(absl::string_view name) const {
  ASSIGN_OR_RETURN(const SafetensorsTensorInfo* t, Find(name));
  std::vector<float> out(t->numel());
  RETURN_IF_ERROR(ReadFloatsInto(*t, out));
  return out;
}

absl::Status SafetensorsFile::ReadFloatsInto(const SafetensorsTensorInfo& t, std::span<float> out) const {
  if (out.size() != t.numel())
    return absl::InvalidArgumentError(
        absl::StrCat(path_, ": tensor \"", t.name, "\" has ", t.numel(), " elements, expected ", out.size()));
  const uint8_t* src = Data(t).data();
  switch (t.dtype) {
    case DType::kF32:
      if (!out.empty()) std::memcpy(out.data(), src, out.size() * 4);
      return absl::OkStatus();
    case DType::kF16:
    case DType::kBF16:
      for (size_t i = 0; i < out.size(); ++i) {
        uint16_t h;
        std::memcpy(&h, src + 2 * i, 2);
        out[i] = t.dtype == DType::kF16 ? F16BitsToFloat(h) : Bf16BitsToFloat(h);
      }
      return absl::OkStatus();
    default:
      return absl::InvalidArgumentError(
          absl::StrCat(path_, ": tensor \"", t.name, "\" is ", DTypeName(t.dtype), ", not a floating-point type"));
  }
}

absl::StatusOr<std::string> SerializeSafetensors(std::span<const SafetensorsEntry> tensors,
                                                 const std::map<std::string, std::string>& metadata) {
  std::vector<uint64_t> sizes;
  ASSIGN_OR_RETURN(std::string header, BuildHeader(tensors, metadata, &sizes));
  std::string out = LengthPrefix(header.size()) + header;
  for (size_t i = 0; i < tensors.size(); ++i) out.append(static_cast<const char*>(tensors[i].data), sizes[i]);
  return out;
}

absl::Status WriteSafetensors(const std::string& path, std::span<const SafetensorsEntry> tensors,
                              const std::map<std::string, std::string>& metadata) {
  std::vector<uint64_t> sizes;
  auto header = BuildHeader(tensors, metadata, &sizes);
  if (!header.ok()) return Annotate(header.status(), path);
  const std::string tmp = absl::StrCat(path, ".tmp.", ::getpid());
  const int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd < 0) return absl::PermissionDeniedError(absl::StrCat("cannot create ", tmp, ": ", std::strerror(errno)));
  absl::Status s = WriteAll(fd, (LengthPrefix(header->size()) + *header).data(), 8 + header->size(), tmp);
  for (size_t i = 0; i < tensors.size() && s.ok(); ++i) s = WriteAll(fd, tensors[i].data, sizes[i], tmp);
  if (s.ok() && ::fsync(fd) != 0) s = absl::DataLossError(absl::StrCat("flushing ", tmp, ": ", std::strerror(errno)));
  if (::close(fd) != 0 && s.ok()) s = absl::DataLossError(absl::StrCat("closing ", tmp, ": ", std::strerror(errno)));
  if (s.ok() && ::rename(tmp.c_str(), path.c_str()) != 0)
    s = absl::DataLossError(absl::StrCat("renaming ", tmp, " to ", path, ": ", std::strerror(errno)));
  if (!s.ok()) {
    ::unlink(tmp.c_str());
    return s;
  }
  const std::string dir = std::filesystem::path(path).parent_path().string();
  return SyncDirectory(dir.empty() ? "." : dir);
}

}  // namespace lamina
