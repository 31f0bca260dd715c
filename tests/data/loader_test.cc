#include "data/loader.h"

#include <set>

#include "absl/strings/match.h"
#include "data/prepare.h"
#include "gtest/gtest.h"
#include "tests/data/mlm_test_util.h"

namespace lamina {
namespace {

using datatest::TempDir;

constexpr int kSeq = 16;

// A dataset of a few hundred 16-token rows (train) and a validation split, shared by the tests.
class Loader : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    dir_ = new TempDir();
    datatest::WritePlain(dir_->path("corpus.txt"), datatest::PlainCorpus(datatest::SyntheticDocs(150, 42)));
    PrepareOptions o;
    o.inputs = {dir_->path("corpus.txt")};
    o.out_dir = dir_->path("ds");
    o.seq_len = kSeq;
    o.val_docs = 10;
    o.sequences_per_shard = 64;
    o.progress = false;
    absl::StatusOr<Manifest> m = PrepareCorpus(datatest::TinyTokenizer(), o);
    ASSERT_TRUE(m.ok()) << m.status();
  }
  static void TearDownTestSuite() {
    delete dir_;
    dir_ = nullptr;
  }
  void SetUp() override {
    absl::StatusOr<std::shared_ptr<const MlmDataset>> ds = MlmDataset::Open(dir_->path("ds"));
    ASSERT_TRUE(ds.ok()) << ds.status();
    ds_ = *ds;
    ASSERT_GE(ds_->train().num_sequences(), 200);
  }

  std::unique_ptr<MlmTrainLoader> MakeLoader(int64_t micro, int world, int rank, int accumulation, int prefetch = 0,
                                              uint64_t seed = 17) {
    LoaderConfig c;
    c.seed = seed;
    c.micro_batch = micro;
    c.world = world;
    c.rank = rank;
    c.accumulation = accumulation;
    c.global_batch = micro * world * accumulation;
    c.prefetch = prefetch;
    absl::StatusOr<std::unique_ptr<MlmTrainLoader>> l = MlmTrainLoader::Create(ds_, vocab_, c);
    EXPECT_TRUE(l.ok()) << l.status();
    return l.ok() ? std::move(*l) : nullptr;
  }

  static TempDir* dir_;
  std::shared_ptr<const MlmDataset> ds_;
  WordPieceTokenizer tok_ = datatest::TinyTokenizer();
  MaskingVocab vocab_ = MaskingVocab::FromTokenizer(tok_);
};
TempDir* Loader::dir_ = nullptr;

// Concatenates batches (same seq) row-wise, rebasing mlm positions.
EncoderBatch Concat(const std::vector<const EncoderBatch*>& parts) {
  EncoderBatch out;
  for (const EncoderBatch* b : parts) {
    out.seq = b->seq;
    const int32_t base = static_cast<int32_t>(out.batch * b->seq);
    out.input_ids.insert(out.input_ids.end(), b->input_ids.begin(), b->input_ids.end());
    out.token_types.insert(out.token_types.end(), b->token_types.begin(), b->token_types.end());
    out.attention_mask.insert(out.attention_mask.end(), b->attention_mask.begin(), b->attention_mask.end());
    for (int32_t p : b->mlm_positions) out.mlm_positions.push_back(base + p);
    out.mlm_labels.insert(out.mlm_labels.end(), b->mlm_labels.begin(), b->mlm_labels.end());
    out.batch += b->batch;
  }
  return out;
}

void ExpectSameBatch(const EncoderBatch& a, const EncoderBatch& b) {
  EXPECT_EQ(a.batch, b.batch);
  EXPECT_EQ(a.seq, b.seq);
  EXPECT_EQ(a.input_ids, b.input_ids);
  EXPECT_EQ(a.token_types, b.token_types);
  EXPECT_EQ(a.attention_mask, b.attention_mask);
  EXPECT_EQ(a.mlm_positions, b.mlm_positions);
  EXPECT_EQ(a.mlm_labels, b.mlm_labels);
}

void ExpectSameStep(const StepBatch& a, const StepBatch& b) {
  EXPECT_EQ(a.epoch, b.epoch);
  EXPECT_EQ(a.step, b.step);
  EXPECT_EQ(a.global_masked, b.global_masked);
  ASSERT_EQ(a.micro_batches.size(), b.micro_batches.size());
  for (size_t i = 0; i < a.micro_batches.size(); ++i) {
    ExpectSameBatch(a.micro_batches[i], b.micro_batches[i]);
    EXPECT_EQ(a.micro_batches[i].first_sample, b.micro_batches[i].first_sample);
  }
}

