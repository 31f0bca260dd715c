// The attention core as fused tiled kernels (flash attention, Dao et al. 2022; the work split of
// FlashAttention-2): the [T, T] scores never leave the registers. The forward pass keeps an online
// softmax per query row and saves one logsumexp per row; the backward pass recomputes the
// probabilities from it. Same definition, masks and dropout stream as the reference
// (model/cpu/attention.cc) and the GEMM path (model/cuda/attention.cu).
//
// Shapes: a block takes 64 MT queries (forward, dQ) or 64 MT keys (dK/dV) of one (batch, head) and
// walks the other side in steps (64 keys in the forward kernel; 64 / MT in the backward ones, whose
// registers hold twice the tiles), loaded with cp.async one step ahead of the one being computed. Each of its 4 warps owns MT row tiles of 16
// of the block's rows (MT = 1 or 2, FlashShape::warp_rows / 16): its operand fragments stay in
// registers for the whole walk, and each step's [16, 64] score tiles are mma.sync accumulators
// (model/cuda/mma.cuh) that are scaled, masked, exponentiated and dropped out in place, then
// repacked as the bf16 A operands of the next product. With two row tiles a warp reads each B
// fragment from shared memory once for two products: half the fragment loads per product, for
// about twice the registers (fewer blocks per SM). Head dims are padded with zeros to DP, a
// multiple of 16 (16, 32, 64 or 128).
//
// Backward without atomics, so results are deterministic: one kernel accumulates dK and dV for a
// tile of keys over all queries, another dQ for a tile of queries over all keys (S and dP are
// computed twice: 7 products where atomics would take 5). Delta_i = dO_i . O_i (= sum_j P_ij dP_ij,
// with or without dropout) is computed by the dQ kernel for its own queries, which it needs first,
// and left in global memory for the dK/dV kernel, launched after it. The dropout decisions
// (AttentionKeepBits8, 8 per Philox block) are drawn once, in the forward pass, and kept as bits
// (SavedLayout): one bit per score costs less memory traffic than the two more Philox blocks per
// eight scores it saves.
#pragma once

#include <cstddef>
#include <cstdint>

#include "core/philox.h"
#include "model/cuda/common.cuh"
#include "model/cuda/mma.cuh"

// Internal linkage: one translation unit per binary includes this (the launchers, or the
// emulation test), and the two must not meet at link time.
namespace lamina::cuda::flash {
namespace {

constexpr int kTile = 64;  // rows of a block per row tile of its warps; keys of a forward step and of a keep-bit tile
constexpr int kWarps = 4;
constexpr int kThreads = 32 * kWarps;
constexpr int kGroup = 16;             // rows of an mma row tile; the keep bits' query groups
constexpr int kStepTiles = kTile / 8;  // C tiles across a [16, 64] score tile
constexpr float kLog2e = 1.4426950408889634f;
// Blocks per SM that each kernel's launch bounds ask registers for. At DP <= 64 (BERT's heads) and
// one row tile per warp the compiler then fits the forward kernel in 128 registers and the backward
// kernels in 168, with 16 bytes of stack each: 4 and 3 blocks per SM instead of 3 and 2 (156 and
// 180-240 registers unbounded). Two row tiles per warp ask for 2 blocks (up to 255 registers). At
// DP = 128 the bounds spill 336-528 bytes, so it keeps one.
template <int DP, int MT>
constexpr int kForwardMinBlocks = DP > 64 ? 1 : MT == 1 ? 4 : 2;
template <int DP, int MT>
constexpr int kBackwardMinBlocks = DP > 64 ? 1 : MT == 1 ? 3 : 2;

template <int DP>
struct Dims {
  // bf16 [rows, DP] operand tiles. The 16-byte pad keeps rows 16-byte aligned for ldmatrix and
  // cp.async, and puts the 8 rows an ldmatrix reads at once on different banks.
  static constexpr int kLd = DP + 8;
  static constexpr int kTileElems = kTile * kLd;
  static constexpr int kSteps = DP / 16;    // k-steps of a product over the head dim
  static constexpr int kOutTiles = DP / 8;  // C tiles across a [16, DP] result
};

// buffers[buf] of a double buffer, as a select: an index into the pointer pair would put the
// pair in local memory.
template <typename T>
__device__ __forceinline__ T* Pick(T* const (&buffers)[2], int buf) {
  return buf != 0 ? buffers[1] : buffers[0];
}

constexpr size_t Round128(size_t b) { return (b + 127) / 128 * 128; }

// Carves shared memory into regions of whole 128-byte lines. With a null base it only counts, so
// the launchers size the shared memory with the same code that the kernels lay it out with.
struct SmemCursor {
  unsigned char* base;
  size_t used = 0;
  template <typename T>
  LAMINA_HD T* Take(int elems) {
    T* r = base != nullptr ? reinterpret_cast<T*>(base + used) : nullptr;
    used += Round128(static_cast<size_t>(elems) * sizeof(T));
    return r;
  }
};
template <typename Layout>
size_t SmemBytes() {
  SmemCursor cur{nullptr};
  Layout layout(cur);
  return cur.used;
}

// Rows t0..t0+ROWS-1 of one head's columns [0, D) of a bf16 matrix with row stride ld (from
// `base`, the head's token 0), into a [ROWS, DP] tile with cp.async; rows past T and columns past D
// are zero-filled. The caller commits the group.
template <int DP, int ROWS = kTile>
__device__ void LoadTileAsync(const bf16_t* base, int64_t ld, int t0, int T, int D, bf16_t* tile) {
  constexpr int kVecs = DP / 8;
  for (int idx = threadIdx.x; idx < ROWS * kVecs; idx += kThreads) {
    const int r = idx / kVecs, c = (idx % kVecs) * 8;
    const bool valid = t0 + r < T && c < D;
    CopyAsync16(tile + r * Dims<DP>::kLd + c, valid ? base + static_cast<int64_t>(t0 + r) * ld + c : base, valid);
  }
}

// Attention dropout: keep decisions as bits, from AttentionKeepBits8 (8 keys per Philox block).
struct Dropout {
  RngContext rng;
  uint32_t threshold;  // KeepThreshold16(p)

