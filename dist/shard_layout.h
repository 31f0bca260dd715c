// How the flat gradient buffer is cut into communication buckets and, for ZeRO stage 1, into
// one shard per rank.
//
// Buckets are consecutive ranges of about `bucket_elems` elements in layout order. Replicated
// (all-reduce) buckets can end anywhere. Sharded buckets are reduce-scattered: bucket b is cut
// into world_size equal pieces, rank r receiving piece r, so every sharded bucket's length is a
// multiple of world_size * kShardAlign (pieces stay 256-byte aligned for any dtype). What is left
// at the end of the buffer (fewer than world_size * kShardAlign elements) is the tail: it is
// all-reduced and owned by the last rank. A rank's shard is its pieces in bucket order followed,
// on the last rank, by the tail; shards differ in size by at most the tail.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "core/tensor.h"
#include "model/param_layout.h"

namespace lamina {

inline constexpr int64_t kShardAlign = 64;

// Elements [begin, end) of a flat buffer (gradients, their bf16 copy, a shard), as a 1-D view.
inline TensorView FlatRange(const TensorView& flat, int64_t begin, int64_t end) {
  return ParamView(flat, begin, Shape{end - begin});
}

struct GradBucket {
  int64_t begin = 0, end = 0;  // [begin, end) of the flat buffer
  // Sharded buckets: the length of each rank's piece, and where this rank's piece
  // [begin + rank * piece, + piece) sits in its shard. 0 and -1 for replicated buckets.
  int64_t piece = 0;
  int64_t shard_offset = -1;
  int64_t size() const { return end - begin; }
  bool sharded() const { return piece > 0; }
};

// A range of the flat buffer this rank owns and where it sits in the rank's shard.
struct ShardPiece {
  int64_t begin = 0, end = 0;
  int64_t shard_offset = 0;
};

class ShardLayout {
 public:
  // Replicated: every bucket is all-reduced and every rank owns the whole buffer.
  static ShardLayout Replicated(int64_t total, int64_t bucket_elems);
  // ZeRO-1 for `rank` of `world_size`. total must be a multiple of kShardAlign (the parameter
  // layout pads to it).
  static ShardLayout Sharded(int64_t total, int64_t bucket_elems, int rank, int world_size);

  bool sharded() const { return sharded_; }
  int64_t total() const { return total_; }
  int rank() const { return rank_; }
  int world_size() const { return world_; }
  // In buffer order; with sharding, the tail (if any) is the last bucket, replicated.
  const std::vector<GradBucket>& buckets() const { return buckets_; }
  // This rank's ranges in buffer order (one per sharded bucket, plus the tail on the last rank;
  // the whole buffer when replicated).
  const std::vector<ShardPiece>& pieces() const { return pieces_; }
  int64_t shard_size() const { return shard_size_; }
  // "12 buckets (4 sharded over 2 ranks), shard 55,000 of 110,000 elements".
  std::string ToString() const;

 private:
  bool sharded_ = false;
  int64_t total_ = 0;
  int rank_ = 0, world_ = 1;
  std::vector<GradBucket> buckets_;
  std::vector<ShardPiece> pieces_;
  int64_t shard_size_ = 0;
};

}  // namespace lamina
