#include "data/manifest.h"

#include <cstdlib>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "core/json_file.h"
#include "core/status.h"
#include "nlohmann/json.hpp"

namespace lamina {
namespace {

using OrderedJson = nlohmann::ordered_json;
using Json = nlohmann::json;

OrderedJson SplitToJson(const SplitInfo& s) {
  OrderedJson shards = OrderedJson::array();
  for (const ShardInfo& sh : s.shards) {
    shards.push_back(OrderedJson{{"file", sh.file}, {"sequences", sh.sequences}, {"bytes", sh.bytes},
                                 {"crc32", absl::StrFormat("%08x", sh.crc32)}});
  }
  return OrderedJson{{"documents", s.documents}, {"sequences", s.sequences}, {"tokens", s.tokens}, {"padding", s.padding},
                     {"shards", shards}};
}

// Reads manifest fields with errors that name the file and the key.
class Reader {
 public:
  explicit Reader(const std::string& path) : path_(path) {}

  absl::StatusOr<const Json*> Field(const Json& obj, const std::string& key, const std::string& where) const {
    if (!obj.is_object() || !obj.contains(key)) {
      return absl::InvalidArgumentError(absl::StrCat(path_, ": missing key \"", where, key, "\""));
    }
    return &obj.at(key);
  }
  absl::StatusOr<int64_t> Int(const Json& obj, const std::string& key, const std::string& where = "") const {
    ASSIGN_OR_RETURN(const Json* v, Field(obj, key, where));
    // Every integer of a manifest is a count, a size or an id: 0 .. 2^63-1 (a larger one would
    // read as negative).
    const bool in_range = v->is_number_unsigned() ? v->get<uint64_t>() <= uint64_t{INT64_MAX}
                                                  : v->is_number_integer() && v->get<int64_t>() >= 0;
    if (!in_range) {
      return absl::InvalidArgumentError(
          absl::StrCat(path_, ": \"", where, key, "\" must be an integer from 0 to 2^63-1, got ", v->dump()));
    }
    return v->get<int64_t>();
  }
  absl::StatusOr<std::string> String(const Json& obj, const std::string& key, const std::string& where = "") const {
    ASSIGN_OR_RETURN(const Json* v, Field(obj, key, where));
    if (!v->is_string()) return absl::InvalidArgumentError(absl::StrCat(path_, ": \"", where, key, "\" must be a string"));
    return v->get<std::string>();
  }
  absl::StatusOr<uint64_t> Hex(const Json& obj, const std::string& key, const std::string& where = "") const {
    ASSIGN_OR_RETURN(const std::string s, String(obj, key, where));
    uint64_t v = 0;
    if (s.empty() || s.size() > 16 || !absl::SimpleHexAtoi(s, &v)) {
      return absl::InvalidArgumentError(absl::StrCat(path_, ": \"", where, key, "\" must be a hex string, got \"", s, "\""));
    }
    return v;
  }

  absl::StatusOr<SplitInfo> Split(const Json& splits, const std::string& name) const {
    ASSIGN_OR_RETURN(const Json* s, Field(splits, name, "splits."));
    const std::string where = absl::StrCat("splits.", name, ".");
    SplitInfo info;
    ASSIGN_OR_RETURN(info.documents, Int(*s, "documents", where));
    ASSIGN_OR_RETURN(info.sequences, Int(*s, "sequences", where));
    ASSIGN_OR_RETURN(info.tokens, Int(*s, "tokens", where));
    ASSIGN_OR_RETURN(info.padding, Int(*s, "padding", where));
    ASSIGN_OR_RETURN(const Json* shards, Field(*s, "shards", where));
    if (!shards->is_array()) return absl::InvalidArgumentError(absl::StrCat(path_, ": \"", where, "shards\" must be an array"));
    int64_t total = 0;
    for (size_t i = 0; i < shards->size(); ++i) {
      const std::string w = absl::StrCat(where, "shards[", i, "].");
      ShardInfo sh;
      ASSIGN_OR_RETURN(sh.file, String((*shards)[i], "file", w));
      ASSIGN_OR_RETURN(sh.sequences, Int((*shards)[i], "sequences", w));
      ASSIGN_OR_RETURN(const int64_t bytes, Int((*shards)[i], "bytes", w));
      ASSIGN_OR_RETURN(const uint64_t crc, Hex((*shards)[i], "crc32", w));
      if (sh.file.empty() || sh.file.find('/') != std::string::npos) {
        return absl::InvalidArgumentError(absl::StrCat(path_, ": \"", w, "file\" must be a plain file name, got \"", sh.file, "\""));
      }
      sh.bytes = static_cast<uint64_t>(bytes);
      sh.crc32 = static_cast<uint32_t>(crc);
      total += sh.sequences;
      info.shards.push_back(std::move(sh));
    }
    if (total != info.sequences) {
      return absl::InvalidArgumentError(
          absl::StrCat(path_, ": split ", name, " lists ", info.sequences, " sequences but its shards hold ", total));
    }
    return info;
  }