TEST(EpochPermutation, IsAPermutationThatChangesWithEpochAndSeed) {
  const std::vector<int64_t> p = EpochPermutation(1, 0, 1000);
  EXPECT_EQ(std::set<int64_t>(p.begin(), p.end()).size(), 1000u);
  EXPECT_EQ(*std::max_element(p.begin(), p.end()), 999);
  EXPECT_EQ(p, EpochPermutation(1, 0, 1000));
  EXPECT_NE(p, EpochPermutation(1, 1, 1000));
  EXPECT_NE(p, EpochPermutation(2, 0, 1000));
  // Uniformity: where element 0 lands, over many epochs.
  std::vector<int> where(10, 0);
  for (int e = 0; e < 5000; ++e) {
    const std::vector<int64_t> q = EpochPermutation(3, e, 10);
    where[std::find(q.begin(), q.end(), 0) - q.begin()]++;
  }
  for (int c : where) EXPECT_NEAR(c, 500, 90);
}

TEST_F(Loader, BatchesAreTheEpochPermutationWithMasksAndLabels) {
  std::unique_ptr<MlmTrainLoader> loader = MakeLoader(8, 1, 0, 1);
  const int64_t n = ds_->train().num_sequences();
  ASSERT_EQ(loader->steps_per_epoch(), n / 8);
  const std::vector<int64_t> perm = EpochPermutation(17, 0, n);
  std::vector<int32_t> row(kSeq);
  int64_t positions = 0;
  for (int64_t s = 0; s < loader->steps_per_epoch(); ++s) {
    const StepBatch step = loader->Next();
    ASSERT_EQ(step.micro_batches.size(), 1u);
    const EncoderBatch& b = step.micro_batches[0];
    ASSERT_EQ(b.batch, 8);
    ASSERT_EQ(b.seq, kSeq);
    EXPECT_EQ(b.first_sample, 0);
    EXPECT_EQ(static_cast<int64_t>(b.mlm_positions.size()), step.global_masked);
    positions += step.global_masked;
    // Undoing the masks gives back the permuted rows.
    std::vector<int32_t> ids = b.input_ids;
    for (size_t i = 0; i < b.mlm_positions.size(); ++i) ids[b.mlm_positions[i]] = b.mlm_labels[i];
    for (int r = 0; r < 8; ++r) {
      ds_->train().CopyRow(perm[s * 8 + r], row.data());
      ASSERT_TRUE(std::equal(row.begin(), row.end(), ids.begin() + r * kSeq)) << "step " << s << " row " << r;
      for (int t = 0; t < kSeq; ++t) {
        EXPECT_EQ(b.attention_mask[r * kSeq + t], row[t] != tok_.pad_id());
        EXPECT_EQ(b.token_types[r * kSeq + t], 0);
      }
    }
  }
  EXPECT_GT(positions, 0);
  // The next epoch starts over with another order.
  const StepBatch next = loader->Next();
  EXPECT_EQ(next.epoch, 1);
  EXPECT_EQ(next.step, 0);
}

TEST_F(Loader, RanksAndAccumulationSplitTheSameGlobalBatch) {
  // G = 16 split as 1x1x16, 2 ranks x 2 micro-steps x 4, 4 ranks x 1 x 4, 1 rank x 4 x 4, 2 x 4 x 2.
  struct Split {
    int world, accumulation;
  };
  std::unique_ptr<MlmTrainLoader> one = MakeLoader(16, 1, 0, 1);
  std::vector<StepBatch> reference;
  for (int s = 0; s < one->steps_per_epoch() + 2; ++s) reference.push_back(one->Next());  // crosses an epoch
  for (Split split : {Split{2, 2}, Split{4, 1}, Split{1, 4}, Split{2, 4}}) {
    const int64_t micro = 16 / (split.world * split.accumulation);
    std::vector<std::unique_ptr<MlmTrainLoader>> ranks;
    for (int r = 0; r < split.world; ++r) ranks.push_back(MakeLoader(micro, split.world, r, split.accumulation));
    for (const StepBatch& want : reference) {
      std::vector<StepBatch> got;
      for (auto& l : ranks) got.push_back(l->Next());
      std::vector<const EncoderBatch*> parts;
      for (int a = 0; a < split.accumulation; ++a) {
        for (int r = 0; r < split.world; ++r) {
          const EncoderBatch& b = got[r].micro_batches[a];
          EXPECT_EQ(b.first_sample, (a * split.world + r) * micro);
          parts.push_back(&b);
        }
      }
      for (const StepBatch& g : got) EXPECT_EQ(g.global_masked, want.global_masked);
      SCOPED_TRACE(::testing::Message() << "world " << split.world << " accumulation " << split.accumulation << " step " << want.step);
      ExpectSameBatch(Concat(parts), want.micro_batches[0]);
    }
  }
}

TEST_F(Loader, PrefetchGivesTheSynchronousBatches) {
  std::unique_ptr<MlmTrainLoader> sync = MakeLoader(4, 2, 1, 2, /*prefetch=*/0);
  std::unique_ptr<MlmTrainLoader> ahead = MakeLoader(4, 2, 1, 2, /*prefetch=*/3);
  for (int s = 0; s < sync->steps_per_epoch() + 5; ++s) ExpectSameStep(sync->Next(), ahead->Next());
}

