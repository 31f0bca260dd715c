#include "data/dataset.h"

#include <algorithm>
#include <tuple>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "core/file_util.h"
#include "core/status.h"

namespace lamina {

void TokenSplit::CopyRow(int64_t i, int32_t* out) const {
  LAMINA_CHECK(i >= 0 && i < num_sequences(), "row ", i, " of ", num_sequences());
  // The shard holding row i: the last start <= i.
  const size_t k = static_cast<size_t>(std::upper_bound(starts_.begin(), starts_.end(), i) - starts_.begin()) - 1;
  shards_[k].CopyRow(i - starts_[k], out);
}

absl::StatusOr<std::shared_ptr<const MlmDataset>> MlmDataset::Open(const std::string& dir, const DatasetOptions& options) {
  auto ds = std::make_shared<MlmDataset>();
  ds->dir_ = dir;
  const std::string manifest_path = absl::StrCat(dir, "/", kManifestFile);
  auto text = ReadFile(manifest_path);
  if (!text.ok()) {
    return absl::NotFoundError(absl::StrCat("no prepared dataset in ", dir, " (", text.status().message(),
                                            "); create one with `lamina prepare`"));
  }
  ASSIGN_OR_RETURN(ds->manifest_, Manifest::Parse(*text, manifest_path));
  const Manifest& m = ds->manifest_;
  if (options.expected_vocab_hash != 0 && m.vocab_hash != options.expected_vocab_hash) {
    return absl::FailedPreconditionError(absl::StrFormat(
        "%s: the dataset was prepared with vocab hash %016x (%d tokens) but the vocab in use has hash %016x; "
        "re-run `lamina prepare` with this vocab",
        manifest_path, m.vocab_hash, m.vocab_size, options.expected_vocab_hash));
  }
  if (const std::optional<SpecialIds>& want = options.expected_special_ids) {
    for (auto [name, have, expected] : {std::tuple{"pad", m.special.pad, want->pad}, std::tuple{"unk", m.special.unk, want->unk},
                                        std::tuple{"cls", m.special.cls, want->cls}, std::tuple{"sep", m.special.sep, want->sep},
                                        std::tuple{"mask", m.special.mask, want->mask}}) {
      if (have != expected) {
        return absl::FailedPreconditionError(absl::StrCat(manifest_path, ": special_ids.", name, " is ", have,
                                                          " but the vocab in use has it at ", expected,
                                                          "; re-run `lamina prepare` with this vocab"));
      }
    }
  }
  if (m.dtype != DtypeForVocab(m.vocab_size)) {
    return absl::InvalidArgumentError(absl::StrCat(manifest_path, ": dtype ", DtypeName(m.dtype), " does not suit vocab_size ", m.vocab_size));
  }
  ShardHeader expected;
  expected.dtype = m.dtype;
  expected.seq_len = static_cast<uint32_t>(m.seq_len);
  expected.vocab_size = static_cast<uint32_t>(m.vocab_size);
  expected.vocab_hash = m.vocab_hash;
  for (auto [info, split] : {std::pair{&m.train, &ds->train_}, std::pair{&m.val, &ds->val_}}) {
    split->seq_len_ = m.seq_len;
    split->starts_.push_back(0);
    for (const ShardInfo& sh : info->shards) {
      ASSIGN_OR_RETURN(MappedShard shard, MappedShard::Open(absl::StrCat(dir, "/", sh.file), expected, sh, options.verify_crc));
      split->starts_.push_back(split->starts_.back() + shard.sequences());
      split->shards_.push_back(std::move(shard));
    }
  }
  return std::shared_ptr<const MlmDataset>(std::move(ds));
}

}  // namespace lamina
