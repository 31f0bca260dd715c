#include "data/masking.h"

#include <algorithm>
#include <cmath>

#include "core/philox.h"
#include "core/status.h"

namespace lamina {

MaskingVocab MaskingVocab::FromTokenizer(const WordPieceTokenizer& tokenizer) {
  MaskingVocab v;
  const int32_t n = tokenizer.vocab_size();
  v.mask_id = tokenizer.mask_id();
  v.special.assign(static_cast<size_t>(n), 0);
  v.continuation.assign(static_cast<size_t>(n), 0);
  for (int32_t id = 0; id < n; ++id) {
    v.special[id] = tokenizer.IsSpecial(id) ? 1 : 0;
    const std::string& tok = tokenizer.token(id);
    v.continuation[id] = tok.size() > 2 && tok[0] == '#' && tok[1] == '#' ? 1 : 0;
    if (!v.special[id]) v.random_pool.push_back(id);
  }
  return v;
}

namespace {

struct Candidate {
  uint32_t key;
  int32_t position;  // first position (of the word, with whole-word masking)
  int32_t length;    // positions covered
  bool operator<(const Candidate& o) const { return key != o.key ? key < o.key : position < o.position; }
};

int TargetCount(const MaskingConfig& config, int candidates) {
  if (candidates == 0) return 0;
  int n = std::max(1, static_cast<int>(std::lround(static_cast<double>(config.mask_prob) * candidates)));
  if (config.max_predictions > 0) n = std::min(n, config.max_predictions);
  return std::min(n, candidates);
}

bool IsCandidate(const MaskingVocab& vocab, int32_t id) {
  LAMINA_CHECK(id >= 0 && static_cast<size_t>(id) < vocab.special.size(), "token id ", id, " outside the vocab");
  return vocab.special[id] == 0;
}

// Chooses the positions to mask (ascending) into `chosen`.
void Select(const MaskingVocab& vocab, const MaskingConfig& config, uint64_t seed, uint64_t stream, int64_t sample,
            const int32_t* ids, int seq_len, std::vector<int32_t>* chosen) {
  thread_local std::vector<Candidate> units;
  units.clear();
  chosen->clear();
  int candidates = 0;
  const uint64_t base = static_cast<uint64_t>(sample) * static_cast<uint64_t>(seq_len);
  for (int t = 0; t < seq_len; ++t) {
    if (!IsCandidate(vocab, ids[t])) continue;
    ++candidates;
    const bool extends_word = config.whole_word && vocab.continuation[ids[t]] && t > 0 && IsCandidate(vocab, ids[t - 1]);
    if (extends_word && !units.empty() && units.back().position + units.back().length == t) {
      ++units.back().length;
    } else {
      units.push_back(Candidate{PhiloxBlock(seed, stream, base + static_cast<uint64_t>(t)).v[0], t, 1});
    }
  }
  const int target = TargetCount(config, candidates);
  if (target == 0) return;
  if (!config.whole_word) {
    std::partial_sort(units.begin(), units.begin() + target, units.end());
    for (int i = 0; i < target; ++i) chosen->push_back(units[i].position);
  } else {
    std::sort(units.begin(), units.end());
    int covered = 0;
    for (const Candidate& u : units) {
      if (covered == target) break;
      if (covered + u.length > target) continue;
      for (int k = 0; k < u.length; ++k) chosen->push_back(u.position + k);
      covered += u.length;
    }
  }
  std::sort(chosen->begin(), chosen->end());
}

}  // namespace

int MaskSequence(const MaskingVocab& vocab, const MaskingConfig& config, uint64_t seed, uint64_t epoch, int64_t sample,
                 int32_t* ids, int seq_len, std::vector<int32_t>* positions, std::vector<int32_t>* labels) {
  const uint64_t stream = MakeStream(kMaskingStreamTag, epoch);
  thread_local std::vector<int32_t> chosen;
  Select(vocab, config, seed, stream, sample, ids, seq_len, &chosen);
  const uint64_t base = static_cast<uint64_t>(sample) * static_cast<uint64_t>(seq_len);
  const uint64_t pool = vocab.random_pool.size();
  for (int32_t t : chosen) {
    const Philox4x32 r = PhiloxBlock(seed, stream, base + static_cast<uint64_t>(t));
    positions->push_back(t);
    labels->push_back(ids[t]);
    const float u = UniformFromBits(r.v[1]);
    if (u < config.mask_token_prob) {
      ids[t] = vocab.mask_id;
    } else if (u < config.mask_token_prob + config.random_token_prob && pool > 0) {
      // Multiply-shift maps 32 random bits onto [0, pool) (bias below pool / 2^32).
      ids[t] = vocab.random_pool[(static_cast<uint64_t>(r.v[2]) * pool) >> 32];
    }
  }
  return static_cast<int>(chosen.size());
}

int MaskedCount(const MaskingVocab& vocab, const MaskingConfig& config, uint64_t seed, uint64_t epoch, int64_t sample,
                const int32_t* ids, int seq_len) {
  if (!config.whole_word) {
    int candidates = 0;
    for (int t = 0; t < seq_len; ++t) candidates += IsCandidate(vocab, ids[t]) ? 1 : 0;
    return TargetCount(config, candidates);
  }
  thread_local std::vector<int32_t> chosen;
  Select(vocab, config, seed, MakeStream(kMaskingStreamTag, epoch), sample, ids, seq_len, &chosen);
  return static_cast<int>(chosen.size());
}

}  // namespace lamina