  // Keep bits of a warp's [16, 64] tile of keys k0.. for dropout rows first_row.. (queries), held
  // as C tiles: bit 4 nt + c for element c of C tile nt. Each lane draws four blocks, of row
  // g + 8 (t >> 1) and C tiles 4 (t & 1)..+3 (8 keys each); then each lane gathers its two
  // columns 2t, 2t + 1 of each tile from the four lanes of its row group.
  __device__ uint32_t RowMajorKeep(uint64_t first_row, int k0, int T) const {
    const int lane = static_cast<int>(threadIdx.x & 31), g = lane >> 2, t = lane & 3;
    const uint64_t row = first_row + static_cast<uint64_t>(g + 8 * (t >> 1));
    const int64_t k8 = k0 / 8 + 4 * (t & 1);
    uint32_t mine = 0;  // byte j: C tile 4 (t & 1) + j
#pragma unroll
    for (int j = 0; j < 4; ++j) mine |= AttentionKeepBits8(rng, row, T, k8 + j, threshold) << (8 * j);
    const int group = lane & ~3;
    const uint32_t row_g[2] = {__shfl_sync(0xffffffffu, mine, group), __shfl_sync(0xffffffffu, mine, group | 1)};
    const uint32_t row_g8[2] = {__shfl_sync(0xffffffffu, mine, group | 2), __shfl_sync(0xffffffffu, mine, group | 3)};
    uint32_t keep = 0;
#pragma unroll
    for (int nt = 0; nt < kStepTiles; ++nt) {
      const int shift = 8 * (nt & 3) + 2 * t;  // columns 2t, 2t + 1 of C tile nt in its byte
      keep |= ((row_g[nt >> 2] >> shift) & 3u) << (4 * nt);
      keep |= ((row_g8[nt >> 2] >> shift) & 3u) << (4 * nt + 2);
    }
    return keep;
  }
};

// The keep bits of a dK/dV row tile's transposed scores: keys 16 kg.. of a 64-key tile (kg = 0..3)
// against the 8 NT queries of 16-row query groups 0..NT/2-1, from the words the forward pass stored
// for those groups and that key tile (words[32 group + lane] is RowMajorKeep of the forward's lane).
// Element c of C tile nt is key 16 kg + g + 8 (c >> 1) and query 8 nt + 2t + (c & 1): the forward
// held it in group nt >> 1, lane 4 (2t + (c & 1)) + (g >> 1), as element 2 (nt & 1) + (g & 1) of C
// tile 2 kg + (c >> 1). Two words per lane and group.
template <int NT>
__device__ __forceinline__ uint32_t TransposedKeep(const uint32_t* words, int kg) {
  static_assert(NT % 2 == 0 && NT <= 8, "bits 4 nt + c of one word");
  const int lane = static_cast<int>(threadIdx.x & 31), g = lane >> 2, t = lane & 3;
  uint32_t keep = 0;
#pragma unroll
  for (int group = 0; group < NT / 2; ++group)  // nt >> 1
#pragma unroll
    for (int odd = 0; odd < 2; ++odd) {  // c & 1
      const uint32_t w = words[32 * group + 4 * (2 * t + odd) + (g >> 1)];
#pragma unroll
      for (int nt1 = 0; nt1 < 2; ++nt1)
#pragma unroll
        for (int hi = 0; hi < 2; ++hi) {  // c >> 1
          const uint32_t bit = (w >> (4 * (2 * kg + hi) + 2 * nt1 + (g & 1))) & 1u;
          keep |= bit << (4 * (2 * group + nt1) + 2 * hi + odd);
        }
    }
  return keep;
}

__device__ __forceinline__ bool Kept(uint32_t keep, int nt, int c) { return ((keep >> (4 * nt + c)) & 1u) != 0; }

// What the forward pass leaves in `saved` for the backward pass: one f32 logsumexp per query row
// ([B * heads * T], log2 domain, +inf for a row with no key), then, from a 16-byte boundary, the
// dropout keep bits it drew: one 32-bit word (RowMajorKeep) per lane for each 16-query group and
// 64-key tile, [B * heads][groups][key tiles][32 lanes], whatever the kernels' block shapes. The
// backward kernels read these instead of drawing again. The groups and key tiles are counted in
// whole 128-row spans, so that every block of either shape finds its words without a bounds check.
// The forward pass writes the words of all its blocks' groups and of the key tiles before T; words
// of groups wholly past T, or unwritten, feed no result (those queries' logsumexps are +inf, their
// dQ rows are not stored).
// One (sequence, head)'s keep words cover whole 128-row spans: 8 query groups and 2 key tiles each.
// (In the kernels' own integer type: a 64-bit division there costs the dK/dV kernel registers.)
template <typename Int>
LAMINA_HD constexpr Int KeepSpans(Int T) {
  return (T + 127) / 128;
}
struct SavedLayout {
  int64_t groups, key_tiles;
  int64_t keep_at;  // byte offset of the keep words
  int64_t bytes;    // in all
  SavedLayout(int64_t batch_heads, int64_t T)
      : groups(8 * KeepSpans(T)),
        key_tiles(2 * KeepSpans(T)),
        keep_at((batch_heads * T * 4 + 15) / 16 * 16),
        bytes(keep_at + batch_heads * groups * key_tiles * 32 * 4) {}
  // The keep words of a record laid out this way (from its logsumexps, at `saved`).
  uint32_t* KeepBits(void* saved) const { return reinterpret_cast<uint32_t*>(static_cast<char*>(saved) + keep_at); }
  const uint32_t* KeepBits(const void* saved) const {
    return reinterpret_cast<const uint32_t*>(static_cast<const char*>(saved) + keep_at);
  }
};
// The index of lane's keep word for query group `group` and key tile k_tile of (sequence, head) bh,
// with T keys and queries (SavedLayout).
__device__ __forceinline__ int64_t KeepWord(int bh, int group, int k_tile, int T, int lane) {
  const int64_t spans = KeepSpans(T);  // from the int T
  return ((bh * 8 * spans + group) * 2 * spans + k_tile) * 32 + lane;
}

// What every kernel derives from its arguments and blockIdx.x: the (sequence, head) it works on,
// where that head's rows start, and its score and dropout scales.
struct BlockHead {
  int b, bh;
  int64_t first_token;  // b * T: the sequence's first row in [B*T, *] matrices
  int64_t col;          // h * D: the head's first column within q, k, v, out, dout
  int64_t ld;           // row stride of qkv: 3H
  const bf16_t* rows;   // q of the sequence's token 0 in this head; k at +H, v at +2H
  float scale;          // 1 / sqrt(D)
  float scale_log2;     // log2(e) / sqrt(D): scores in the log2 domain
  float keep_scale;     // 1 / (1 - p) for kept dropout elements

