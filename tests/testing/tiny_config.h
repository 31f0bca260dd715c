// The tiny encoders that tests train and compare: each test names the sizes it depends on.
#pragma once

#include <cstdint>

#include "model/config.h"

namespace lamina::testing {

struct TinyDims {
  int64_t vocab_size;
  int64_t hidden;
  int64_t heads;
  int64_t max_positions;
};

// Two layers with an FFN twice as wide as `hidden`, normalised as `norm` says and initialised to
// match it (T-Fixup without LayerNorm, else BERT's).
inline BertConfig TinyBertConfig(const TinyDims& dims, NormPlacement norm) {
  BertConfig c;
  c.vocab_size = dims.vocab_size;
  c.hidden = dims.hidden;
  c.layers = 2;
  c.heads = dims.heads;
  c.ffn = 2 * dims.hidden;
  c.max_positions = dims.max_positions;
  c.norm = norm;
  c.init = norm == NormPlacement::kNone ? InitScheme::kTFixup : InitScheme::kBert;
  return c;
}

}  // namespace lamina::testing