 private:
  const std::string& path_;
};

}  // namespace

std::string Manifest::ToJson() const {
  OrderedJson sources_json = OrderedJson::array();
  for (const SourceInfo& s : sources) {
    sources_json.push_back(OrderedJson{{"path", s.path},
                                       {"bytes", s.bytes},
                                       {"compression", s.compression},
                                       {"layout", s.layout},
                                       {"text_bytes", s.text_bytes},
                                       {"documents", s.documents}});
  }
  OrderedJson j{{"format", "lamina-mlm-shards"},
                {"format_version", kManifestFormatVersion},
                {"vocab_hash", absl::StrFormat("%016x", vocab_hash)},
                {"vocab_size", vocab_size},
                {"special_ids",
                 OrderedJson{{"pad", special.pad}, {"unk", special.unk}, {"cls", special.cls}, {"sep", special.sep}, {"mask", special.mask}}},
                {"seq_len", seq_len},
                {"dtype", DtypeName(dtype)},
                {"splits", OrderedJson{{"train", SplitToJson(train)}, {"val", SplitToJson(val)}}},
                {"sources", sources_json},
                {"options", OrderedJson{{"val_docs", val_docs},
                                        {"max_docs", max_docs},
                                        {"max_bytes", max_bytes},
                                        {"sequences_per_shard", sequences_per_shard}}}};
  return j.dump(2) + "\n";
}

absl::StatusOr<Manifest> Manifest::Parse(const std::string& text, const std::string& path) {
  ASSIGN_OR_RETURN(const Json j, ParseJson(text, path));
  Reader r(path);
  ASSIGN_OR_RETURN(const std::string format, r.String(j, "format"));
  if (format != "lamina-mlm-shards") {
    return absl::InvalidArgumentError(absl::StrCat(path, ": \"format\" is \"", format, "\", expected \"lamina-mlm-shards\""));
  }
  ASSIGN_OR_RETURN(const int64_t version, r.Int(j, "format_version"));
  if (version != kManifestFormatVersion) {
    return absl::InvalidArgumentError(absl::StrCat(path, ": format_version ", version, ", this build reads version ",
                                                   kManifestFormatVersion, " (re-run `lamina prepare`)"));
  }
  Manifest m;
  ASSIGN_OR_RETURN(m.vocab_hash, r.Hex(j, "vocab_hash"));
  ASSIGN_OR_RETURN(const int64_t vocab_size, r.Int(j, "vocab_size"));
  ASSIGN_OR_RETURN(const int64_t seq_len, r.Int(j, "seq_len"));
  if (vocab_size <= 0 || vocab_size > (int64_t{1} << 31) - 1 || seq_len < 3 || seq_len > kMaxSeqLen) {
    return absl::InvalidArgumentError(absl::StrCat(path, ": implausible vocab_size ", vocab_size, " or seq_len ", seq_len));
  }
  m.vocab_size = static_cast<int32_t>(vocab_size);
  m.seq_len = static_cast<int32_t>(seq_len);
  ASSIGN_OR_RETURN(const std::string dtype, r.String(j, "dtype"));
  if (dtype == "uint16") {
    m.dtype = ShardDtype::kUint16;
  } else if (dtype == "int32") {
    m.dtype = ShardDtype::kInt32;
  } else {
    return absl::InvalidArgumentError(absl::StrCat(path, ": \"dtype\" is \"", dtype, "\", expected \"uint16\" or \"int32\""));
  }
  ASSIGN_OR_RETURN(const Json* special, r.Field(j, "special_ids", ""));
  struct {
    const char* key;
    int32_t* out;
  } ids[] = {{"pad", &m.special.pad}, {"unk", &m.special.unk}, {"cls", &m.special.cls}, {"sep", &m.special.sep}, {"mask", &m.special.mask}};
  for (auto& id : ids) {
    ASSIGN_OR_RETURN(const int64_t v, r.Int(*special, id.key, "special_ids."));
    if (v < 0 || v >= vocab_size) return absl::InvalidArgumentError(absl::StrCat(path, ": special_ids.", id.key, " = ", v, " is outside the vocab"));
    *id.out = static_cast<int32_t>(v);
  }
  ASSIGN_OR_RETURN(const Json* splits, r.Field(j, "splits", ""));
  ASSIGN_OR_RETURN(m.train, r.Split(*splits, "train"));
  ASSIGN_OR_RETURN(m.val, r.Split(*splits, "val"));
  ASSIGN_OR_RETURN(const Json* sources, r.Field(j, "sources", ""));
  if (!sources->is_array()) return absl::InvalidArgumentError(absl::StrCat(path, ": \"sources\" must be an array"));
  for (size_t i = 0; i < sources->size(); ++i) {
    const std::string w = absl::StrCat("sources[", i, "].");
    const Json& s = (*sources)[i];
    SourceInfo src;
    ASSIGN_OR_RETURN(src.path, r.String(s, "path", w));
    ASSIGN_OR_RETURN(const int64_t bytes, r.Int(s, "bytes", w));
    ASSIGN_OR_RETURN(src.compression, r.String(s, "compression", w));
    ASSIGN_OR_RETURN(src.layout, r.String(s, "layout", w));
    ASSIGN_OR_RETURN(const int64_t text_bytes, r.Int(s, "text_bytes", w));
    ASSIGN_OR_RETURN(src.documents, r.Int(s, "documents", w));
    src.bytes = static_cast<uint64_t>(bytes);
    src.text_bytes = static_cast<uint64_t>(text_bytes);
    m.sources.push_back(std::move(src));
  }
  ASSIGN_OR_RETURN(const Json* options, r.Field(j, "options", ""));
  ASSIGN_OR_RETURN(m.val_docs, r.Int(*options, "val_docs", "options."));
  ASSIGN_OR_RETURN(m.max_docs, r.Int(*options, "max_docs", "options."));
  ASSIGN_OR_RETURN(m.max_bytes, r.Int(*options, "max_bytes", "options."));
  ASSIGN_OR_RETURN(m.sequences_per_shard, r.Int(*options, "sequences_per_shard", "options."));
  return m;
}

}  // namespace lamina