TEST_F(Loader, ResumeContinuesExactly) {
  for (int prefetch : {0, 2}) {
    std::unique_ptr<MlmTrainLoader> a = MakeLoader(4, 1, 0, 2, prefetch);
    const int64_t spe = a->steps_per_epoch();
    for (int s = 0; s < spe - 2; ++s) a->Next();
    const std::string saved = a->position().ToJson();
    std::vector<StepBatch> want;
    for (int s = 0; s < 5; ++s) want.push_back(a->Next());  // crosses into epoch 1
    EXPECT_EQ(want.back().epoch, 1);

    std::unique_ptr<MlmTrainLoader> b = MakeLoader(4, 1, 0, 2, prefetch);
    b->Next();  // a loader that has already moved on restores as well as a fresh one
    absl::StatusOr<LoaderPosition> pos = LoaderPosition::FromJson(saved);
    ASSERT_TRUE(pos.ok()) << pos.status();
    EXPECT_EQ(pos->step, spe - 2);
    ASSERT_TRUE(b->Restore(*pos).ok());
    EXPECT_EQ(b->position(), *pos);
    for (const StepBatch& w : want) ExpectSameStep(b->Next(), w);
  }
}

TEST_F(Loader, RestoreRefusesAnotherSetup) {
  std::unique_ptr<MlmTrainLoader> a = MakeLoader(4, 1, 0, 2);
  std::unique_ptr<MlmTrainLoader> other_seed = MakeLoader(4, 1, 0, 2, 0, /*seed=*/18);
  std::unique_ptr<MlmTrainLoader> other_batch = MakeLoader(4, 1, 0, 1);
  const absl::Status s1 = other_seed->Restore(a->position());
  EXPECT_TRUE(absl::StrContains(s1.message(), "seed")) << s1;
  EXPECT_FALSE(other_batch->Restore(a->position()).ok());
  LoaderPosition past_end = a->position();
  past_end.step = a->steps_per_epoch();
  EXPECT_FALSE(a->Restore(past_end).ok());
  EXPECT_FALSE(LoaderPosition::FromJson("{\"epoch\": 1}").ok());
}

TEST_F(Loader, BadConfigurationsAreErrors) {
  LoaderConfig c;
  c.micro_batch = 4;
  c.world = 2;
  c.global_batch = 16;  // != 4 * 2 * 1
  EXPECT_FALSE(MlmTrainLoader::Create(ds_, vocab_, c).ok());
  c.global_batch = 8;
  c.rank = 2;
  EXPECT_FALSE(MlmTrainLoader::Create(ds_, vocab_, c).ok());
  c.rank = 0;
  c.micro_batch = 100000;
  c.global_batch = 200000;
  const absl::Status s = MlmTrainLoader::Create(ds_, vocab_, c).status();
  EXPECT_TRUE(absl::StrContains(s.message(), "fewer than one global batch")) << s;
  MaskingVocab bigger = vocab_;
  bigger.special.push_back(0);
  c.micro_batch = 4;
  c.global_batch = 8;
  EXPECT_FALSE(MlmTrainLoader::Create(ds_, bigger, c).ok());
  EXPECT_FALSE(MlmValidationSet::Create(ds_, bigger, MaskingConfig()).ok());
}

TEST_F(Loader, ValidationSetIsFixedAndInOrder) {
  absl::StatusOr<MlmValidationSet> val = MlmValidationSet::Create(ds_, vocab_, MaskingConfig());
  ASSERT_TRUE(val.ok()) << val.status();
  const int64_t n = val->num_sequences();
  ASSERT_GT(n, 5);
  EXPECT_EQ(n, ds_->val().num_sequences());
  const int64_t bs = 4;
  EXPECT_EQ(val->num_batches(bs), (n + bs - 1) / bs);
  std::vector<const EncoderBatch*> parts;
  std::vector<EncoderBatch> batches;
  for (int64_t i = 0; i < val->num_batches(bs); ++i) batches.push_back(val->Batch(i * bs, bs));
  for (const EncoderBatch& b : batches) parts.push_back(&b);
  EXPECT_EQ(batches.back().batch, n - (val->num_batches(bs) - 1) * bs);
  // The same rows in one batch mask the same way (masks depend on the row, not the batching),
  // and a second pass is identical.
  ExpectSameBatch(Concat(parts), val->Batch(0, n));
  ExpectSameBatch(val->Batch(0, n), val->Batch(0, n));
  const EncoderBatch all = val->Batch(0, n);
  std::vector<int32_t> ids = all.input_ids, row(kSeq);
  for (size_t i = 0; i < all.mlm_positions.size(); ++i) ids[all.mlm_positions[i]] = all.mlm_labels[i];
  for (int64_t r = 0; r < n; ++r) {
    ds_->val().CopyRow(r, row.data());
    EXPECT_TRUE(std::equal(row.begin(), row.end(), ids.begin() + r * kSeq));
  }
  EXPECT_FALSE(all.mlm_positions.empty());
}

}  // namespace
}  // namespace lamina
