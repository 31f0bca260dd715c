// Parameter initialisation: BERT's N(0, 0.02) truncated at 2 std, Xavier (the original
// Transformer's), or T-Fixup's scaled init.
// The exact choices are written out in docs/model.md.
#pragma once

#include <cstdint>
#include <vector>

#include "model/config.h"
#include "model/param_layout.h"

namespace lamina {

// Fills `params` (host, f32, layout.total() elements) from `seed`. Deterministic: the same seed
// gives the same parameters on every machine (draws come from Philox, not std::random).
void InitParams(const BertConfig& config, const ParamLayout& layout, uint64_t seed, std::vector<float>* params);

// The factor the embedding sum is multiplied by in the forward pass: sqrt(hidden) for T-Fixup
// (its embeddings are initialised at std hidden^-1/2), 1 for BERT.
float EmbeddingScale(const BertConfig& config);

}  // namespace lamina
