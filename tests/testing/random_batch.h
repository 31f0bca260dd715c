// Random MLM batches for the encoder's tests.
#pragma once

#include <algorithm>
#include <cstdint>
#include <random>
#include <vector>

#include "model/batch.h"
#include "model/config.h"

namespace lamina::testing {

// A batch of `B` sequences of length `T` whose last rows are padded, with `per_row` MLM targets each.
inline EncoderBatch RandomBatch(const BertConfig& c, int64_t B, int64_t T, int per_row, uint32_t seed) {
  std::mt19937 gen(seed);
  std::uniform_int_distribution<int32_t> tok(5, static_cast<int32_t>(c.vocab_size) - 1);
  EncoderBatch b;
  b.batch = B;
  b.seq = T;
  for (int64_t r = 0; r < B; ++r) {
    const int64_t len = T - (r % 3);  // some rows padded
    for (int64_t t = 0; t < T; ++t) {
      const bool real = t < len;
      b.input_ids.push_back(real ? tok(gen) : 0);
      b.token_types.push_back(real && t >= len / 2 ? 1 : 0);
      b.attention_mask.push_back(real ? 1 : 0);
    }
    std::vector<int32_t> pos;
    for (int64_t t = 1; t < len; ++t) pos.push_back(static_cast<int32_t>(t));
    std::shuffle(pos.begin(), pos.end(), gen);
    for (int k = 0; k < per_row && k < static_cast<int>(pos.size()); ++k) {
      const int32_t flat = static_cast<int32_t>(r * T + pos[k]);
      b.mlm_positions.push_back(flat);
      b.mlm_labels.push_back(tok(gen));
      b.input_ids[flat] = 3;  // a [MASK]-like id
    }
  }
  b.labels.resize(B);
  for (int64_t r = 0; r < B; ++r) b.labels[r] = static_cast<int32_t>(r % 2);
  return b;
}

}  // namespace lamina::testing
