// The attention core as fused tiled kernels (flash attention, Dao et al. 2022): the [T, T] scores
// never leave shared memory. The forward pass keeps an online softmax per query row and saves
// one logsumexp per row; the backward pass recomputes the probabilities from it. Same definition,
// masks and dropout stream as the reference (model/cpu/attention.cc) and the GEMM path
// (model/cuda/attention.cu).
//
// Shapes: a block takes 64 queries (forward, dQ) or 64 keys (dK/dV) of one (batch, head) and
// walks the other side in tiles of 64; each of its 4 warps owns 16 of the block's rows. Products
// are warp-level bf16 WMMA (16x16x16, fp32 accumulators) on shared-memory tiles; the row-wise
// softmax work goes through shared memory too, so nothing depends on the fragments' register
// layout. Head dims are padded with zeros to DP, a multiple of 16 (16, 32, 64 or 128).
//
// Backward without atomics, so results are deterministic: one kernel accumulates dK and dV for a
// tile of keys over all queries, another dQ for a tile of queries over all keys (S and dP are
// computed twice). Delta_i = dO_i . O_i (= sum_j P_ij dP_ij, with or without dropout) comes from
// a small kernel first.
#pragma once

#include <cstddef>
#include <cstdint>

#if defined(__CUDACC__)
#include <cuda_bf16.h>
#include <mma.h>
#endif

#include "core/philox.h"
#include "model/cuda/common.cuh"

