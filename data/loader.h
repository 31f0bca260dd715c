// MLM batches over a prepared dataset (data/dataset.h), for training and validation.
//
// Training order: epoch e visits the train rows in the permutation Fisher-Yates(seed, e), with
// every draw from Philox (stream MakeStream(kShuffleStreamTag, e)), so the order is the same on
// every platform and standard library. Step s of an epoch is the global batch of G rows
// perm[s*G, (s+1)*G); rows left over at the end of an epoch (fewer than G) are skipped that epoch.
// With world size N, micro-batch B and accumulation A (G = N*A*B), rank r's micro-batch a is the
// global-batch rows [(a*N + r)*B, (a*N + r + 1)*B), so concatenating the micro-batches
// (a = 0..A-1, r = 0..N-1 in that order) gives the global batch. Masks depend only on
// (seed, epoch, row) (data/masking.h), hence a sample is masked identically however the global
// batch is split.
#pragma once

#include <condition_variable>
#include <cstdint>
#include <deque>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "absl/status/statusor.h"
#include "data/dataset.h"
#include "data/masking.h"
#include "model/batch.h"

namespace lamina {

inline constexpr uint64_t kShuffleStreamTag = 0x534846;  // "SHF"

// The permutation of [0, n) for `epoch`: Fisher-Yates with Philox draws.
std::vector<int64_t> EpochPermutation(uint64_t seed, uint64_t epoch, int64_t n);

struct LoaderConfig {
  uint64_t seed = 0;
  int64_t global_batch = 0;  // G = micro_batch * world * accumulation
  int64_t micro_batch = 0;
  int rank = 0, world = 1, accumulation = 1;
  MaskingConfig masking;
  int prefetch = 2;  // optimizer steps built ahead by a background thread; 0 = build in Next()
};

// Where a training loader is: the next step it returns. Saved in checkpoints; the seed, global
// batch and train size are kept too so that a restore into a differently set-up loader fails.
struct LoaderPosition {
  int64_t epoch = 0, step = 0;
  uint64_t seed = 0;
  int64_t global_batch = 0, train_sequences = 0;

  std::string ToJson() const;
  static absl::StatusOr<LoaderPosition> FromJson(const std::string& text);
  bool operator==(const LoaderPosition&) const = default;
};

// One optimizer step's data for this rank.
struct StepBatch {
  int64_t epoch = 0, step = 0;
  std::vector<EncoderBatch> micro_batches;  // `accumulation` batches, in micro-step order
  // Masked positions in the whole global batch (every rank and micro-step): the trainer divides
  // the summed MLM loss by it, so the gradient does not depend on how the batch is split.
  int64_t global_masked = 0;
};

class MlmTrainLoader {
 public:
  // Errors when G != micro_batch * world * accumulation, rank is out of range, or the train split
  // holds fewer than G sequences.
  static absl::StatusOr<std::unique_ptr<MlmTrainLoader>> Create(std::shared_ptr<const MlmDataset> dataset, MaskingVocab vocab,
                                                                LoaderConfig config);
  ~MlmTrainLoader();
  MlmTrainLoader(const MlmTrainLoader&) = delete;
  MlmTrainLoader& operator=(const MlmTrainLoader&) = delete;

  // The next step's batches; epochs roll over without end.
  StepBatch Next();
  // The step Next() returns next.
  LoaderPosition position() const;
  // Continues from `pos` (from position() of a loader with the same seed, global batch and data).
  absl::Status Restore(const LoaderPosition& pos);

  int64_t steps_per_epoch() const { return steps_per_epoch_; }
  const LoaderConfig& config() const { return config_; }

 private:
  MlmTrainLoader(std::shared_ptr<const MlmDataset> dataset, MaskingVocab vocab, LoaderConfig config);
  StepBatch Build(int64_t epoch, int64_t step);
  void StartPrefetch();
  void StopPrefetch();
  void PrefetchLoop();

  std::shared_ptr<const MlmDataset> dataset_;
  MaskingVocab vocab_;
  LoaderConfig config_;
  int64_t steps_per_epoch_ = 0;
  // Used only by whichever thread builds batches (the prefetch thread, or the caller of Next()).
  int64_t perm_epoch_ = -1;
  std::vector<int64_t> perm_;
  std::vector<int32_t> scratch_;

  // The next step Next() returns, and the next one the builder makes.
  int64_t next_epoch_ = 0, next_step_ = 0;
  int64_t build_epoch_ = 0, build_step_ = 0;
  std::mutex mu_;
  std::condition_variable cv_;
  std::deque<StepBatch> queue_;
  bool stop_ = false;
  std::thread worker_;
};

// The validation split with fixed masks (epoch 0 of `seed`), read in row order.
class MlmValidationSet {
 public:
  static constexpr uint64_t kDefaultSeed = 0x5EED0FA1;

  // Errors when `vocab` is not the one the dataset was prepared with.
  static absl::StatusOr<MlmValidationSet> Create(std::shared_ptr<const MlmDataset> dataset, MaskingVocab vocab,
                                                 MaskingConfig masking, uint64_t seed = kDefaultSeed);

  int64_t num_sequences() const { return dataset_->val().num_sequences(); }
  int64_t num_batches(int64_t batch_size) const { return (num_sequences() + batch_size - 1) / batch_size; }
  // Rows [first, first + count) clipped to the split (the last batch may be short);
  // first_sample = 0.
  EncoderBatch Batch(int64_t first, int64_t count) const;

 private:
  MlmValidationSet() = default;
  std::shared_ptr<const MlmDataset> dataset_;
  MaskingVocab vocab_;
  MaskingConfig masking_;
  uint64_t seed_ = 0;
};

}  // namespace lamina
