// The CPU reference attention against a direct double-precision evaluation of its definition
// (model/backend.h), and its backward against central differences, with padding and dropout.
#include <cmath>
#include <cstdint>
#include <memory>
#include <random>
#include <vector>

#include "core/philox.h"
#include "gtest/gtest.h"
#include "model/backend.h"
#include "tests/testing/grad_check.h"

namespace lamina {
namespace {

using testing::CheckGradient;
using testing::RandomVector;
using testing::WeightedSum;

constexpr int64_t kBatch = 2, kSeq = 5, kHeads = 2, kHeadDim = 3, kHidden = kHeads * kHeadDim;

// Sequence 0 attends to all keys; sequence 1 has two padding positions at the end.
std::vector<int32_t> KeyMask() { return {1, 1, 1, 1, 1, 1, 1, 1, 0, 0}; }

struct Attention {
  std::vector<double> probs;  // [B, heads, T, T], before dropout
  std::vector<double> out;    // [B*T, H]
  int64_t dropped = 0;        // probabilities that dropout zeroed
};

// Straight from the definition: per (b, h, i) a masked softmax of q.k / sqrt(D) over keys j,
// dropout on element ((b*heads + h)*T + i)*T + j, then the weighted sum of v.
Attention ReferenceAttention(const std::vector<float>& qkv, const std::vector<int32_t>& mask, float p,
                             const RngContext& rng) {
  Attention a;
  a.probs.assign(kBatch * kHeads * kSeq * kSeq, 0.0);
  a.out.assign(kBatch * kSeq * kHidden, 0.0);
  auto at = [&](int64_t b, int64_t t, int64_t part, int64_t h, int64_t d) {
    return static_cast<double>(qkv[(b * kSeq + t) * 3 * kHidden + part * kHidden + h * kHeadDim + d]);
  };
  for (int64_t b = 0; b < kBatch; ++b) {
    for (int64_t h = 0; h < kHeads; ++h) {
      for (int64_t i = 0; i < kSeq; ++i) {
        std::vector<double> s(kSeq, 0.0);
        double max = -INFINITY;
        for (int64_t j = 0; j < kSeq; ++j) {
          if (mask[b * kSeq + j] == 0) continue;
          for (int64_t d = 0; d < kHeadDim; ++d) s[j] += at(b, i, 0, h, d) * at(b, j, 1, h, d);
          s[j] /= std::sqrt(static_cast<double>(kHeadDim));
          max = std::max(max, s[j]);
        }
        double sum = 0;
        for (int64_t j = 0; j < kSeq; ++j) {
          s[j] = mask[b * kSeq + j] != 0 ? std::exp(s[j] - max) : 0.0;
          sum += s[j];
        }
        for (int64_t j = 0; j < kSeq; ++j) {
          const int64_t index = ((b * kHeads + h) * kSeq + i) * kSeq + j;
          const double prob = s[j] / sum;
          a.probs[index] = prob;
          const bool keep = p == 0.0f || AttentionDropoutKeep(rng, (b * kHeads + h) * kSeq + i, kSeq, j, p);
          a.dropped += !keep;
          const double weight = keep ? prob / (1.0 - p) : 0.0;
          for (int64_t d = 0; d < kHeadDim; ++d) {
            a.out[(b * kSeq + i) * kHidden + h * kHeadDim + d] += weight * at(b, j, 2, h, d);
          }
        }
      }
    }
  }
  return a;
}

class CpuAttentionTest : public ::testing::TestWithParam<float> {
 protected:
  void Forward() {
    backend_->AttentionForward(CpuF32(qkv_.data(), {kBatch * kSeq, 3 * kHidden}), CpuI32(mask_.data(), {kBatch, kSeq}),
                               kHeads, GetParam(), rng_, CpuF32(saved_.data(), {kBatch, kHeads, kSeq, kSeq}),
                               CpuF32(out_.data(), {kBatch * kSeq, kHidden}));
  }