// Internal linkage: one translation unit per binary includes this (the launchers, or the
// emulation test), and the two must not meet at link time.
namespace lamina::cuda::flash {
namespace {


namespace wmma = nvcuda::wmma;
using FragA = wmma::fragment<wmma::matrix_a, 16, 16, 16, __nv_bfloat16, wmma::row_major>;
using FragBRow = wmma::fragment<wmma::matrix_b, 16, 16, 16, __nv_bfloat16, wmma::row_major>;
using FragBCol = wmma::fragment<wmma::matrix_b, 16, 16, 16, __nv_bfloat16, wmma::col_major>;
using FragC = wmma::fragment<wmma::accumulator, 16, 16, 16, float>;

constexpr int kTile = 64;      // rows of a block, and columns of a step
constexpr int kWarps = 4;      // 16 rows each
constexpr int kThreads = 32 * kWarps;
constexpr int kLdS = kTile + 4;  // f32 [16, 64] score tiles (a multiple of 4 floats; 32-byte rows of fragments)
constexpr int kLdP = kTile + 8;  // bf16 [16, 64] probability tiles (a multiple of 8 elements)
constexpr float kLog2e = 1.4426950408889634f;

template <int DP>
struct Dims {
  static constexpr int kLdT = DP + 8;                                    // bf16 [64, DP] operand tiles
  static constexpr int kLdO = (DP > kTile ? DP : kTile) + 4;             // f32 per-warp [16, max(DP, 64)]
  static constexpr int kWarpF32 = 16 * kLdO;                             // one per-warp f32 tile
  static constexpr int kWarpBf16 = 16 * kLdP;                            // one per-warp bf16 tile
};

__device__ __forceinline__ const __nv_bfloat16* AsBf16(const bf16_t* p) { return reinterpret_cast<const __nv_bfloat16*>(p); }

// Shared memory carve-up: every region is a multiple of 128 bytes, so fragment pointers stay
// 32-byte aligned.
struct SmemCursor {
  unsigned char* p;
  template <typename T>
  __device__ T* Take(int elems) {
    T* r = reinterpret_cast<T*>(p);
    p += (static_cast<size_t>(elems) * sizeof(T) + 127) / 128 * 128;
    return r;
  }
};
constexpr size_t Round128(size_t b) { return (b + 127) / 128 * 128; }

// Rows t0..t0+63 of one head's columns [col, col + D) of a [rows, ld] bf16 matrix whose row of
// token t is `base + t * ld`, into a [64, DP] tile; rows past T and columns past D are zero.
template <int DP>
__device__ void LoadTile(const bf16_t* base, int64_t ld, int t0, int T, int D, bf16_t* tile) {
  constexpr int kVecs = DP / 8;
  for (int idx = threadIdx.x; idx < kTile * kVecs; idx += kThreads) {
    const int r = idx / kVecs, c = (idx % kVecs) * 8;
    uint4 v = make_uint4(0, 0, 0, 0);
    if (t0 + r < T && c < D) v = *reinterpret_cast<const uint4*>(base + static_cast<int64_t>(t0 + r) * ld + c);
    *reinterpret_cast<uint4*>(tile + r * Dims<DP>::kLdT + c) = v;
  }
}

// acc[16, 64] = A[16, DP] B^T with A rows and B rows (64 of them) in [*, DP] tiles: scores.
template <int DP>
__device__ void ProductABt(const bf16_t* a, const bf16_t* b, float* out) {
  constexpr int ld = Dims<DP>::kLdT;
#pragma unroll
  for (int n = 0; n < kTile / 16; ++n) {
    FragC acc;
    wmma::fill_fragment(acc, 0.0f);
#pragma unroll
    for (int k = 0; k < DP / 16; ++k) {
      FragA fa;
      FragBCol fb;
      wmma::load_matrix_sync(fa, AsBf16(a + k * 16), ld);
      wmma::load_matrix_sync(fb, AsBf16(b + n * 16 * ld + k * 16), ld);
      wmma::mma_sync(acc, fa, fb, acc);
    }
    wmma::store_matrix_sync(out + n * 16, acc, kLdS, wmma::mem_row_major);
  }
}

// acc[n] += P[16, 64] X[64, DP] for the DP/16 column blocks n, P a bf16 [16, 64] tile.
template <int DP>
__device__ void AccumulatePX(const bf16_t* p, const bf16_t* x, FragC (&acc)[DP / 16]) {
  constexpr int ld = Dims<DP>::kLdT;
#pragma unroll
  for (int k = 0; k < kTile / 16; ++k) {
    FragA fa;
    wmma::load_matrix_sync(fa, AsBf16(p + k * 16), kLdP);
#pragma unroll
    for (int n = 0; n < DP / 16; ++n) {
      FragBRow fb;
      wmma::load_matrix_sync(fb, AsBf16(x + k * 16 * ld + n * 16), ld);
      wmma::mma_sync(acc[n], fa, fb, acc[n]);
    }
  }
}

// Dropout draws for a run of consecutive stream indices, one Philox block per four of them.
struct DropoutRun {
  RngContext rng;
  float p;
  uint64_t block = ~0ull;
  Philox4x32 bits{};
  __device__ bool Keep(uint64_t index) {
    const uint64_t i = rng.offset + index;
    if ((i >> 2) != block) {
      block = i >> 2;
      bits = PhiloxBlock(rng.seed, rng.stream, block);
    }
    const uint32_t k = static_cast<uint32_t>(i & 3);
    const uint32_t b = k == 0 ? bits.v[0] : k == 1 ? bits.v[1] : k == 2 ? bits.v[2] : bits.v[3];
    return UniformFromBits(b) >= p;
  }
};

// What every kernel derives from its arguments and blockIdx.x: the (sequence, head) it works on,
// where that head's rows start, its score scale and its dropout stream.
struct BlockHead {
  int b, h, bh;
  int64_t first_token;  // b * T: the sequence's first row in [B*T, *] matrices
  int64_t col;          // h * D: the head's first column within q, k, v, out, dout
  int64_t ld;           // row stride of qkv: 3H
  const bf16_t* rows;   // q of the sequence's token 0 in this head; k at +H, v at +2H
  float scale;          // 1 / sqrt(D)
  float scale_log2;     // log2(e) / sqrt(D): scores in the log2 domain
  float keep_scale;     // 1 / (1 - p) for kept dropout elements
  DropoutRun drop;

  __device__ BlockHead(const bf16_t* qkv, int T, int heads, int H, int D, float p, RngContext rng)
      : b(static_cast<int>(blockIdx.x) / heads),
        h(static_cast<int>(blockIdx.x) % heads),
        bh(static_cast<int>(blockIdx.x)),
        first_token(static_cast<int64_t>(b) * T),
        col(static_cast<int64_t>(h) * D),
        ld(3LL * H),
        rows(At(qkv, 3LL * H)),
        scale(rsqrtf(static_cast<float>(D))),
        scale_log2(kLog2e * scale),
        keep_scale(p > 0.0f ? 1.0f / (1.0f - p) : 1.0f),
        drop{rng, p} {}

  // This head's columns at the sequence's token 0 of a matrix with row stride `stride`.
  template <typename T>
  __device__ T* At(T* base, int64_t stride) const {
    return base + first_token * stride + col;
  }

