// Dynamic MLM masking, applied when a batch is built (not stored in the shards), so every epoch
// sees fresh masks.
//
// Per sequence, as in BERT's create_pretraining_data.py:
//  - The candidates are the positions whose token is not special ([PAD] [UNK] [CLS] [SEP] [MASK]).
//  - Exactly n = max(1, round(mask_prob * candidates)) of them are chosen (capped by
//    max_predictions when that is > 0; 0 when there is no candidate). Not a per-position
//    Bernoulli: the count is fixed, so the loss normaliser does not vary with the draws.
//  - Selection: each candidate gets a 32-bit Philox key and the n smallest (key, position) win,
//    i.e. a uniform random n-subset. With whole_word, a word is a candidate that does not start
//    with "##" plus the "##" candidates that follow it; words are taken in order of their first
//    position's key and a word is skipped when it would overshoot n (BERT's rule), so a sequence
//    may end with fewer than n masked positions.
//  - Each chosen position becomes [MASK] with probability mask_token_prob (0.8), a uniformly random
//    non-special token with probability random_token_prob (0.1), and stays unchanged otherwise; the
//    label is always the original token.
//
// Randomness: all draws for position t of sample s come from one Philox block,
//   PhiloxBlock(seed, MakeStream(kMaskingStreamTag, epoch), s * seq_len + t)
// (= PhiloxAt indices 4*(s*seq_len+t) + j): word 0 is the selection key, word 1 the 80/10/10
// draw, word 2 the random token. `s` is the sample's row in its split, so a sequence's mask depends
// only on (seed, epoch, row): never on batch size, rank count, accumulation or resume point.
// Epochs enter the stream through 16 bits (they repeat after 65536 epochs).
#pragma once

#include <cstdint>
#include <vector>

#include "data/wordpiece.h"

namespace lamina {

inline constexpr uint64_t kMaskingStreamTag = 0x4D4C4D;  // "MLM"

// What masking needs to know about the vocabulary.
struct MaskingVocab {
  int32_t mask_id = 0;
  std::vector<uint8_t> special;       // [vocab]: 1 = never masked, never drawn as a replacement
  std::vector<uint8_t> continuation;  // [vocab]: 1 = a "##" piece (whole-word masking)
  std::vector<int32_t> random_pool;   // the ids a random replacement is drawn from (all non-special)

  static MaskingVocab FromTokenizer(const WordPieceTokenizer& tokenizer);
};

struct MaskingConfig {
  float mask_prob = 0.15f;
  float mask_token_prob = 0.8f;
  float random_token_prob = 0.1f;
  int max_predictions = 0;  // 0 = no cap
  bool whole_word = false;
};

// Masks ids[0, seq_len) of sample `sample` in place and appends the masked positions (ascending,
// within the sequence) and their original ids. Returns how many positions were masked.
int MaskSequence(const MaskingVocab& vocab, const MaskingConfig& config, uint64_t seed, uint64_t epoch, int64_t sample,
                 int32_t* ids, int seq_len, std::vector<int32_t>* positions, std::vector<int32_t>* labels);

// How many positions MaskSequence would mask, without masking.
int MaskedCount(const MaskingVocab& vocab, const MaskingConfig& config, uint64_t seed, uint64_t epoch, int64_t sample,
                const int32_t* ids, int seq_len);

}  // namespace lamina