  __device__ BlockHead(const bf16_t* qkv, int T, int heads, int H, int D, float p)
      : b(static_cast<int>(blockIdx.x) / heads),
        bh(static_cast<int>(blockIdx.x)),
        first_token(static_cast<int64_t>(b) * T),
        col(static_cast<int64_t>(static_cast<int>(blockIdx.x) % heads) * D),
        ld(3LL * H),
        rows(At(qkv, 3LL * H)),
        scale(rsqrtf(static_cast<float>(D))),
        scale_log2(kLog2e * scale),
        keep_scale(p > 0.0f ? 1.0f / (1.0f - p) : 1.0f) {}

  // This head's columns at the sequence's token 0 of a matrix with row stride `stride`.
  template <typename T>
  __device__ T* At(T* base, int64_t stride) const {
    return base + first_token * stride + col;
  }

  // smask[j] = key_mask of key k0 + j (j < N) of this sequence, 0 past its end.
  template <int N = kTile>
  __device__ void LoadKeyMask(const int32_t* key_mask, int k0, int T, int32_t* smask) const {
    for (int j = threadIdx.x; j < N; j += kThreads)
      smask[j] = k0 + j < T ? key_mask[static_cast<int64_t>(b) * T + k0 + j] : 0;
  }
};

// Writes a warp's [16, DP] f32 result (C tiles; rows row0 + g and row0 + g + 8 in this lane), row r
// times row_scale[r], as bf16 into a matrix with row stride ld from `base` (the head's token 0).
// Rows from T and columns from D are not written.
template <int DP>
__device__ void StoreRows(const float (&c)[Dims<DP>::kOutTiles][4], const float (&row_scale)[2], bf16_t* base,
                          int64_t ld, int row0, int T, int D) {
  const int lane = static_cast<int>(threadIdx.x & 31), g = lane >> 2, t = lane & 3;
#pragma unroll
  for (int r = 0; r < 2; ++r) {
    const int row = row0 + g + 8 * r;
    if (row >= T) continue;
    bf16_t* dst = base + static_cast<int64_t>(row) * ld + 2 * t;
#pragma unroll
    for (int n = 0; n < Dims<DP>::kOutTiles; ++n)
      if (8 * n < D)
        *reinterpret_cast<uint32_t*>(dst + 8 * n) =
            PackBf16x2(c[n][2 * r] * row_scale[r], c[n][2 * r + 1] * row_scale[r]);
  }
}

// The double-buffered K, V and key-mask tiles of a block that walks the keys (forward and dQ), ROWS
// keys a step: step i computes on buffer i % 2 while step i + 1 loads into the other.
template <int DP, int ROWS = kTile>
struct KeyStepTiles {
  bf16_t* k[2];
  bf16_t* v[2];
  int32_t* mask[2];
  LAMINA_HD explicit KeyStepTiles(SmemCursor& cur) {
    for (int i = 0; i < 2; ++i) {
      k[i] = cur.Take<bf16_t>(ROWS * Dims<DP>::kLd);
      v[i] = cur.Take<bf16_t>(ROWS * Dims<DP>::kLd);
      mask[i] = cur.Take<int32_t>(ROWS);
    }
  }
  // Starts loading keys k0..k0+ROWS-1 into buffer `buf`, as one cp.async group.
  __device__ void Load(const BlockHead& bk, const int32_t* key_mask, int k0, int T, int H, int D, int buf) const {
    LoadTileAsync<DP, ROWS>(bk.rows + H, bk.ld, k0, T, D, Pick(k, buf));
    LoadTileAsync<DP, ROWS>(bk.rows + 2 * H, bk.ld, k0, T, D, Pick(v, buf));
    bk.LoadKeyMask<ROWS>(key_mask, k0, T, Pick(mask, buf));
    CommitAsync();
  }
};

template <int DP, int MT>
struct ForwardSmem {
  bf16_t* q;  // the block's 64 MT queries
  KeyStepTiles<DP> keys;
  LAMINA_HD explicit ForwardSmem(SmemCursor& cur) : q(cur.Take<bf16_t>(MT * Dims<DP>::kTileElems)), keys(cur) {}
};

// grid (batch * heads, ceil(T / (64 MT))). out: [B*T, H]; lse and keep_bits: SavedLayout (keep_bits
// written only when p > 0). Warp w's row tile mt is query group 4 MT blockIdx.y + MT w + mt.
template <int DP, int MT>
__global__ void __launch_bounds__(kThreads, kForwardMinBlocks<DP, MT>)
    FlashForwardKernel(const bf16_t* qkv, const int32_t* key_mask, int T, int heads, int H, int D, float p,
                       RngContext rng, bf16_t* out, float* lse, uint32_t* keep_bits) {
  using Dm = Dims<DP>;
  LAMINA_DYNAMIC_SMEM(smem);
  SmemCursor cur{smem};
  const ForwardSmem<DP, MT> sm(cur);
  const BlockHead bk(qkv, T, heads, H, D, p);
  const int warp = static_cast<int>(threadIdx.x >> 5), lane = static_cast<int>(threadIdx.x & 31);
  const int g = lane >> 2, t = lane & 3;
  const int q0 = static_cast<int>(blockIdx.y) * kTile * MT;
  const int group0 = q0 / kGroup + MT * warp;  // of row tile 0; rows 16 group + 0..15
  const Dropout drop{rng, KeepThreshold16(p)};
  LoadTileAsync<DP, kTile * MT>(bk.rows, bk.ld, q0, T, D, sm.q);
  sm.keys.Load(bk, key_mask, 0, T, H, D, 0);
  // Where row tile mt's keep words go: key tile i's at keep_row[mt][32 i]. Groups wholly past T are
  // written too (SavedLayout has room for every block's): their bits are drawn anyway, and a bounds
  // check here cost the kernel registers.
  uint32_t* keep_row[MT];
#pragma unroll
  for (int mt = 0; mt < MT; ++mt)
    keep_row[mt] = keep_bits + KeepWord(bk.bh, group0 + mt, 0, T, lane);

  uint32_t qa[MT][Dm::kSteps][4];
  float o[MT][Dm::kOutTiles][4] = {};
  // Rows g and g + 8 of each row tile: running max (log2 domain) and this lane's part of the sum.
  float m[MT][2], l[MT][2];
#pragma unroll
  for (int mt = 0; mt < MT; ++mt) m[mt][0] = m[mt][1] = -INFINITY, l[mt][0] = l[mt][1] = 0.0f;
  for (int k0 = 0, step = 0; k0 < T; k0 += kTile, ++step) {
    const int buf = step & 1;
    WaitAsync<0>();
    __syncthreads();  // this step's tiles are in; every warp is done with the other buffer
    if (step == 0) {
#pragma unroll
      for (int mt = 0; mt < MT; ++mt)
#pragma unroll
        for (int k = 0; k < Dm::kSteps; ++k) LoadA(qa[mt][k], sm.q, Dm::kLd, 16 * (MT * warp + mt), 16 * k);
    }
    if (k0 + kTile < T) sm.keys.Load(bk, key_mask, k0 + kTile, T, H, D, buf ^ 1);
    const bf16_t *k_tile = Pick(sm.keys.k, buf), *v_tile = Pick(sm.keys.v, buf);
    const int32_t* mask = Pick(sm.keys.mask, buf);

    float s[MT][kStepTiles][4] = {};
    MmaABt(s, qa, k_tile, Dm::kLd);
    uint32_t pa[MT][kStepTiles / 2][4];
#pragma unroll
    for (int mt = 0; mt < MT; ++mt) {
      float tile_max[2] = {-INFINITY, -INFINITY};
#pragma unroll
      for (int nt = 0; nt < kStepTiles; ++nt)
#pragma unroll
        for (int c = 0; c < 4; ++c) {
          const bool live = mask[8 * nt + 2 * t + (c & 1)] != 0;
          s[mt][nt][c] = live ? s[mt][nt][c] * bk.scale_log2 : -INFINITY;
          tile_max[c >> 1] = fmaxf(tile_max[c >> 1], s[mt][nt][c]);
        }
      float base[2];  // what the exponents are taken from: the new max, or 0 while a row has no live key
#pragma unroll
      for (int r = 0; r < 2; ++r) {
        tile_max[r] = fmaxf(tile_max[r], __shfl_xor_sync(0xffffffffu, tile_max[r], 1));
        tile_max[r] = fmaxf(tile_max[r], __shfl_xor_sync(0xffffffffu, tile_max[r], 2));
        const float m_new = fmaxf(m[mt][r], tile_max[r]);
        base[r] = m_new == -INFINITY ? 0.0f : m_new;
        const float corr = Exp2Approx(m[mt][r] - base[r]);
        l[mt][r] *= corr;
#pragma unroll
        for (int n = 0; n < Dm::kOutTiles; ++n) o[mt][n][2 * r] *= corr, o[mt][n][2 * r + 1] *= corr;
        m[mt][r] = m_new;
      }
      uint32_t keep = ~0u;
      if (p > 0.0f) {
        keep = drop.RowMajorKeep(static_cast<uint64_t>(bk.bh) * T + kGroup * (group0 + mt), k0, T);
        keep_row[mt][32 * step] = keep;
      }
#pragma unroll
      for (int nt = 0; nt < kStepTiles; ++nt)
#pragma unroll
        for (int c = 0; c < 4; ++c) {
          const float pv = Exp2Approx(s[mt][nt][c] - base[c >> 1]);
          l[mt][c >> 1] += pv;
          s[mt][nt][c] = Kept(keep, nt, c) ? pv * bk.keep_scale : 0.0f;
        }
      ToA<kStepTiles>(s[mt], pa[mt]);
    }
    MmaAB(o, pa, v_tile, Dm::kLd);
  }
#pragma unroll
  for (int mt = 0; mt < MT; ++mt) {
    float inv[2];
    const int row0 = kGroup * (group0 + mt);
#pragma unroll
    for (int r = 0; r < 2; ++r) {
      l[mt][r] += __shfl_xor_sync(0xffffffffu, l[mt][r], 1);
      l[mt][r] += __shfl_xor_sync(0xffffffffu, l[mt][r], 2);
      inv[r] = l[mt][r] > 0.0f ? 1.0f / l[mt][r] : 0.0f;  // a row with no unmasked key stays 0
      const int qi = row0 + g + 8 * r;
      if (t == 0 && qi < T)
        lse[static_cast<int64_t>(bk.bh) * T + qi] = l[mt][r] > 0.0f ? m[mt][r] + log2f(l[mt][r]) : INFINITY;
    }
    StoreRows<DP>(o[mt], inv, bk.At(out, H), H, row0, T, D);
  }
}

// dQ blocks take 64 MT queries (MT row tiles per warp) and walk the keys in steps of 64 / MT, so
// that the registers hold MT [16, DP] accumulators, Q and dO fragments, and 2 MT [16, 64 / MT]
// score tiles.
template <int MT>
constexpr int kKeyStep = kTile / MT;

template <int DP, int MT>
struct QuerySmem {
  bf16_t* q;
  bf16_t* dout;
  float* delta;  // of the block's queries
  KeyStepTiles<DP, kKeyStep<MT>> keys;
  LAMINA_HD explicit QuerySmem(SmemCursor& cur)
      : q(cur.Take<bf16_t>(MT * Dims<DP>::kTileElems)),
        dout(cur.Take<bf16_t>(MT * Dims<DP>::kTileElems)),
        delta(cur.Take<float>(kTile * MT)),
        keys(cur) {}
};

// delta of queries q0..q0+N-1 (dO . O over the head's D columns; 0 past T) into smem_delta and,
// for those before T, the head's row of `delta` ([B * heads * T]). Two threads per query, each
// taking alternate runs of 8 columns; they meet by a shuffle.
template <int N>
__device__ void QueryDeltas(const BlockHead& bk, const bf16_t* dout, const bf16_t* out, int q0, int T, int H, int D,
                            float* smem_delta, float* delta) {
  static_assert(N % (kThreads / 2) == 0, "two threads per query");
  const int half = static_cast<int>(threadIdx.x & 1);
  for (int i = static_cast<int>(threadIdx.x >> 1); i < N; i += kThreads / 2) {
    const int64_t row = static_cast<int64_t>(q0 + i) * H;
    float s = 0.0f;
    if (q0 + i < T) {
      const bf16_t *a = bk.At(dout, H) + row, *o = bk.At(out, H) + row;
      for (int c = 8 * half; c < D; c += 16) {
        float x[8], y[8];
        Load8(a + c, x);
        Load8(o + c, y);
#pragma unroll
        for (int k = 0; k < 8; ++k) s += x[k] * y[k];
      }
    }
    s += __shfl_xor_sync(0xffffffffu, s, 1);
    if (half == 0) {
      smem_delta[i] = s;
      if (q0 + i < T) delta[static_cast<int64_t>(bk.bh) * T + q0 + i] = s;
    }
  }
}

// dQ for 64 MT queries of one (batch, head): grid (batch * heads, ceil(T / (64 MT))).
//   S = Q K^T, P = exp2(S * scale_log2 - lse), dP = (dO V^T) * M, dS = P (dP - delta), dQ = dS K / sqrt(D).
// Writes delta ([B * heads * T]) for FlashBackwardKeyKernel, which must run after it.
template <int DP, int MT>
__global__ void __launch_bounds__(kThreads, kBackwardMinBlocks<DP, MT>)
    FlashBackwardQueryKernel(const bf16_t* qkv, const int32_t* key_mask, const bf16_t* dout, const bf16_t* out,
                             const float* lse, const uint32_t* keep_bits, int T, int heads, int H, int D, float p,
                             float* delta, bf16_t* dqkv) {
  using Dm = Dims<DP>;
  constexpr int kStep = kKeyStep<MT>;
  constexpr int kNT = kStep / 8;  // C tiles across a [16, kStep] score tile
  LAMINA_DYNAMIC_SMEM(smem);
  SmemCursor cur{smem};
  const QuerySmem<DP, MT> sm(cur);
  const BlockHead bk(qkv, T, heads, H, D, p);
  const int warp = static_cast<int>(threadIdx.x >> 5), lane = static_cast<int>(threadIdx.x & 31);
  const int g = lane >> 2, t = lane & 3;
  const int q0 = static_cast<int>(blockIdx.y) * kTile * MT;
  const int group0 = q0 / kGroup + MT * warp;  // row tile mt: group0 + mt
  LoadTileAsync<DP, kTile * MT>(bk.rows, bk.ld, q0, T, D, sm.q);
  LoadTileAsync<DP, kTile * MT>(bk.At(dout, H), H, q0, T, D, sm.dout);
  sm.keys.Load(bk, key_mask, 0, T, H, D, 0);
  QueryDeltas<kTile * MT>(bk, dout, out, q0, T, H, D, sm.delta, delta);  // while the tiles load

  float row_lse[MT][2], row_delta[MT][2];
#pragma unroll
  for (int mt = 0; mt < MT; ++mt)
#pragma unroll
    for (int r = 0; r < 2; ++r) {
      const int qi = kGroup * (group0 + mt) + g + 8 * r;
      row_lse[mt][r] = qi < T ? lse[static_cast<int64_t>(bk.bh) * T + qi] : INFINITY;
    }
  uint32_t qa[MT][Dm::kSteps][4], da[MT][Dm::kSteps][4];
  float dq[MT][Dm::kOutTiles][4] = {};
  for (int k0 = 0, step = 0; k0 < T; k0 += kStep, ++step) {
    const int buf = step & 1;
    WaitAsync<0>();
    __syncthreads();
    if (step == 0) {
#pragma unroll
      for (int mt = 0; mt < MT; ++mt) {
        const int row = 16 * (MT * warp + mt);
#pragma unroll
        for (int k = 0; k < Dm::kSteps; ++k) {
          LoadA(qa[mt][k], sm.q, Dm::kLd, row, 16 * k);
          LoadA(da[mt][k], sm.dout, Dm::kLd, row, 16 * k);
        }
        for (int r = 0; r < 2; ++r) row_delta[mt][r] = sm.delta[row + g + 8 * r];
      }
    }
    if (k0 + kStep < T) sm.keys.Load(bk, key_mask, k0 + kStep, T, H, D, buf ^ 1);
    const bf16_t* k_tile = Pick(sm.keys.k, buf);
    const int32_t* mask = Pick(sm.keys.mask, buf);

    // The forward pass's keep bits for this lane's query groups and this step's keys: C tiles
    // kNT * (step % (64 / kStep)).. of the key tile's word.
    uint32_t keep[MT];
#pragma unroll
    for (int mt = 0; mt < MT; ++mt)
      keep[mt] = p > 0.0f ? keep_bits[KeepWord(bk.bh, group0 + mt, k0 / kTile, T, lane)] >>
                                (4 * kNT * (step % (kTile / kStep)))
                          : ~0u;
    float s[MT][kNT][4] = {}, dp[MT][kNT][4] = {};
    MmaABt(s, qa, k_tile, Dm::kLd);
    MmaABt(dp, da, Pick(sm.keys.v, buf), Dm::kLd);
    uint32_t dsa[MT][kNT / 2][4];
#pragma unroll
    for (int mt = 0; mt < MT; ++mt) {
#pragma unroll
      for (int nt = 0; nt < kNT; ++nt)
#pragma unroll
        for (int c = 0; c < 4; ++c) {
          const int r = c >> 1;
          const bool live = mask[8 * nt + 2 * t + (c & 1)] != 0;
          const float pv = live ? Exp2Approx(s[mt][nt][c] * bk.scale_log2 - row_lse[mt][r]) : 0.0f;
          const float dpv = Kept(keep[mt], nt, c) ? dp[mt][nt][c] * bk.keep_scale : 0.0f;
          s[mt][nt][c] = pv * (dpv - row_delta[mt][r]);  // dS
        }
      ToA<kNT>(s[mt], dsa[mt]);
    }
    MmaAB(dq, dsa, k_tile, Dm::kLd);
  }
  const float scale[2] = {bk.scale, bk.scale};
#pragma unroll
  for (int mt = 0; mt < MT; ++mt)
    StoreRows<DP>(dq[mt], scale, bk.At(dqkv, bk.ld), bk.ld, kGroup * (group0 + mt), T, D);
}

// dK/dV blocks take 64 MT keys (MT row tiles per warp) and walk the queries in steps of 64 / MT,
// so that the registers hold 2 MT [16, DP] accumulators and 2 MT [16, 64 / MT] score tiles. With
// kHoldKV (one row tile only) the step is 32 queries and the registers the score tiles free hold
// the warp's K and V fragments for the whole walk instead of reading them at every step.
template <int MT, bool kHoldKV>
constexpr int kQueryStep = kHoldKV ? kTile / 2 : kTile / MT;

template <int DP, int MT, bool kHoldKV>
struct KeySmem {
  static_assert(!kHoldKV || MT == 1, "held K and V fragments need the registers of a second row tile");
  static constexpr int kStep = kQueryStep<MT, kHoldKV>;
  static constexpr int kKeyTiles = MT;        // 64-key tiles of the block
  static constexpr int kGroups = kStep / kGroup;  // query groups of a step
  static constexpr int kWords = kKeyTiles * kGroups * 32;  // keep words of a step
  static_assert(kWords <= kThreads, "one keep word per thread and step at most");
  bf16_t* k;
  bf16_t* v;
  int32_t* mask;  // of the block's keys
  bf16_t* q[2];
  bf16_t* dout[2];
  float* lse[2];
  float* delta[2];
  uint32_t* keep[2];  // the forward's keep words for the step's query groups and the block's key tiles
  LAMINA_HD explicit KeySmem(SmemCursor& cur)
      : k(cur.Take<bf16_t>(MT * Dims<DP>::kTileElems)),
        v(cur.Take<bf16_t>(MT * Dims<DP>::kTileElems)),
        mask(cur.Take<int32_t>(kTile * MT)) {
    for (int i = 0; i < 2; ++i) {
      q[i] = cur.Take<bf16_t>(kStep * Dims<DP>::kLd);
      dout[i] = cur.Take<bf16_t>(kStep * Dims<DP>::kLd);
      lse[i] = cur.Take<float>(kStep);
      delta[i] = cur.Take<float>(kStep);
      keep[i] = cur.Take<uint32_t>(kWords);  // [key tile][query group][lane]
    }
  }
};

// dK and dV for 64 MT keys of one (batch, head): grid (batch * heads, ceil(T / (64 MT))). Each
// warp computes, for each of its MT row tiles of 16 keys, the transposed tiles S^T = K Q^T and
// dP~^T = V dO^T against a step's queries, then
//   dV += (P * M)^T dO,  dK += dS^T Q / sqrt(D).
// K's and V's fragments are read from shared memory at each step, the registers going to the
// accumulators, unless kHoldKV.
template <int DP, int MT, bool kHoldKV>
__global__ void __launch_bounds__(kThreads, kBackwardMinBlocks<DP, MT>)
    FlashBackwardKeyKernel(const bf16_t* qkv, const int32_t* key_mask, const bf16_t* dout, const float* lse,
                           const uint32_t* keep_bits, const float* delta, int T, int heads, int H, int D, float p,
                           bf16_t* dqkv) {
  using Dm = Dims<DP>;
  using Sm = KeySmem<DP, MT, kHoldKV>;
  constexpr int kStep = Sm::kStep;
  constexpr int kNT = kStep / 8;  // C tiles across a [16, kStep] score tile
  LAMINA_DYNAMIC_SMEM(smem);
  SmemCursor cur{smem};
  const Sm sm(cur);
  const BlockHead bk(qkv, T, heads, H, D, p);
  const int warp = static_cast<int>(threadIdx.x >> 5), lane = static_cast<int>(threadIdx.x & 31);
  const int g = lane >> 2, t = lane & 3;
  const int k0 = static_cast<int>(blockIdx.y) * kTile * MT, kw = 16 * MT * warp;  // this warp's keys: k0 + kw..
  auto load_queries = [&](int q0, int buf) {
    LoadTileAsync<DP, kStep>(bk.rows, bk.ld, q0, T, D, Pick(sm.q, buf));
    LoadTileAsync<DP, kStep>(bk.At(dout, H), H, q0, T, D, Pick(sm.dout, buf));
    for (int i = threadIdx.x; i < kStep; i += kThreads) {
      const bool valid = q0 + i < T;
      Pick(sm.lse, buf)[i] = valid ? lse[static_cast<int64_t>(bk.bh) * T + q0 + i] : INFINITY;
      Pick(sm.delta, buf)[i] = valid ? delta[static_cast<int64_t>(bk.bh) * T + q0 + i] : 0.0f;
    }
    if (p > 0.0f && (Sm::kWords == kThreads || static_cast<int>(threadIdx.x) < Sm::kWords)) {
      const int i = static_cast<int>(threadIdx.x);
      Pick(sm.keep, buf)[i] = keep_bits[KeepWord(bk.bh, q0 / kGroup + (i / 32) % Sm::kGroups,
                                                 k0 / kTile + i / (32 * Sm::kGroups), T, lane)];
    }
    CommitAsync();
  };
  LoadTileAsync<DP, kTile * MT>(bk.rows + H, bk.ld, k0, T, D, sm.k);
  LoadTileAsync<DP, kTile * MT>(bk.rows + 2 * H, bk.ld, k0, T, D, sm.v);
  bk.LoadKeyMask<kTile * MT>(key_mask, k0, T, sm.mask);
  load_queries(0, 0);

  bool key_live[MT][2];  // keys kw + 16 mt + g and + 8
  [[maybe_unused]] uint32_t held_k[kHoldKV ? Dm::kSteps : 1][4], held_v[kHoldKV ? Dm::kSteps : 1][4];
  float dk[MT][Dm::kOutTiles][4] = {}, dv[MT][Dm::kOutTiles][4] = {};
  for (int q0 = 0, step = 0; q0 < T; q0 += kStep, ++step) {
    const int buf = step & 1;
    WaitAsync<0>();
    __syncthreads();
    if (step == 0) {
#pragma unroll
      for (int mt = 0; mt < MT; ++mt)
#pragma unroll
        for (int r = 0; r < 2; ++r) key_live[mt][r] = sm.mask[kw + 16 * mt + g + 8 * r] != 0;
      if constexpr (kHoldKV) {
#pragma unroll
        for (int k = 0; k < Dm::kSteps; ++k) {
          LoadA(held_k[k], sm.k, Dm::kLd, kw, 16 * k);
          LoadA(held_v[k], sm.v, Dm::kLd, kw, 16 * k);
        }
      }
    }
    if (q0 + kStep < T) load_queries(q0 + kStep, buf ^ 1);
    const bf16_t *q_tile = Pick(sm.q, buf), *dout_tile = Pick(sm.dout, buf);
    const float *step_lse = Pick(sm.lse, buf), *step_delta = Pick(sm.delta, buf);

    float st[MT][kNT][4] = {}, dpt[MT][kNT][4] = {};
    if constexpr (kHoldKV) {
      MmaABt(st[0], held_k, q_tile, Dm::kLd);
      MmaABt(dpt[0], held_v, dout_tile, Dm::kLd);
    } else {
      uint32_t a[MT][Dm::kSteps][4];
#pragma unroll
      for (int mt = 0; mt < MT; ++mt)
#pragma unroll
        for (int k = 0; k < Dm::kSteps; ++k) LoadA(a[mt][k], sm.k, Dm::kLd, kw + 16 * mt, 16 * k);
      MmaABt(st, a, q_tile, Dm::kLd);
#pragma unroll
      for (int mt = 0; mt < MT; ++mt)
#pragma unroll
        for (int k = 0; k < Dm::kSteps; ++k) LoadA(a[mt][k], sm.v, Dm::kLd, kw + 16 * mt, 16 * k);
      MmaABt(dpt, a, dout_tile, Dm::kLd);
    }
    uint32_t pa[MT][kNT / 2][4], dsa[MT][kNT / 2][4];
#pragma unroll
    for (int mt = 0; mt < MT; ++mt) {
      const int key_group = (kw + 16 * mt) / kGroup;  // within the block: key tile key_group / 4
      const uint32_t keep = p > 0.0f ? TransposedKeep<kNT>(Pick(sm.keep, buf) + 32 * Sm::kGroups * (key_group / 4),
                                                           key_group % 4)
                                     : ~0u;
#pragma unroll
      for (int nt = 0; nt < kNT; ++nt)
#pragma unroll
        for (int c = 0; c < 4; ++c) {
          const int j = 8 * nt + 2 * t + (c & 1);  // query within the step
          const float pv = key_live[mt][c >> 1] ? Exp2Approx(st[mt][nt][c] * bk.scale_log2 - step_lse[j]) : 0.0f;
          const bool kept = Kept(keep, nt, c);
          const float dpv = kept ? dpt[mt][nt][c] * bk.keep_scale : 0.0f;
          st[mt][nt][c] = kept ? pv * bk.keep_scale : 0.0f;  // (P * M)^T
          dpt[mt][nt][c] = pv * (dpv - step_delta[j]);       // dS^T
        }
      ToA<kNT>(st[mt], pa[mt]);
      ToA<kNT>(dpt[mt], dsa[mt]);
    }
    MmaAB(dv, pa, dout_tile, Dm::kLd);
    MmaAB(dk, dsa, q_tile, Dm::kLd);
  }
  bf16_t* out = bk.At(dqkv, bk.ld);
  const float dk_scale[2] = {bk.scale, bk.scale}, dv_scale[2] = {1.0f, 1.0f};
#pragma unroll
  for (int mt = 0; mt < MT; ++mt) {
    StoreRows<DP>(dk[mt], dk_scale, out + H, bk.ld, k0 + kw + 16 * mt, T, D);
    StoreRows<DP>(dv[mt], dv_scale, out + 2 * H, bk.ld, k0 + kw + 16 * mt, T, D);
  }
}

// Runs the body with DP bound to the padded head dim.
#define LAMINA_DISPATCH_HEAD_DIM(d, DP, ...) \
  if ((d) <= 16) {                           \
    constexpr int DP = 16;                   \
    __VA_ARGS__;                             \
  } else if ((d) <= 32) {                    \
    constexpr int DP = 32;                   \
    __VA_ARGS__;                             \
  } else if ((d) <= 64) {                    \
    constexpr int DP = 64;                   \
    __VA_ARGS__;                             \
  } else {                                   \
    constexpr int DP = 128;                  \
    __VA_ARGS__;                             \
  }

// Runs the body with MT bound to the row tiles per warp: warp_rows / 16 (1 or 2) for padded head
// dims DP <= 64; wider heads keep one (two would spill 350-920 bytes of registers at DP = 128).
#define LAMINA_DISPATCH_WARP_TILES(warp_rows, DP, MT, ...) \
  if ((warp_rows) == 32 && (DP) <= 64) {                   \
    constexpr int MT = (DP) <= 64 ? 2 : 1; /* no DP = 128 instance of MT = 2 */ \
    __VA_ARGS__;                                           \
  } else {                                                 \
    constexpr int MT = 1;                                  \
    __VA_ARGS__;                                           \
  }

// Runs the body with kHold bound to whether the dK/dV kernel holds its K and V fragments
// (FlashShape::hold_key_fragments): one row tile per warp and DP <= 64 only.
#define LAMINA_DISPATCH_HOLD_KV(hold, DP, MT, kHold, ...)                            \
  if ((hold) && (MT) == 1 && (DP) <= 64) {                                          \
    constexpr bool kHold = (MT) == 1 && (DP) <= 64; /* no instance it excludes */ \
    __VA_ARGS__;                                                                     \
  } else {                                                                           \
    constexpr bool kHold = false;                                                    \
    __VA_ARGS__;                                                                     \
  }

}  // namespace
}  // namespace lamina::cuda::flash
