#include "dist/shard_layout.h"

#include <algorithm>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "core/status.h"

namespace lamina {

ShardLayout ShardLayout::Replicated(int64_t total, int64_t bucket_elems) {
  LAMINA_CHECK(total >= 0 && bucket_elems > 0, "bucket layout of ", total, " elements in buckets of ", bucket_elems);
  ShardLayout s;
  s.total_ = total;
  for (int64_t begin = 0; begin < total; begin += bucket_elems)
    s.buckets_.push_back(GradBucket{begin, std::min(total, begin + bucket_elems)});
  s.pieces_.push_back(ShardPiece{0, total, 0});
  s.shard_size_ = total;
  return s;
}

ShardLayout ShardLayout::Sharded(int64_t total, int64_t bucket_elems, int rank, int world_size) {
  LAMINA_CHECK(world_size >= 1 && rank >= 0 && rank < world_size, "rank ", rank, " of ", world_size);
  LAMINA_CHECK(total >= 0 && total % kShardAlign == 0, "a sharded buffer of ", total, " elements (must be a multiple of ",
               kShardAlign, ")");
  ShardLayout s;
  s.sharded_ = true;
  s.total_ = total;
  s.rank_ = rank;
  s.world_ = world_size;
  const int64_t unit = world_size * kShardAlign;
  const int64_t per_bucket = std::max<int64_t>(unit, bucket_elems / unit * unit);
  const int64_t sharded_end = total / unit * unit;
  for (int64_t begin = 0; begin < sharded_end; begin += per_bucket) {
    GradBucket b{begin, std::min(sharded_end, begin + per_bucket)};
    b.piece = b.size() / world_size;
    b.shard_offset = s.shard_size_;
    s.pieces_.push_back(ShardPiece{b.begin + rank * b.piece, b.begin + (rank + 1) * b.piece, s.shard_size_});
    s.shard_size_ += b.piece;
    s.buckets_.push_back(b);
  }
  if (sharded_end < total) {
    s.buckets_.push_back(GradBucket{sharded_end, total});
    if (rank == world_size - 1) {
      s.pieces_.push_back(ShardPiece{sharded_end, total, s.shard_size_});
      s.shard_size_ += total - sharded_end;
    }
  }
  return s;
}

std::string ShardLayout::ToString() const {
  if (!sharded_) return absl::StrFormat("%d buckets, all-reduced", buckets_.size());
  int64_t sharded_buckets = 0;
  for (const GradBucket& b : buckets_) sharded_buckets += b.sharded() ? 1 : 0;
  return absl::StrFormat("%d buckets (%d reduce-scattered over %d ranks%s), shard of rank %d: %d of %d elements",
                         buckets_.size(), sharded_buckets, world_,
                         sharded_buckets < static_cast<int64_t>(buckets_.size()) ? " + an all-reduced tail" : "", rank_,
                         shard_size_, total_);
}

}  // namespace lamina
