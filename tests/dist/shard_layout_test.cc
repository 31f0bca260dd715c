// How gradient buckets and ZeRO-1 shards cut the flat buffer, for every rank of several worlds.
#include "dist/shard_layout.h"

#include <algorithm>
#include <utility>
#include <vector>

#include "gtest/gtest.h"

namespace lamina {
namespace {

std::vector<std::pair<int64_t, int64_t>> Ranges(const ShardLayout& s) {
  std::vector<std::pair<int64_t, int64_t>> r;
  for (const GradBucket& b : s.buckets()) r.emplace_back(b.begin, b.end);
  return r;
}

TEST(ShardLayout, ReplicatedBucketsCoverTheBuffer) {
  const ShardLayout s = ShardLayout::Replicated(1000, 256);
  ASSERT_EQ(s.buckets().size(), 4u);
  EXPECT_EQ(s.buckets()[3].begin, 768);
  EXPECT_EQ(s.buckets()[3].end, 1000);
  EXPECT_FALSE(s.buckets()[0].sharded());
  ASSERT_EQ(s.pieces().size(), 1u);
  EXPECT_EQ(s.shard_size(), 1000);
}

// Every element is owned by exactly one rank, at a distinct place of its shard; pieces are
// aligned; shards differ by at most the tail, which the last rank owns.
TEST(ShardLayout, ShardsPartitionTheBufferForEveryWorld) {
  for (int64_t total : {int64_t{64}, int64_t{640}, int64_t{64 * 1001}, int64_t{64 * 4099}}) {
    for (int64_t bucket : {int64_t{1}, int64_t{1000}, int64_t{64 * 1024}}) {
      for (int world : {1, 2, 3, 4, 7, 8}) {
        std::vector<int> owner(total, -1);
        int64_t smallest = total, largest = 0;
        for (int rank = 0; rank < world; ++rank) {
          const ShardLayout s = ShardLayout::Sharded(total, bucket, rank, world);
          EXPECT_EQ(Ranges(s), Ranges(ShardLayout::Sharded(total, bucket, 0, world))) << "ranks disagree on buckets";
          int64_t next_offset = 0, covered = 0;
          for (const ShardPiece& p : s.pieces()) {
            EXPECT_EQ(p.shard_offset, next_offset);
            EXPECT_EQ(p.begin % kShardAlign, 0);
            next_offset += p.end - p.begin;
            for (int64_t i = p.begin; i < p.end; ++i) {
              ASSERT_EQ(owner[i], -1) << "element " << i << " owned twice (total " << total << ", world " << world << ")";
              owner[i] = rank;
            }
            covered += p.end - p.begin;
          }
          EXPECT_EQ(covered, s.shard_size());
          smallest = std::min(smallest, s.shard_size());
          largest = std::max(largest, s.shard_size());
        }
        for (int64_t i = 0; i < total; ++i) ASSERT_NE(owner[i], -1) << "element " << i << " unowned";
        EXPECT_LT(largest - smallest, world * kShardAlign) << "total " << total << " world " << world;
        // Sharded buckets split evenly; the tail, if any, is the last bucket and is replicated.
        const ShardLayout s = ShardLayout::Sharded(total, bucket, 0, world);
        for (size_t b = 0; b < s.buckets().size(); ++b) {
          const GradBucket& g = s.buckets()[b];
          if (g.sharded()) {
            EXPECT_EQ(g.size(), g.piece * world);
            EXPECT_EQ(g.size() % (world * kShardAlign), 0);
          } else {
            EXPECT_EQ(b + 1, s.buckets().size());
            EXPECT_LT(g.size(), world * kShardAlign);
          }
        }
      }
    }
  }
}

TEST(ShardLayout, SeveralBucketsGiveEachRankAPieceOfEach) {
  // 4 ranks, buckets of 1024 elements, 4480 elements: units of 4 * 64 = 256, so 4 buckets of
  // 1024, one of the remaining 256 whole units (4352 - 4096), then a tail of 128.
  const ShardLayout s = ShardLayout::Sharded(4480, 1024, 2, 4);
  ASSERT_EQ(s.buckets().size(), 6u);
  EXPECT_EQ(s.buckets()[4].begin, 4096);
  EXPECT_EQ(s.buckets()[4].piece, 64);
  EXPECT_EQ(s.buckets()[5].begin, 4352);
  EXPECT_FALSE(s.buckets()[5].sharded());
  ASSERT_EQ(s.pieces().size(), 5u);  // rank 2 is not the last: no tail
  EXPECT_EQ(s.pieces()[0].begin, 512);
  EXPECT_EQ(s.pieces()[0].end, 768);
  EXPECT_EQ(s.pieces()[4].begin, 4096 + 128);
  EXPECT_EQ(s.shard_size(), 4 * 256 + 64);
  EXPECT_EQ(ShardLayout::Sharded(4480, 1024, 3, 4).shard_size(), 4 * 256 + 64 + 128);
  // 3 ranks of 4480: units of 192, 23 of them (4416), then a tail of 64 on rank 2 only.
  const ShardLayout last = ShardLayout::Sharded(4480, 1 << 20, 2, 3);
  ASSERT_EQ(last.buckets().size(), 2u);
  EXPECT_FALSE(last.buckets()[1].sharded());
  EXPECT_EQ(last.pieces().back().begin, 4416);
  EXPECT_EQ(last.shard_size(), 4416 / 3 + 64);
  EXPECT_EQ(ShardLayout::Sharded(4480, 1 << 20, 0, 3).shard_size(), 4416 / 3);
}

}  // namespace
}  // namespace lamina
