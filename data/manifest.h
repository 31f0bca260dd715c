// manifest.json of a prepared MLM dataset directory: what the shards hold and how they were made.
// `lamina prepare` writes it last (atomically), so a directory with a manifest is complete; readers
// check every shard against it (see data/dataset.h).
//
// Layout (all counts are integers; hashes are lower-case hex strings):
//   {"format": "lamina-mlm-shards", "format_version": 1,
//    "vocab_hash": "<16 hex digits, FNV-1a 64 of vocab.txt>", "vocab_size": 30522,
//    "special_ids": {"pad": 0, "unk": 100, "cls": 101, "sep": 102, "mask": 103},
//    "seq_len": 128, "dtype": "uint16" | "int32",
//    "splits": {"train": {"documents": D, "sequences": S, "tokens": T, "padding": P,
//                         "shards": [{"file": "train-00000.bin", "sequences": n, "bytes": b,
//                                     "crc32": "<8 hex digits of the whole file>"}, ...]},
//               "val": {...}},
//    "sources": [{"path": "...", "bytes": b, "compression": "xz", "layout": "wikiextractor",
//                 "text_bytes": t, "documents": d}, ...],
//    "options": {"val_docs": N, "max_docs": M, "max_bytes": B, "sequences_per_shard": K}}
// "tokens" counts document wordpieces (no [CLS]/[SEP]/[PAD]); "padding" counts [PAD] fill.
// Nothing run-dependent (times, thread counts, absolute output paths) is recorded, so preparing
// the same inputs twice gives byte-identical files.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "data/shard.h"
#include "data/wordpiece.h"

namespace lamina {

inline constexpr int kManifestFormatVersion = 1;
inline constexpr char kManifestFile[] = "manifest.json";
// The longest rows a dataset may have; anything longer in a manifest is taken for corruption.
inline constexpr int kMaxSeqLen = 1 << 20;

struct SplitInfo {
  int64_t documents = 0, sequences = 0, tokens = 0, padding = 0;
  std::vector<ShardInfo> shards;
};

struct SourceInfo {
  std::string path;
  uint64_t bytes = 0;       // file size on disk
  std::string compression;  // "plain", "xz" or "gzip"
  std::string layout;       // "wikiextractor" or "plain"
  uint64_t text_bytes = 0;  // decompressed bytes read (less than the whole file with --max-bytes/--max-docs)
  int64_t documents = 0;    // documents read from this file (including empty ones)
};

struct Manifest {
  uint64_t vocab_hash = 0;
  int32_t vocab_size = 0;
  SpecialIds special;
  int32_t seq_len = 0;
  ShardDtype dtype = ShardDtype::kUint16;
  SplitInfo train, val;
  std::vector<SourceInfo> sources;
  int64_t val_docs = 0, max_docs = 0, max_bytes = 0, sequences_per_shard = 0;

  std::string ToJson() const;
  // Parses manifest text; `path` names the file in error messages.
  static absl::StatusOr<Manifest> Parse(const std::string& text, const std::string& path);
};

}  // namespace lamina
