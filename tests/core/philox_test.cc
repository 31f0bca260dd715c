#include "core/philox.h"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <random>
#include <vector>

#include "gtest/gtest.h"

namespace lamina {
namespace {

// Known-answer vectors of Philox4x32-10 from the Random123 distribution (kat_vectors).
TEST(Philox, KnownAnswers) {
  struct Case {
    Philox4x32 ctr;
    uint32_t k0, k1;
    Philox4x32 expect;
  };
  const Case cases[] = {
      {{{0, 0, 0, 0}}, 0, 0, {{0x6627e8d5, 0xe169c58d, 0xbc57ac4c, 0x9b00dbd8}}},
      {{{0xffffffff, 0xffffffff, 0xffffffff, 0xffffffff}}, 0xffffffff, 0xffffffff,
       {{0x408f276d, 0x41c83b0e, 0xa20bc7c6, 0x6d5451fd}}},
      {{{0x243f6a88, 0x85a308d3, 0x13198a2e, 0x03707344}}, 0xa4093822, 0x299f31d0,
       {{0xd16cfe09, 0x94fdcceb, 0x5001e420, 0x24126ea1}}},
  };
  for (const Case& c : cases) {
    Philox4x32 r = Philox4x32_10(c.ctr, c.k0, c.k1);
    for (int i = 0; i < 4; ++i) EXPECT_EQ(r.v[i], c.expect.v[i]) << "word " << i;
  }
}

TEST(Philox, IndexedDrawsMatchBlocks) {
  const uint64_t seed = 0x1234567890abcdefull, stream = MakeStream(7, 3, 2);
  for (uint64_t i = 0; i < 64; ++i) {
    EXPECT_EQ(PhiloxAt(seed, stream, i), PhiloxBlock(seed, stream, i / 4).v[i % 4]);
  }
  EXPECT_NE(PhiloxAt(seed, stream, 0), PhiloxAt(seed, stream + 1, 0));
  EXPECT_NE(PhiloxAt(seed, stream, 0), PhiloxAt(seed + 1, stream, 0));
}

TEST(Philox, UniformIsInRangeAndUnbiased) {
  double sum = 0, sum2 = 0;
  const int n = 1 << 16;
  for (int i = 0; i < n; ++i) {
    float u = UniformFromBits(PhiloxAt(42, 1, i));
    ASSERT_GE(u, 0.0f);
    ASSERT_LT(u, 1.0f);
    sum += u;
    sum2 += u * u;
  }
  const double mean = sum / n, var = sum2 / n - mean * mean;
  EXPECT_NEAR(mean, 0.5, 0.01);
  EXPECT_NEAR(var, 1.0 / 12, 0.005);
  EXPECT_EQ(UniformFromBits(0xffffffffu), 16777215.0f / 16777216.0f);
}

TEST(Philox, DropoutKeepRate) {
  RngContext rng{5, MakeStream(1, 2, 3), 1000};
  int kept = 0;
  const int n = 100000;
  for (int i = 0; i < n; ++i) kept += DropoutKeep(rng, i, 0.1f);
  EXPECT_NEAR(kept / double(n), 0.9, 0.005);
}

TEST(Philox, KeepThresholdDecidesAsTheUniformDraw) {
  std::mt19937 gen(7);
  std::vector<float> ps = {0.0f, 1e-9f, 0x1p-24f, 0.1f, 0.5f, 0.9f, 1.0f - 0x1p-24f};
  for (int i = 0; i < 20; ++i) ps.push_back(std::uniform_real_distribution<float>(0.0f, 1.0f)(gen));
  for (const float p : ps) {
    const uint32_t threshold = KeepThreshold(p);
    auto same = [&](uint32_t bits) {
      ASSERT_EQ(bits >= threshold, UniformFromBits(bits) >= p) << "p " << p << " bits " << bits;
    };
    for (int64_t d = -1024; d <= 1024; ++d) same(static_cast<uint32_t>(std::clamp<int64_t>(threshold + d, 0, 0xffffffffll)));
    for (int i = 0; i < 10000; ++i) same(static_cast<uint32_t>(gen()));
    same(0);
    same(0xffffffffu);
  }
  for (uint32_t high = 0; high < (1u << 24); ++high) {  // every draw for one p
    const uint32_t bits = high << 8 | (high & 0xff);
    ASSERT_EQ(bits >= KeepThreshold(0.1f), UniformFromBits(bits) >= 0.1f) << bits;
  }
}

TEST(Philox, Draws4AreTheDrawsAtEachIndex) {
  for (uint64_t offset : {0ull, 1ull, 2ull, 3ull, 4ull, 1ull << 33}) {
    const RngContext rng{9, MakeStream(4, 5), offset};
    for (uint64_t index : {0ull, 1ull, 5ull, 6ull, 7ull, 1000ull}) {
      uint32_t bits[4];
      PhiloxDraws4(rng, index, bits);
      for (int k = 0; k < 4; ++k)
        EXPECT_EQ(bits[k], PhiloxAt(rng.seed, rng.stream, offset + index + k)) << offset << " " << index << " " << k;
    }
  }
}

TEST(Philox, KeepBits4AreTheDecisionsAtEachIndex) {
  for (const float p : {0.1f, 0.5f})
    for (uint64_t offset : {0ull, 1ull, 3ull, 1ull << 33}) {
      const RngContext rng{11, MakeStream(2, 3), offset};
      for (uint64_t index : {0ull, 2ull, 5ull, 1000ull}) {
        const uint32_t keep = DropoutKeepBits4(rng, index, KeepThreshold(p));
        EXPECT_EQ(keep >> 4, 0u);
        for (int k = 0; k < 4; ++k)
          EXPECT_EQ((keep >> k) & 1u, DropoutKeep(rng, index + k, p) ? 1u : 0u)
              << "p " << p << " offset " << offset << " index " << index << " k " << k;
      }
    }
}

// Attention dropout: 8 decisions per Philox block, the 16-bit halves of its words, each row
// starting a block of its own, rows counted from rng.offset.
TEST(Philox, AttentionKeepBits8AreTheHalvesOfOneBlockPerEightKeys) {
  for (const float p : {0.0f, 0.1f, 0.5f})
    for (const int64_t seq : {1, 7, 8, 13, 512}) {
      const RngContext rng{13, MakeStream(6, 7, 1), 5};
      const uint32_t threshold = KeepThreshold16(p);
      EXPECT_EQ(threshold, static_cast<uint32_t>(std::ceil(p * 65536.0)));
      for (const uint64_t row : {0ull, 1ull, 2ull, 1000ull})
        for (int64_t k8 = 0; 8 * k8 < seq; ++k8) {
          const uint32_t keep = AttentionKeepBits8(rng, row, seq, k8, threshold);
          EXPECT_EQ(keep >> 8, 0u);
          const uint64_t block = (rng.offset + row) * static_cast<uint64_t>((seq + 7) / 8) + k8;
          for (int k = 0; k < 8; ++k) {
            const uint32_t word = PhiloxAt(rng.seed, rng.stream, 4 * block + k / 2);
            const uint32_t half = k % 2 == 0 ? word & 0xffffu : word >> 16;
            EXPECT_EQ((keep >> k) & 1u, half >= threshold ? 1u : 0u) << "p " << p << " row " << row << " k " << k;
            EXPECT_EQ(AttentionDropoutKeep(rng, row, seq, 8 * k8 + k, p), half >= threshold);
          }
          // A slice whose offset is its first row draws what the whole tensor draws there.
          const RngContext from_zero{rng.seed, rng.stream, 0};
          EXPECT_EQ(keep, AttentionKeepBits8(from_zero, rng.offset + row, seq, k8, threshold));
        }
    }
}

TEST(Philox, AttentionDropoutKeepRate) {
  const RngContext rng{5, MakeStream(1, 2, 4), 3};
  for (const float p : {0.1f, 0.3f}) {
    int64_t kept = 0, n = 0;
    for (uint64_t row = 0; row < 400; ++row)
      for (int64_t k = 0; k < 500; ++k, ++n) kept += AttentionDropoutKeep(rng, row, 500, k, p);
    EXPECT_NEAR(kept / static_cast<double>(n), 1.0 - p, 0.004) << p;
  }
}

}  // namespace
}  // namespace lamina
