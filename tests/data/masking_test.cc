#include "data/masking.h"

#include <cmath>
#include <random>
#include <set>

#include "gtest/gtest.h"
#include "tests/data/mlm_test_util.h"

namespace lamina {
namespace {

constexpr int kSeq = 64;

// [CLS] tokens [SEP] [PAD]...: words (ids 5..64), each followed by 0-2 "##" pieces (65..84), with
// an occasional [UNK]; lengths 1..62.
std::vector<int32_t> RandomRow(std::mt19937& rng) {
  std::vector<int32_t> row = {2};
  const int len = 1 + static_cast<int>(rng() % (kSeq - 2));
  while (static_cast<int>(row.size()) < len + 1) {
    row.push_back(rng() % 30 == 0 ? 1 : 5 + static_cast<int32_t>(rng() % 60));
    const int pieces = static_cast<int>(rng() % 3);
    for (int p = 0; p < pieces && static_cast<int>(row.size()) < len + 1; ++p) row.push_back(65 + static_cast<int32_t>(rng() % 20));
  }
  row.push_back(3);
  row.resize(kSeq, 0);
  return row;
}

class Masking : public ::testing::Test {
 protected:
  WordPieceTokenizer tok_ = datatest::TinyTokenizer();
  MaskingVocab vocab_ = MaskingVocab::FromTokenizer(tok_);
};

TEST_F(Masking, VocabFlags) {
  EXPECT_EQ(vocab_.mask_id, 4);
  EXPECT_EQ(vocab_.random_pool.size(), 80u);
  for (int id = 0; id < 5; ++id) EXPECT_TRUE(vocab_.special[id]);
  EXPECT_FALSE(vocab_.continuation[5]);
  EXPECT_TRUE(vocab_.continuation[65]);
}

TEST_F(Masking, ExactCountsAnd801010SplitNeverOnSpecials) {
  std::mt19937 rng(7);
  MaskingConfig config;
  int64_t chosen = 0, to_mask = 0, to_random = 0, kept = 0, random_hits_original = 0;
  std::vector<int64_t> per_position(kSeq, 0);
  const int kRows = 20000;
  for (int s = 0; s < kRows; ++s) {
    const std::vector<int32_t> original = RandomRow(rng);
    std::vector<int32_t> ids = original;
    std::vector<int32_t> pos, labels;
    const int n = MaskSequence(vocab_, config, /*seed=*/11, /*epoch=*/0, s, ids.data(), kSeq, &pos, &labels);
    int candidates = 0;
    for (int32_t id : original) candidates += tok_.IsSpecial(id) ? 0 : 1;
    ASSERT_EQ(n, candidates == 0 ? 0 : std::max(1, static_cast<int>(std::lround(0.15 * candidates))));
    ASSERT_EQ(n, MaskedCount(vocab_, config, 11, 0, s, original.data(), kSeq));
    ASSERT_EQ(pos.size(), static_cast<size_t>(n));
    ASSERT_TRUE(std::is_sorted(pos.begin(), pos.end()));
    ASSERT_EQ(std::set<int32_t>(pos.begin(), pos.end()).size(), pos.size());
    std::set<int32_t> masked(pos.begin(), pos.end());
    for (int t = 0; t < kSeq; ++t) {
      if (!masked.count(t)) {
        ASSERT_EQ(ids[t], original[t]) << "unchosen position changed";
        continue;
      }
    }
    for (size_t i = 0; i < pos.size(); ++i) {
      const int t = pos[i];
      ASSERT_FALSE(tok_.IsSpecial(original[t])) << "masked a special token";
      ASSERT_EQ(labels[i], original[t]);
      ++per_position[t];
      if (ids[t] == vocab_.mask_id) {
        ++to_mask;
      } else {
        ASSERT_FALSE(tok_.IsSpecial(ids[t]));
        if (ids[t] == original[t]) ++kept;
        else ++to_random;
      }
    }
    chosen += n;
  }
  // A random replacement equals the original 1/80 of the time; it then counts as kept.
  random_hits_original = std::llround(to_random / 79.0);
  const double f_mask = static_cast<double>(to_mask) / chosen;
  const double f_random = static_cast<double>(to_random + random_hits_original) / chosen;
  EXPECT_NEAR(f_mask, 0.8, 0.01);
  EXPECT_NEAR(f_random, 0.1, 0.01);
  EXPECT_NEAR(1.0 - f_mask - f_random, 0.1, 0.01);
  // Selection is spread over positions: never [CLS] (position 0); neighbouring positions are
  // chosen about equally often.
  EXPECT_EQ(per_position[0], 0);
  EXPECT_NEAR(static_cast<double>(per_position[5]) / per_position[6], 1.0, 0.1);
}

TEST_F(Masking, OverallRateIsFifteenPercentOnLongRows) {
  std::mt19937 rng(3);
  MaskingConfig config;
  int64_t candidates = 0, masked = 0;
  for (int s = 0; s < 2000; ++s) {
    std::vector<int32_t> ids(kSeq);
    ids[0] = 2;
    for (int t = 1; t < kSeq - 1; ++t) ids[t] = 5 + static_cast<int32_t>(rng() % 80);
    ids[kSeq - 1] = 3;
    std::vector<int32_t> pos, labels;
    masked += MaskSequence(vocab_, config, 5, 1, s, ids.data(), kSeq, &pos, &labels);
    candidates += kSeq - 2;
  }
  EXPECT_NEAR(static_cast<double>(masked) / candidates, 0.15, 0.005);
}

TEST_F(Masking, DependsOnlyOnSeedEpochAndSample) {
  std::mt19937 rng(1);
  const std::vector<int32_t> row = RandomRow(rng);
  auto mask = [&](uint64_t seed, uint64_t epoch, int64_t sample) {
    std::vector<int32_t> ids = row, pos, labels;
    MaskSequence(vocab_, MaskingConfig(), seed, epoch, sample, ids.data(), kSeq, &pos, &labels);
    return std::pair{ids, pos};
  };
  EXPECT_EQ(mask(1, 2, 3), mask(1, 2, 3));
  int differ_epoch = 0, differ_sample = 0, differ_seed = 0;
  for (int k = 0; k < 20; ++k) {
    differ_epoch += mask(1, 2 + k, 3) != mask(1, 3 + k, 3);
    differ_sample += mask(1, 2, 3 + k) != mask(1, 2, 4 + k);
    differ_seed += mask(1 + k, 2, 3) != mask(2 + k, 2, 3);
  }
  EXPECT_GE(differ_epoch, 18);
  EXPECT_GE(differ_sample, 18);
  EXPECT_GE(differ_seed, 18);
}

TEST_F(Masking, CapAndMinimum) {
  std::vector<int32_t> ids(kSeq, 0);
  ids[0] = 2;
  ids[1] = 7;
  ids[2] = 3;
  std::vector<int32_t> pos, labels;
  EXPECT_EQ(MaskSequence(vocab_, MaskingConfig(), 1, 0, 0, ids.data(), kSeq, &pos, &labels), 1);  // at least one
  EXPECT_EQ(pos, std::vector<int32_t>{1});
  for (int t = 1; t < kSeq - 1; ++t) ids[t] = 10;
  ids[kSeq - 1] = 3;
  MaskingConfig capped;
  capped.max_predictions = 5;
  EXPECT_EQ(MaskSequence(vocab_, capped, 1, 0, 0, ids.data(), kSeq, &pos, &labels), 5);
  std::vector<int32_t> only_special = {2, 3, 0, 0};
  EXPECT_EQ(MaskSequence(vocab_, MaskingConfig(), 1, 0, 0, only_special.data(), 4, &pos, &labels), 0);
}

TEST_F(Masking, WholeWordMaskingTakesWholeWords) {
  std::mt19937 rng(9);
  MaskingConfig config;
  config.whole_word = true;
  int64_t masked = 0, candidates = 0, with_pieces = 0;
  for (int s = 0; s < 5000; ++s) {
    const std::vector<int32_t> original = RandomRow(rng);
    std::vector<int32_t> ids = original, pos, labels;
    const int n = MaskSequence(vocab_, config, 2, 0, s, ids.data(), kSeq, &pos, &labels);
    ASSERT_EQ(n, MaskedCount(vocab_, config, 2, 0, s, original.data(), kSeq));
    int cand = 0;
    for (int32_t id : original) cand += tok_.IsSpecial(id) ? 0 : 1;
    ASSERT_LE(n, std::max(1, static_cast<int>(std::lround(0.15 * cand))));
    masked += n;
    candidates += cand;
    const std::set<int32_t> chosen(pos.begin(), pos.end());
    for (int t = 1; t < kSeq; ++t) {
      const bool continues = vocab_.continuation[original[t]] && !tok_.IsSpecial(original[t - 1]);
      if (continues) {
        ASSERT_EQ(chosen.count(t), chosen.count(t - 1)) << "a word was split at position " << t;
        with_pieces += chosen.count(t);
      }
    }
  }
  EXPECT_GT(with_pieces, 0);
  // Skipping words that would overshoot the count lowers the rate a little, not much.
  EXPECT_NEAR(static_cast<double>(masked) / candidates, 0.15, 0.02);
}

}  // namespace
}  // namespace lamina
