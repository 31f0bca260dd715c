// DropoutKeep (core/philox.h) for consecutive indices, and the inverted dropout it decides,
// drawing each Philox block once for the four indices it serves instead of once per index. The
// decisions are exactly DropoutKeep's.
#pragma once

#include <cstdint>

#include "core/philox.h"

namespace lamina::cpu {

class DropoutMask {
 public:
  DropoutMask(const RngContext& rng, float p) : rng_(rng), p_(p), scale_(1.0f / (1.0f - p)) {}

  // Inverted dropout of element `index` with value x: x / (1 - p) when kept, else 0; x when p = 0.
  float Apply(uint64_t index, float x) { return p_ == 0.0f ? x : Keep(index) ? x * scale_ : 0.0f; }

  // Whether element `index` of the tensor is kept.
  bool Keep(uint64_t index) {
    const uint64_t stream_index = rng_.offset + index;
    const uint64_t block = stream_index >> 2;
    if (!have_block_ || block != block_) {
      bits_ = PhiloxBlock(rng_.seed, rng_.stream, block);
      block_ = block;
      have_block_ = true;
    }
    return UniformFromBits(bits_.v[stream_index & 3]) >= p_;
  }

 private:
  RngContext rng_;
  float p_;
  float scale_;
  bool have_block_ = false;
  uint64_t block_ = 0;
  Philox4x32 bits_{};
};

}  // namespace lamina::cpu