  std::unique_ptr<Backend> backend_ = MakeCpuBackend();
  std::mt19937 gen_{777};
  RngContext rng_{0xa77e47104ull, MakeStream(12, 3, 1), 1000};
  std::vector<int32_t> mask_ = KeyMask();
  std::vector<float> qkv_ = RandomVector(gen_, kBatch* kSeq * 3 * kHidden, 1.5f);
  std::vector<float> saved_ = std::vector<float>(backend_->AttentionSavedElems(kBatch, kHeads, kSeq, kHidden / kHeads));
  std::vector<float> out_ = std::vector<float>(kBatch * kSeq * kHidden);
};

TEST_P(CpuAttentionTest, ForwardMatchesTheDefinition) {
  Forward();
  const Attention expect = ReferenceAttention(qkv_, mask_, GetParam(), rng_);
  // With dropout the mask must actually drop something for the comparison to mean anything.
  if (GetParam() > 0.0f) {
    EXPECT_GT(expect.dropped, 0);
  }
  for (size_t i = 0; i < saved_.size(); ++i) ASSERT_NEAR(saved_[i], expect.probs[i], 1e-6) << "probability " << i;
  for (size_t i = 0; i < out_.size(); ++i) ASSERT_NEAR(out_[i], expect.out[i], 1e-5) << "output " << i;
}

TEST_P(CpuAttentionTest, MaskedKeysGetZeroAndRowsSumToOne) {
  Forward();
  for (int64_t b = 0; b < kBatch; ++b) {
    for (int64_t h = 0; h < kHeads; ++h) {
      for (int64_t i = 0; i < kSeq; ++i) {
        const float* row = saved_.data() + ((b * kHeads + h) * kSeq + i) * kSeq;
        double sum = 0;
        for (int64_t j = 0; j < kSeq; ++j) {
          if (mask_[b * kSeq + j] == 0) {
            EXPECT_EQ(row[j], 0.0f) << b << "," << h << "," << i << "," << j;
          }
          sum += row[j];
        }
        EXPECT_NEAR(sum, 1.0, 1e-6) << b << "," << h << "," << i;
      }
    }
  }
}

TEST_P(CpuAttentionTest, BackwardMatchesDifferences) {
  std::vector<float> weights = RandomVector(gen_, out_.size());
  auto loss = [&] {
    Forward();
    return WeightedSum(out_, weights);
  };
  loss();
  // dqkv is overwritten: start it with garbage.
  std::vector<float> dqkv(qkv_.size(), 7.0f);
  backend_->AttentionBackward(CpuF32(weights.data(), {kBatch * kSeq, kHidden}),
                              CpuF32(qkv_.data(), {kBatch * kSeq, 3 * kHidden}), CpuI32(mask_.data(), {kBatch, kSeq}),
                              CpuF32(out_.data(), {kBatch * kSeq, kHidden}), CpuF32(saved_.data(), {kBatch, kHeads, kSeq, kSeq}), kHeads, GetParam(), rng_,
                              CpuF32(dqkv.data(), {kBatch * kSeq, 3 * kHidden}));
  testing::GradCheckOptions opt;
  opt.eps = 3e-3;
  EXPECT_TRUE(CheckGradient(qkv_, loss, dqkv, opt));
  // Padded keys and values do not influence anything.
  for (int64_t t = 3; t < kSeq; ++t) {
    for (int64_t c = kHidden; c < 3 * kHidden; ++c)
      EXPECT_EQ(dqkv[(kSeq + t) * 3 * kHidden + c], 0.0f) << t << "," << c;
  }
}

INSTANTIATE_TEST_SUITE_P(Dropout, CpuAttentionTest, ::testing::Values(0.0f, 0.1f),
                         [](const ::testing::TestParamInfo<float>& info) {
                           return info.param == 0.0f ? std::string("NoDropout") : std::string("Dropout10");
                         });

}  // namespace
}  // namespace lamina