  // smask[j] = key_mask of key k0 + j of this sequence, 0 past its end.
  __device__ void LoadKeyMask(const int32_t* key_mask, int k0, int T, int32_t* smask) const {
    for (int j = threadIdx.x; j < kTile; j += kThreads)
      smask[j] = k0 + j < T ? key_mask[static_cast<int64_t>(b) * T + k0 + j] : 0;
  }
};

// Writes rows r = lane/2 of a warp's f32 [16, DP] tile (ld kLdO), times `scale`, as bf16 into the
// head's columns of a [rows, ld] matrix at token t0 + r: half a row per lane, 8 columns at a time.
template <int DP>
__device__ void StoreRows(const float* tile, float scale, bf16_t* base, int64_t ld, int t0, int T, int D) {
  const int lane = threadIdx.x & 31, r = lane >> 1, half = lane & 1;
  if (t0 + r >= T) return;
  bf16_t* row = base + static_cast<int64_t>(t0 + r) * ld;
  for (int c = half * (DP / 2); c < half * (DP / 2) + DP / 2 && c < D; c += 8) {
    float v[8];
#pragma unroll
    for (int k = 0; k < 8; ++k) v[k] = tile[r * Dims<DP>::kLdO + c + k] * scale;
    Store8(row + c, v);
  }
}

template <int DP>
inline size_t ForwardSmemBytes() {
  return 3 * Round128(kTile * Dims<DP>::kLdT * 2) + kWarps * (Round128(16 * kLdS * 4) + Round128(Dims<DP>::kWarpBf16 * 2) +
                                                             Round128(Dims<DP>::kWarpF32 * 4)) +
         Round128(kTile * 4);
}

// grid (batch * heads, ceil(T / 64)). out: [B*T, H]; lse: f32 [B*heads*T], log2 domain.
template <int DP>
__global__ void __launch_bounds__(kThreads) FlashForwardKernel(const bf16_t* qkv, const int32_t* key_mask, int T,
                                                               int heads, int H, int D, float p, RngContext rng,
                                                               bf16_t* out, float* lse) {
  LAMINA_DYNAMIC_SMEM(smem);
  using Dm = Dims<DP>;
  SmemCursor cur{smem};
  bf16_t* sq = cur.Take<bf16_t>(kTile * Dm::kLdT);
  bf16_t* sk = cur.Take<bf16_t>(kTile * Dm::kLdT);
  bf16_t* sv = cur.Take<bf16_t>(kTile * Dm::kLdT);
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
  float* ws = nullptr;
  bf16_t* wp = nullptr;
  float* wo = nullptr;
  for (int w = 0; w < kWarps; ++w) {  // per-warp regions, in warp order
    float* s = cur.Take<float>(16 * kLdS);
    bf16_t* pp = cur.Take<bf16_t>(Dm::kWarpBf16);
    float* o = cur.Take<float>(Dm::kWarpF32);
    if (w == warp) ws = s, wp = pp, wo = o;
  }
  int32_t* smask = cur.Take<int32_t>(kTile);

  BlockHead bk(qkv, T, heads, H, D, p, rng);
  const int q0 = blockIdx.y * kTile;
  LoadTile<DP>(bk.rows, bk.ld, q0, T, D, sq);
  for (int i = lane; i < Dm::kWarpF32; i += 32) wo[i] = 0.0f;

  const int r = lane >> 1, half = lane & 1;  // this lane's row of the warp's 16, and half of the columns
  const int qi = q0 + warp * 16 + r;
  float m = -INFINITY, l = 0.0f;  // running max (log2 domain) and sum of this row
  for (int k0 = 0; k0 < T; k0 += kTile) {
    __syncthreads();  // every warp is done with the previous K, V and mask
    LoadTile<DP>(bk.rows + H, bk.ld, k0, T, D, sk);
    LoadTile<DP>(bk.rows + 2 * H, bk.ld, k0, T, D, sv);
    bk.LoadKeyMask(key_mask, k0, T, smask);
    __syncthreads();
    ProductABt<DP>(sq + warp * 16 * Dm::kLdT, sk, ws);
    __syncwarp();

    float* srow = ws + r * kLdS + half * 32;
    float tile_max = -INFINITY;
    for (int c = 0; c < 32; ++c) {
      const float s = smask[half * 32 + c] != 0 ? srow[c] * bk.scale_log2 : -INFINITY;
      srow[c] = s;
      tile_max = fmaxf(tile_max, s);
    }
    tile_max = fmaxf(tile_max, __shfl_xor_sync(0xffffffffu, tile_max, 1));
    const float m_new = fmaxf(m, tile_max);
    const float corr = m == -INFINITY ? 0.0f : exp2f(m - m_new);
    float sum = 0.0f;
    const uint64_t index0 = (static_cast<uint64_t>(bk.bh) * T + qi) * T + k0 + half * 32;
    bf16_t* prow = wp + r * kLdP + half * 32;
    for (int c = 0; c < 32; ++c) {
      const float s = srow[c];
      const float pv = s == -INFINITY ? 0.0f : exp2f(s - m_new);
      sum += pv;
      const bool keep = p == 0.0f || pv == 0.0f || qi >= T || bk.drop.Keep(index0 + c);
      prow[c] = FromF<bf16_t>(keep ? pv * bk.keep_scale : 0.0f);
    }
    sum += __shfl_xor_sync(0xffffffffu, sum, 1);
    l = l * corr + sum;
    m = m_new;
    for (int c = half * (DP / 2); c < half * (DP / 2) + DP / 2; ++c) wo[r * Dm::kLdO + c] *= corr;
    __syncwarp();

    FragC acc[DP / 16];
#pragma unroll
    for (int n = 0; n < DP / 16; ++n) wmma::load_matrix_sync(acc[n], wo + n * 16, Dm::kLdO, wmma::mem_row_major);
    AccumulatePX<DP>(wp, sv, acc);
#pragma unroll
    for (int n = 0; n < DP / 16; ++n) wmma::store_matrix_sync(wo + n * 16, acc[n], Dm::kLdO, wmma::mem_row_major);
    __syncwarp();
  }
  const float inv = l > 0.0f ? 1.0f / l : 0.0f;  // a row with no unmasked key stays 0
  StoreRows<DP>(wo, inv, bk.At(out, H), H, q0 + warp * 16, T, D);
  if (half == 0 && qi < T) lse[static_cast<int64_t>(bk.bh) * T + qi] = l > 0.0f ? m + log2f(l) : INFINITY;
}

// delta[(b*heads + h)*T + t] = dO . O over the head's D columns of token (b, t).
__global__ void AttentionDeltaKernel(const bf16_t* dout, const bf16_t* out, int64_t tokens, int T, int heads, int H,
                                     int D, float* delta) {
  const int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x;
  if (i >= tokens * heads) return;
  const int64_t tok = i / heads;
  const int h = static_cast<int>(i % heads);
  const bf16_t* a = dout + tok * H + static_cast<int64_t>(h) * D;
  const bf16_t* o = out + tok * H + static_cast<int64_t>(h) * D;
  float s = 0.0f;
  for (int c = 0; c < D; c += 8) {
    float x[8], y[8];
    Load8(a + c, x);
    Load8(o + c, y);
#pragma unroll
    for (int k = 0; k < 8; ++k) s += x[k] * y[k];
  }
  const int64_t b = tok / T, t = tok % T;
  delta[(b * heads + h) * T + t] = s;
}

template <int DP>
inline size_t QuerySmemBytes() {
  return 4 * Round128(kTile * Dims<DP>::kLdT * 2) +
         kWarps * (2 * Round128(16 * kLdS * 4) + Round128(Dims<DP>::kWarpBf16 * 2) + Round128(Dims<DP>::kWarpF32 * 4)) +
         Round128(kTile * 4);
}

template <int DP>
inline size_t KeySmemBytes() {
  return 4 * Round128(kTile * Dims<DP>::kLdT * 2) +
         kWarps * (2 * Round128(16 * kLdS * 4) + 2 * Round128(Dims<DP>::kWarpBf16 * 2) + Round128(Dims<DP>::kWarpF32 * 4)) +
         3 * Round128(kTile * 4);
}

// dQ for 64 queries of one (batch, head): grid (batch * heads, ceil(T / 64)).
//   S = Q K^T, P = exp2(S * bk.scale_log2 - lse), dP = (dO V^T) * M, dS = P (dP - delta), dQ = dS K / sqrt(D).
template <int DP>
__global__ void __launch_bounds__(kThreads) FlashBackwardQueryKernel(const bf16_t* qkv, const int32_t* key_mask,
                                                                     const bf16_t* dout, const float* lse,
                                                                     const float* delta, int T, int heads, int H,
                                                                     int D, float p, RngContext rng, bf16_t* dqkv) {
  LAMINA_DYNAMIC_SMEM(smem);
  using Dm = Dims<DP>;
  SmemCursor cur{smem};
  bf16_t* sq = cur.Take<bf16_t>(kTile * Dm::kLdT);
  bf16_t* sdo = cur.Take<bf16_t>(kTile * Dm::kLdT);
  bf16_t* sk = cur.Take<bf16_t>(kTile * Dm::kLdT);
  bf16_t* sv = cur.Take<bf16_t>(kTile * Dm::kLdT);
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
  float *ws = nullptr, *wdp = nullptr, *wo = nullptr;
  bf16_t* wds = nullptr;
  for (int w = 0; w < kWarps; ++w) {
    float* s = cur.Take<float>(16 * kLdS);
    float* dp = cur.Take<float>(16 * kLdS);
    bf16_t* ds = cur.Take<bf16_t>(Dm::kWarpBf16);
    float* o = cur.Take<float>(Dm::kWarpF32);
    if (w == warp) ws = s, wdp = dp, wds = ds, wo = o;
  }
  int32_t* smask = cur.Take<int32_t>(kTile);

  BlockHead bk(qkv, T, heads, H, D, p, rng);
  const int q0 = blockIdx.y * kTile;
  LoadTile<DP>(bk.rows, bk.ld, q0, T, D, sq);
  LoadTile<DP>(bk.At(dout, H), H, q0, T, D, sdo);

  const int r = lane >> 1, half = lane & 1;
  const int qi = q0 + warp * 16 + r;
  const float row_lse = qi < T ? lse[static_cast<int64_t>(bk.bh) * T + qi] : INFINITY;
  const float row_delta = qi < T ? delta[static_cast<int64_t>(bk.bh) * T + qi] : 0.0f;
  FragC acc[DP / 16];
#pragma unroll
  for (int n = 0; n < DP / 16; ++n) wmma::fill_fragment(acc[n], 0.0f);
  for (int k0 = 0; k0 < T; k0 += kTile) {
    __syncthreads();
    LoadTile<DP>(bk.rows + H, bk.ld, k0, T, D, sk);
    LoadTile<DP>(bk.rows + 2 * H, bk.ld, k0, T, D, sv);
    bk.LoadKeyMask(key_mask, k0, T, smask);
    __syncthreads();
    ProductABt<DP>(sq + warp * 16 * Dm::kLdT, sk, ws);
    ProductABt<DP>(sdo + warp * 16 * Dm::kLdT, sv, wdp);
    __syncwarp();
    const uint64_t index0 = (static_cast<uint64_t>(bk.bh) * T + qi) * T + k0 + half * 32;
    for (int c = 0; c < 32; ++c) {
      const int j = half * 32 + c;
      const float pv = smask[j] != 0 ? exp2f(ws[r * kLdS + j] * bk.scale_log2 - row_lse) : 0.0f;
      const bool keep = p == 0.0f || pv == 0.0f || bk.drop.Keep(index0 + c);
      const float dp = keep ? wdp[r * kLdS + j] * bk.keep_scale : 0.0f;
      wds[r * kLdP + j] = FromF<bf16_t>(pv * (dp - row_delta));
    }
    __syncwarp();
    AccumulatePX<DP>(wds, sk, acc);
  }
#pragma unroll
  for (int n = 0; n < DP / 16; ++n) wmma::store_matrix_sync(wo + n * 16, acc[n], Dm::kLdO, wmma::mem_row_major);
  __syncwarp();
  StoreRows<DP>(wo, bk.scale, bk.At(dqkv, bk.ld), bk.ld, q0 + warp * 16, T, D);
}

// dK and dV for 64 keys of one (batch, head): grid (batch * heads, ceil(T / 64)). Each warp
// computes the transposed tiles S^T = K Q^T and dP^T = V dO^T for its 16 keys, then
//   dV += (P * M)^T dO,  dK += dS^T Q / sqrt(D).
template <int DP>
__global__ void __launch_bounds__(kThreads) FlashBackwardKeyKernel(const bf16_t* qkv, const int32_t* key_mask,
                                                                   const bf16_t* dout, const float* lse,
                                                                   const float* delta, int T, int heads, int H, int D,
                                                                   float p, RngContext rng, bf16_t* dqkv) {
  LAMINA_DYNAMIC_SMEM(smem);
  using Dm = Dims<DP>;
  SmemCursor cur{smem};
  bf16_t* sk = cur.Take<bf16_t>(kTile * Dm::kLdT);
  bf16_t* sv = cur.Take<bf16_t>(kTile * Dm::kLdT);
  bf16_t* sq = cur.Take<bf16_t>(kTile * Dm::kLdT);
  bf16_t* sdo = cur.Take<bf16_t>(kTile * Dm::kLdT);
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
  float *ws = nullptr, *wdp = nullptr, *wo = nullptr;
  bf16_t *wpt = nullptr, *wds = nullptr;
  for (int w = 0; w < kWarps; ++w) {
    float* s = cur.Take<float>(16 * kLdS);
    float* dp = cur.Take<float>(16 * kLdS);
    bf16_t* pt = cur.Take<bf16_t>(Dm::kWarpBf16);
    bf16_t* ds = cur.Take<bf16_t>(Dm::kWarpBf16);
    float* o = cur.Take<float>(Dm::kWarpF32);
    if (w == warp) ws = s, wdp = dp, wpt = pt, wds = ds, wo = o;
  }
  int32_t* smask = cur.Take<int32_t>(kTile);
  float* slse = cur.Take<float>(kTile);
  float* sdelta = cur.Take<float>(kTile);

  BlockHead bk(qkv, T, heads, H, D, p, rng);
  const int k0 = blockIdx.y * kTile;
  LoadTile<DP>(bk.rows + H, bk.ld, k0, T, D, sk);
  LoadTile<DP>(bk.rows + 2 * H, bk.ld, k0, T, D, sv);
  bk.LoadKeyMask(key_mask, k0, T, smask);
  const int kw = warp * 16;  // this warp's keys within the tile
  FragC dk[DP / 16], dv[DP / 16];
#pragma unroll
  for (int n = 0; n < DP / 16; ++n) {
    wmma::fill_fragment(dk[n], 0.0f);
    wmma::fill_fragment(dv[n], 0.0f);
  }
  for (int q0 = 0; q0 < T; q0 += kTile) {
    __syncthreads();
    LoadTile<DP>(bk.rows, bk.ld, q0, T, D, sq);
    LoadTile<DP>(bk.At(dout, H), H, q0, T, D, sdo);
    for (int i = threadIdx.x; i < kTile; i += kThreads) {
      const bool valid = q0 + i < T;
      slse[i] = valid ? lse[static_cast<int64_t>(bk.bh) * T + q0 + i] : INFINITY;
      sdelta[i] = valid ? delta[static_cast<int64_t>(bk.bh) * T + q0 + i] : 0.0f;
    }
    __syncthreads();
    ProductABt<DP>(sk + kw * Dm::kLdT, sq, ws);   // S^T [16 keys, 64 queries]
    ProductABt<DP>(sv + kw * Dm::kLdT, sdo, wdp);  // dP~^T
    __syncwarp();
    // Lane `lane` takes queries lane and lane + 32, each over the warp's 16 consecutive keys
    // (consecutive dropout indices).
    for (int qq = lane; qq < kTile; qq += 32) {
      const int qi = q0 + qq;
      const uint64_t index0 = (static_cast<uint64_t>(bk.bh) * T + qi) * T + k0 + kw;
      for (int rk = 0; rk < 16; ++rk) {
        const float pv =
            smask[kw + rk] != 0 && qi < T ? exp2f(ws[rk * kLdS + qq] * bk.scale_log2 - slse[qq]) : 0.0f;
        const bool keep = p == 0.0f || pv == 0.0f || bk.drop.Keep(index0 + rk);
        const float dp = keep ? wdp[rk * kLdS + qq] * bk.keep_scale : 0.0f;
        wpt[rk * kLdP + qq] = FromF<bf16_t>(keep ? pv * bk.keep_scale : 0.0f);
        wds[rk * kLdP + qq] = FromF<bf16_t>(pv * (dp - sdelta[qq]));
      }
    }
    __syncwarp();
    AccumulatePX<DP>(wpt, sdo, dv);
    AccumulatePX<DP>(wds, sq, dk);
  }
  bf16_t* out = bk.At(dqkv, bk.ld);
#pragma unroll
  for (int n = 0; n < DP / 16; ++n) wmma::store_matrix_sync(wo + n * 16, dk[n], Dm::kLdO, wmma::mem_row_major);
  __syncwarp();
  StoreRows<DP>(wo, bk.scale, out + H, bk.ld, k0 + kw, T, D);
  __syncwarp();
#pragma unroll
  for (int n = 0; n < DP / 16; ++n) wmma::store_matrix_sync(wo + n * 16, dv[n], Dm::kLdO, wmma::mem_row_major);
  __syncwarp();
  StoreRows<DP>(wo, 1.0f, out + 2 * H, bk.ld, k0 + kw, T, D);
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

}  // namespace
}  // namespace lamina::cuda::flash
