#include "data/loader.h"

#include <utility>

#include "absl/strings/str_cat.h"
#include "core/philox.h"
#include "core/status.h"
#include "nlohmann/json.hpp"

namespace lamina {
namespace {

// Fills `batch` with the given split rows, masked for (seed, epoch).
void FillBatch(const TokenSplit& split, int32_t pad_id, const int64_t* rows, int64_t count, const MaskingVocab& vocab,
               const MaskingConfig& masking, uint64_t seed, uint64_t epoch, EncoderBatch* batch) {
  const int seq = split.seq_len();
  batch->batch = count;
  batch->seq = seq;
  const size_t n = static_cast<size_t>(count) * static_cast<size_t>(seq);
  batch->input_ids.resize(n);
  batch->token_types.assign(n, 0);
  batch->attention_mask.resize(n);
  batch->mlm_positions.clear();
  batch->mlm_labels.clear();
  batch->labels.clear();
  for (int64_t b = 0; b < count; ++b) {
    int32_t* ids = batch->input_ids.data() + b * seq;
    split.CopyRow(rows[b], ids);
    int32_t* attention = batch->attention_mask.data() + b * seq;
    for (int t = 0; t < seq; ++t) attention[t] = ids[t] != pad_id ? 1 : 0;
    const size_t before = batch->mlm_positions.size();
    MaskSequence(vocab, masking, seed, epoch, rows[b], ids, seq, &batch->mlm_positions, &batch->mlm_labels);
    for (size_t i = before; i < batch->mlm_positions.size(); ++i) batch->mlm_positions[i] += static_cast<int32_t>(b * seq);
  }
}

absl::Status CheckVocab(const MlmDataset& dataset, const MaskingVocab& vocab) {
  if (static_cast<int64_t>(vocab.special.size()) != dataset.manifest().vocab_size ||
      vocab.mask_id != dataset.manifest().special.mask) {
    return absl::FailedPreconditionError(absl::StrCat("the vocab has ", vocab.special.size(), " tokens and [MASK] = ", vocab.mask_id,
                                                      " but ", dataset.dir(), " was prepared with ", dataset.manifest().vocab_size,
                                                      " tokens and [MASK] = ", dataset.manifest().special.mask));
  }
  return absl::OkStatus();
}

}  // namespace

std::vector<int64_t> EpochPermutation(uint64_t seed, uint64_t epoch, int64_t n) {
  std::vector<int64_t> perm(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i) perm[i] = i;
  const uint64_t stream = MakeStream(kShuffleStreamTag, epoch);
  for (int64_t i = n - 1; i > 0; --i) {
    // j uniform in [0, i] from 64 random bits (two draws), so the bias is below n / 2^64.
    const uint64_t bits = static_cast<uint64_t>(PhiloxAt(seed, stream, 2 * static_cast<uint64_t>(i))) << 32 |
                          PhiloxAt(seed, stream, 2 * static_cast<uint64_t>(i) + 1);
    const int64_t j = static_cast<int64_t>((static_cast<unsigned __int128>(bits) * static_cast<uint64_t>(i + 1)) >> 64);
    std::swap(perm[i], perm[j]);
  }
  return perm;
}

// ---------------------------------------------------------------------------------------------
// LoaderPosition

std::string LoaderPosition::ToJson() const {
  nlohmann::ordered_json j{{"epoch", epoch}, {"step", step}, {"seed", seed}, {"global_batch", global_batch},
                           {"train_sequences", train_sequences}};
  return j.dump();
}

absl::StatusOr<LoaderPosition> LoaderPosition::FromJson(const std::string& text) {
  const nlohmann::json j = nlohmann::json::parse(text, nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded() || !j.is_object()) return absl::InvalidArgumentError(absl::StrCat("loader position is not a JSON object: ", text));
  LoaderPosition p;
  for (auto [key, out] : {std::pair{"epoch", &p.epoch}, std::pair{"step", &p.step}, std::pair{"global_batch", &p.global_batch},
                          std::pair{"train_sequences", &p.train_sequences}}) {
    if (!j.contains(key) || !j[key].is_number_integer()) {
      return absl::InvalidArgumentError(absl::StrCat("loader position: missing integer \"", key, "\" in ", text));
    }
    *out = j[key].get<int64_t>();
  }
  if (!j.contains("seed") || !j["seed"].is_number_unsigned()) {
    return absl::InvalidArgumentError(absl::StrCat("loader position: missing unsigned \"seed\" in ", text));
  }
  p.seed = j["seed"].get<uint64_t>();
  return p;
}

// ---------------------------------------------------------------------------------------------
// MlmTrainLoader

MlmTrainLoader::MlmTrainLoader(std::shared_ptr<const MlmDataset> dataset, MaskingVocab vocab, LoaderConfig config)
    : dataset_(std::move(dataset)), vocab_(std::move(vocab)), config_(config) {
  steps_per_epoch_ = dataset_->train().num_sequences() / config_.global_batch;
}

absl::StatusOr<std::unique_ptr<MlmTrainLoader>> MlmTrainLoader::Create(std::shared_ptr<const MlmDataset> dataset,
                                                                       MaskingVocab vocab, LoaderConfig config) {
  if (config.micro_batch <= 0 || config.world <= 0 || config.accumulation <= 0 ||
      config.global_batch != config.micro_batch * config.world * config.accumulation) {
    return absl::InvalidArgumentError(absl::StrCat("global batch ", config.global_batch, " must equal micro batch ", config.micro_batch,
                                                   " x world size ", config.world, " x accumulation ", config.accumulation));
  }
  if (config.rank < 0 || config.rank >= config.world) {
    return absl::InvalidArgumentError(absl::StrCat("rank ", config.rank, " is outside world size ", config.world));
  }
  if (config.prefetch < 0) return absl::InvalidArgumentError(absl::StrCat("prefetch depth ", config.prefetch, " is negative"));
  const int64_t rows = dataset->train().num_sequences();
  if (rows < config.global_batch) {
    return absl::InvalidArgumentError(absl::StrCat("the train split of ", dataset->dir(), " holds ", rows,
                                                   " sequences, fewer than one global batch of ", config.global_batch));
  }
  RETURN_IF_ERROR(CheckVocab(*dataset, vocab));
  std::unique_ptr<MlmTrainLoader> loader(new MlmTrainLoader(std::move(dataset), std::move(vocab), config));
  loader->StartPrefetch();
  return loader;
}

MlmTrainLoader::~MlmTrainLoader() { StopPrefetch(); }

StepBatch MlmTrainLoader::Build(int64_t epoch, int64_t step) {
  if (perm_epoch_ != epoch) {
    perm_ = EpochPermutation(config_.seed, static_cast<uint64_t>(epoch), dataset_->train().num_sequences());
    perm_epoch_ = epoch;
  }
  const int64_t G = config_.global_batch, B = config_.micro_batch, N = config_.world;
  const int64_t* global_rows = perm_.data() + step * G;
  StepBatch out;
  out.epoch = epoch;
  out.step = step;
  out.micro_batches.resize(static_cast<size_t>(config_.accumulation));
  for (int a = 0; a < config_.accumulation; ++a) {
    const int64_t first = (a * N + config_.rank) * B;
    EncoderBatch& mb = out.micro_batches[a];
    FillBatch(dataset_->train(), dataset_->manifest().special.pad, global_rows + first, B, vocab_, config_.masking, config_.seed, static_cast<uint64_t>(epoch), &mb);
    mb.first_sample = first;
  }
  const int seq = dataset_->train().seq_len();
  scratch_.resize(static_cast<size_t>(seq));
  for (int64_t i = 0; i < G; ++i) {
    dataset_->train().CopyRow(global_rows[i], scratch_.data());
    out.global_masked += MaskedCount(vocab_, config_.masking, config_.seed, static_cast<uint64_t>(epoch), global_rows[i],
                                     scratch_.data(), seq);
  }
  return out;
}

void MlmTrainLoader::StartPrefetch() {
  build_epoch_ = next_epoch_;
  build_step_ = next_step_;
  if (config_.prefetch == 0) return;
  stop_ = false;
  worker_ = std::thread([this] { PrefetchLoop(); });
}

void MlmTrainLoader::StopPrefetch() {
  if (!worker_.joinable()) return;
  {
    std::lock_guard<std::mutex> lock(mu_);
    stop_ = true;
  }
  cv_.notify_all();
  worker_.join();
  queue_.clear();
}

void MlmTrainLoader::PrefetchLoop() {
  while (true) {
    int64_t epoch, step;
    {
      std::unique_lock<std::mutex> lock(mu_);
      cv_.wait(lock, [this] { return stop_ || static_cast<int>(queue_.size()) < config_.prefetch; });
      if (stop_) return;
      epoch = build_epoch_;
      step = build_step_;
    }
    StepBatch batch = Build(epoch, step);
    {
      std::lock_guard<std::mutex> lock(mu_);
      if (stop_) return;
      queue_.push_back(std::move(batch));
      if (++build_step_ == steps_per_epoch_) {
        build_step_ = 0;
        ++build_epoch_;
      }
    }
    cv_.notify_all();
  }
}

StepBatch MlmTrainLoader::Next() {
  StepBatch batch;
  if (config_.prefetch == 0) {
    batch = Build(next_epoch_, next_step_);
  } else {
    std::unique_lock<std::mutex> lock(mu_);
    cv_.wait(lock, [this] { return !queue_.empty(); });
    batch = std::move(queue_.front());
    queue_.pop_front();
    lock.unlock();
    cv_.notify_all();
  }
  LAMINA_CHECK(batch.epoch == next_epoch_ && batch.step == next_step_, "prefetch out of order");
  if (++next_step_ == steps_per_epoch_) {
    next_step_ = 0;
    ++next_epoch_;
  }
  return batch;
}

LoaderPosition MlmTrainLoader::position() const {
  LoaderPosition p;
  p.epoch = next_epoch_;
  p.step = next_step_;
  p.seed = config_.seed;
  p.global_batch = config_.global_batch;
  p.train_sequences = dataset_->train().num_sequences();
  return p;
}

absl::Status MlmTrainLoader::Restore(const LoaderPosition& pos) {
  const LoaderPosition here = position();
  if (pos.seed != here.seed || pos.global_batch != here.global_batch || pos.train_sequences != here.train_sequences) {
    return absl::FailedPreconditionError(absl::StrCat("cannot restore loader position ", pos.ToJson(), " into a loader with seed ",
                                                      here.seed, ", global batch ", here.global_batch, " and ",
                                                      here.train_sequences, " train sequences"));
  }
  if (pos.epoch < 0 || pos.step < 0 || pos.step >= steps_per_epoch_) {
    return absl::InvalidArgumentError(absl::StrCat("loader position ", pos.ToJson(), " is outside an epoch of ", steps_per_epoch_, " steps"));
  }
  StopPrefetch();
  next_epoch_ = pos.epoch;
  next_step_ = pos.step;
  StartPrefetch();
  return absl::OkStatus();
}

// ---------------------------------------------------------------------------------------------
// MlmValidationSet

absl::StatusOr<MlmValidationSet> MlmValidationSet::Create(std::shared_ptr<const MlmDataset> dataset, MaskingVocab vocab,
                                                          MaskingConfig masking, uint64_t seed) {
  RETURN_IF_ERROR(CheckVocab(*dataset, vocab));
  MlmValidationSet v;
  v.dataset_ = std::move(dataset);
  v.vocab_ = std::move(vocab);
  v.masking_ = masking;
  v.seed_ = seed;
  return v;
}

EncoderBatch MlmValidationSet::Batch(int64_t first, int64_t count) const {
  const int64_t end = std::min(first + count, num_sequences());
  std::vector<int64_t> rows;
  for (int64_t r = first; r < end; ++r) rows.push_back(r);
  EncoderBatch batch;
  FillBatch(dataset_->val(), dataset_->manifest().special.pad, rows.data(), static_cast<int64_t>(rows.size()), vocab_, masking_, seed_, /*epoch=*/0, &batch);
  return batch;
}

}  // namespace lamina
