// Counter-based Philox4x32-10 (Salmon et al., SC'11), identical on CPU and GPU.
//
// Every random draw in lamina (dropout masks, MLM masking) is a pure function of
// (seed, stream, index): no generator state is carried between calls, so a draw does not depend
// on batch size, rank count, thread count, kernel launch shape or resume point.
#pragma once

#include <cmath>
#include <cstdint>

#include "core/hd.h"

namespace lamina {

struct Philox4x32 {
  uint32_t v[4];
};

LAMINA_HD void PhiloxMulHiLo(uint32_t a, uint32_t b, uint32_t* hi, uint32_t* lo) {
  const uint64_t p = static_cast<uint64_t>(a) * static_cast<uint64_t>(b);
  *hi = static_cast<uint32_t>(p >> 32);
  *lo = static_cast<uint32_t>(p);
}

// Philox4x32 with 10 rounds on a 128-bit counter and a 64-bit key.
LAMINA_HD Philox4x32 Philox4x32_10(Philox4x32 ctr, uint32_t k0, uint32_t k1) {
  constexpr uint32_t kM0 = 0xD2511F53u, kM1 = 0xCD9E8D57u;
  constexpr uint32_t kW0 = 0x9E3779B9u, kW1 = 0xBB67AE85u;
  uint32_t c0 = ctr.v[0], c1 = ctr.v[1], c2 = ctr.v[2], c3 = ctr.v[3];
  for (int round = 0; round < 10; ++round) {
    uint32_t hi0, lo0, hi1, lo1;
    PhiloxMulHiLo(kM0, c0, &hi0, &lo0);
    PhiloxMulHiLo(kM1, c2, &hi1, &lo1);
    const uint32_t n0 = hi1 ^ c1 ^ k0, n2 = hi0 ^ c3 ^ k1;
    c0 = n0;
    c1 = lo1;
    c2 = n2;
    c3 = lo0;
    k0 += kW0;
    k1 += kW1;
  }
  return Philox4x32{{c0, c1, c2, c3}};
}

// Where a stream of draws comes from. `stream` names the use (which dropout site of which
// layer at which step); `offset` is the stream index of element 0 of the tensor being drawn
// for, so that a slice of a batch draws exactly the numbers the whole batch would.
struct RngContext {
  uint64_t seed = 0;
  uint64_t stream = 0;
  uint64_t offset = 0;
};

// The four 32-bit draws for stream indices [4*block, 4*block+4).
LAMINA_HD Philox4x32 PhiloxBlock(uint64_t seed, uint64_t stream, uint64_t block) {
  Philox4x32 ctr{{static_cast<uint32_t>(block), static_cast<uint32_t>(block >> 32),
                  static_cast<uint32_t>(stream), static_cast<uint32_t>(stream >> 32)}};
  return Philox4x32_10(ctr, static_cast<uint32_t>(seed), static_cast<uint32_t>(seed >> 32));
}

// The 32-bit draw at stream index `index`.
LAMINA_HD uint32_t PhiloxAt(uint64_t seed, uint64_t stream, uint64_t index) {
  return PhiloxBlock(seed, stream, index >> 2).v[index & 3];
}

// The draws at stream indices rng.offset + index .. + 3: the four words of one Philox block when
// they are aligned to one, else the words they take from two consecutive blocks.
LAMINA_HD void PhiloxDraws4(const RngContext& rng, uint64_t index, uint32_t (&bits)[4]) {
  const uint64_t i = rng.offset + index;
  const Philox4x32 first = PhiloxBlock(rng.seed, rng.stream, i >> 2);
  const uint32_t skip = static_cast<uint32_t>(i & 3);
  if (skip == 0) {
    for (int k = 0; k < 4; ++k) bits[k] = first.v[k];
    return;
  }
  const Philox4x32 second = PhiloxBlock(rng.seed, rng.stream, (i >> 2) + 1);
  // Word j of the pair, by selects: indexing v with a run-time j would put both blocks in a GPU
  // thread's local memory.
  auto word = [&](uint32_t j) {
    const uint32_t w = j & 3;
    const uint32_t a = w == 0 ? first.v[0] : w == 1 ? first.v[1] : w == 2 ? first.v[2] : first.v[3];
    const uint32_t b = w == 0 ? second.v[0] : w == 1 ? second.v[1] : w == 2 ? second.v[2] : second.v[3];
    return j < 4 ? a : b;
  };
  for (uint32_t k = 0; k < 4; ++k) bits[k] = word(skip + k);
}

// Uniform in [0, 1) with 24 bits, exactly representable in float: the same value on every device.
LAMINA_HD float UniformFromBits(uint32_t bits) { return static_cast<float>(bits >> 8) * (1.0f / 16777216.0f); }

// The smallest 32-bit draw that dropout with probability p in [0, 1) keeps:
// bits >= KeepThreshold(p) exactly when UniformFromBits(bits) >= p. One integer compare per
// element instead of a shift, a conversion and a float compare (for kernels where that counts).
// Exact: (bits >> 8) * 2^-24 and p * 2^24 are both exact in float, so the test is
// (bits >> 8) >= ceil(p * 2^24), and p <= 1 - 2^-24 keeps the shifted threshold below 2^32.
LAMINA_HD uint32_t KeepThreshold(float p) { return static_cast<uint32_t>(ceilf(p * 16777216.0f)) << 8; }

// Dropout keeps element `index` when its uniform draw is >= p.
LAMINA_HD bool DropoutKeep(const RngContext& rng, uint64_t index, float p) {
  return UniformFromBits(PhiloxAt(rng.seed, rng.stream, rng.offset + index)) >= p;
}

// DropoutKeep of elements index..index+3 as bits 0..3 (set: kept), from PhiloxDraws4 and
// threshold = KeepThreshold(p): for kernels that keep the decisions as bits.
LAMINA_HD uint32_t DropoutKeepBits4(const RngContext& rng, uint64_t index, uint32_t threshold) {
  uint32_t draws[4];
  PhiloxDraws4(rng, index, draws);
  uint32_t keep = 0;
  for (int k = 0; k < 4; ++k) keep |= (draws[k] >= threshold ? 1u : 0u) << k;
  return keep;
}

// Attention-probability dropout draws 8 decisions per Philox block, where DropoutKeepBits4 draws
// 4: element (row r, key k) of the [rows, seq] probabilities is kept when the 16-bit half k & 1
// of word (k >> 1) & 3 of Philox block (rng.offset + r) * ceil(seq / 8) + k / 8 is at least
// KeepThreshold16(p). rng.offset counts rows here. Why: the fused attention's forward pass was
// bound by its Philox arithmetic (the dropout cost 0.25 of its 0.71 ms per layer at 64 x 512 on
// the H100), and with every row starting a block of its own no run of 8 keys straddles two blocks.
// The price is p resolved to 2^-16: a decision drops with probability ceil(p 2^16) / 2^16
// (0.100006 for p = 0.1).
LAMINA_HD uint32_t KeepThreshold16(float p) { return static_cast<uint32_t>(ceilf(p * 65536.0f)); }
// Bits 0..7: whether keys 8 k8 .. 8 k8 + 7 of row `row` are kept (keys from seq on are drawn too,
// from the next row's first block: callers ignore them). threshold16 = KeepThreshold16(p).
LAMINA_HD uint32_t AttentionKeepBits8(const RngContext& rng, uint64_t row, int64_t seq, int64_t k8,
                                      uint32_t threshold16) {
  const uint64_t blocks_per_row = static_cast<uint64_t>(seq + 7) / 8;
  const Philox4x32 d = PhiloxBlock(rng.seed, rng.stream, (rng.offset + row) * blocks_per_row + k8);
  uint32_t keep = 0;
  for (int w = 0; w < 4; ++w) {
    keep |= ((d.v[w] & 0xffffu) >= threshold16 ? 1u : 0u) << (2 * w);
    keep |= ((d.v[w] >> 16) >= threshold16 ? 1u : 0u) << (2 * w + 1);
  }
  return keep;
}
// One decision of AttentionKeepBits8: whether key `key` of row `row` is kept.
LAMINA_HD bool AttentionDropoutKeep(const RngContext& rng, uint64_t row, int64_t seq, int64_t key, float p) {
  return ((AttentionKeepBits8(rng, row, seq, key / 8, KeepThreshold16(p)) >> (key % 8)) & 1u) != 0;
}
// Builds a stream id from up to four small fields (e.g. step, layer, site): 24+16+16+8 bits.
LAMINA_HD uint64_t MakeStream(uint64_t a, uint64_t b = 0, uint64_t c = 0, uint64_t d = 0) {
  return (a & 0xFFFFFFull) << 40 | (b & 0xFFFFull) << 24 | (c & 0xFFFFull) << 8 | (d & 0xFFull);
}

}  // namespace lamina
