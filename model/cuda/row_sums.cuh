// Deterministic sums of many rows into one: bias gradients (column sums, alone or fused with the
// GELU backward that produces them), LayerNorm's dgamma and dbeta (where its 8-wide backward
// kernel does not sum them itself), and the word-embedding gradient (the rows of one id). All of
// them go through SumRowsOfTile: the warps of a block split the rows, each lane reads V adjacent
// columns with one access (16 bytes for 8 bf16), and the warps' partial sums are added in warp
// order, so the result depends on the shapes alone, never on timing.
//
// ChunkFinalizeKernel adds the per-chunk partial sums up in chunk order (also for the token-type
// gradient's chunks in embedding.cu).
//
// Kernels only: model/cuda/row_sums.cu, layernorm.cu and embedding.cu launch them, and
// tests/cuda/row_sums_emulation_test.cc runs them on CPU threads.
#pragma once

#include <cstddef>
#include <cstdint>

#include "model/cuda/common.cuh"

// Internal linkage: each translation unit that includes this gets its own copy (see
// flash_attention.cuh).
namespace lamina::cuda::row_sums {
namespace {

constexpr int kThreads = 256;     // 8 warps
constexpr int64_t kChunkRows = 128;  // rows per partial sum of a column sum

// Shared memory SumRowsOfTile needs for K sums at width V.
constexpr size_t SmemBytes(int V, int K) { return static_cast<size_t>(kThreads / 32) * K * 32 * V * sizeof(float); }

// Sums K per-element terms over rows 0..count-1 for the 32 * V columns from col0 (those below
// cols), and hands each column's sums to emit(c, k, sum): thread t emits column col0 + t.
// Warp w takes rows w, w + warps, ...; terms(i, c, t) fills t[k][0..V) with the terms of row i
// at columns c..c+V-1 (only called with c < cols; cols is a multiple of V). blockDim.x must be
// kThreads; smem holds SmemBytes(V, K) and is free again on return.
template <int V, int K, typename Terms, typename Emit>
__device__ __forceinline__ void SumRowsOfTile(int64_t count, int64_t col0, int64_t cols, const Terms& terms,
                                              const Emit& emit, float* smem) {
  constexpr int kTileCols = 32 * V;
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, warps = kThreads / 32;
  const int64_t c = col0 + V * lane;
  float acc[K][V];
#pragma unroll
  for (int k = 0; k < K; ++k)
#pragma unroll
    for (int v = 0; v < V; ++v) acc[k][v] = 0.0f;
  if (c < cols) {
#pragma unroll 4
    for (int64_t i = warp; i < count; i += warps) {
      float t[K][V];
      terms(i, c, t);
#pragma unroll
      for (int k = 0; k < K; ++k)
#pragma unroll
        for (int v = 0; v < V; ++v) acc[k][v] += t[k][v];
    }
  }
#pragma unroll
  for (int k = 0; k < K; ++k)
#pragma unroll
    for (int v = 0; v < V; ++v) smem[(warp * K + k) * kTileCols + V * lane + v] = acc[k][v];
  __syncthreads();
  const int t = threadIdx.x;
  if (t < kTileCols && col0 + t < cols) {
#pragma unroll
    for (int k = 0; k < K; ++k) {
      float sum = 0.0f;
      for (int w = 0; w < warps; ++w) sum += smem[(w * K + k) * kTileCols + t];
      emit(col0 + t, k, sum);
    }
  }
  __syncthreads();  // the next tile reuses smem
}

// Chunk `index` of kChunkRows rows out of `rows`: its index, first row and count.
struct RowChunk {
  int64_t index, first, count;
};
__device__ __forceinline__ RowChunk RowChunkAt(int64_t index, int64_t rows) {
  const int64_t first = index * kChunkRows;
  return {index, first, rows - first < kChunkRows ? rows - first : kChunkRows};
}
// The chunk of a column-partial block (blockIdx.y).
__device__ __forceinline__ RowChunk BlockRowChunk(int64_t rows) { return RowChunkAt(blockIdx.y, rows); }

// grid (ceil(cols / (32 V)), ceil(rows / kChunkRows)): partial[chunk][c] = sum of x[r, c] over
// the chunk's rows; x's rows start every `pitch` elements.
template <int V, typename T>
__global__ void __launch_bounds__(kThreads) ColumnPartialKernel(const T* x, float* partial, int64_t rows,
                                                                int64_t cols, int64_t pitch) {
  LAMINA_DYNAMIC_SMEM(smem);
  const auto [chunk, r0, count] = BlockRowChunk(rows);
  SumRowsOfTile<V, 1>(
      count, blockIdx.x * int64_t{32 * V}, cols,
      [&](int64_t i, int64_t c, float (&t)[1][V]) { LoadV<V>(x + (r0 + i) * pitch + c, t[0]); },
      [&](int64_t c, int, float sum) { partial[chunk * cols + c] = sum; }, reinterpret_cast<float*>(smem));
}

// The GELU backward fused with the bias gradient's column sums, grid as ColumnPartialKernel's
// over [rows, cols]: dpre = dout * GELU'(pre) (the tanh form's when kTanh) is written over dout, and partial[chunk][c] is the
// sum of the stored (rounded) dpre over the chunk's rows: the bias gradient of the product before
// the GELU without reading dpre again.
template <int V, bool kTanh, typename TG, typename TX>
__global__ void __launch_bounds__(kThreads) GeluBackwardColumnPartialKernel(TG* dout, const TX* pre, float* partial,
                                                                            int64_t rows, int64_t cols) {
  LAMINA_DYNAMIC_SMEM(smem);
  const auto [chunk, r0, count] = BlockRowChunk(rows);
  SumRowsOfTile<V, 1>(
      count, blockIdx.x * int64_t{32 * V}, cols,
      [&](int64_t i, int64_t c, float (&t)[1][V]) {
        const int64_t at = (r0 + i) * cols + c;
        float x[V];
        LoadV<V>(dout + at, t[0]);
        LoadV<V>(pre + at, x);
#pragma unroll
        for (int v = 0; v < V; ++v) t[0][v] = ToF(FromF<TG>(t[0][v] * GeluDerivativeOf<kTanh>(x[v])));
        StoreV<V>(dout + at, t[0]);
      },
      [&](int64_t c, int, float sum) { partial[chunk * cols + c] = sum; }, reinterpret_cast<float*>(smem));
}

// LayerNorm's parameter gradients for rows the one-element backward kernel takes (the 8-wide
// one sums its own), grid as ColumnPartialKernel's over [rows, hidden]:
// partial[chunk][c] = sum of dout * xhat and partial[chunks + chunk][c] = sum of dout over the
// chunk's rows, with xhat = (x - mean) * rstd.
template <int V, typename TG, typename TX>
__global__ void __launch_bounds__(kThreads)
    LayerNormParamPartialKernel(const TG* dout, const TX* x, const float* mean, const float* rstd, float* partial,
                                int64_t rows, int64_t hidden, int64_t chunks) {
  LAMINA_DYNAMIC_SMEM(smem);
  const auto [chunk, r0, count] = BlockRowChunk(rows);
  SumRowsOfTile<V, 2>(
      count, blockIdx.x * int64_t{32 * V}, hidden,
      [&](int64_t i, int64_t c, float (&t)[2][V]) {
        const int64_t r = r0 + i;
        float xv[V];
        LoadV<V>(dout + r * hidden + c, t[1]);
        LoadV<V>(x + r * hidden + c, xv);
        const float m = mean[r], rs = rstd[r];
#pragma unroll
        for (int v = 0; v < V; ++v) t[0][v] = t[1][v] * (xv[v] - m) * rs;
      },
      [&](int64_t c, int k, float sum) { partial[((k == 0 ? 0 : chunks) + chunk) * hidden + c] = sum; },
      reinterpret_cast<float*>(smem));
}

// out[c] += scale * (the sum over chunks of partial[chunk][c]), 32 columns a block: grid
// FinalizeBlocks(cols), smem SmemBytes(1, 1). The 8 warps split the chunks and are added in warp
// order, so the order of the additions is fixed (one thread walking all chunks of a column left
// a chain of a few hundred dependent loads per column).
__global__ void __launch_bounds__(kThreads) ChunkFinalizeKernel(const float* partial, float scale, float* out,
                                                                int64_t chunks, int64_t cols) {
  LAMINA_DYNAMIC_SMEM(smem);
  SumRowsOfTile<1, 1>(
      chunks, blockIdx.x * int64_t{32}, cols,
      [&](int64_t i, int64_t c, float (&t)[1][1]) { t[0][0] = partial[i * cols + c]; },
      [&](int64_t c, int, float sum) { out[c] += sum * scale; }, reinterpret_cast<float*>(smem));
}
inline unsigned FinalizeBlocks(int64_t cols) { return static_cast<unsigned>((cols + 31) / 32); }

// The word-embedding gradient from ids sorted stably (sorted_ids, with order[i] the token of
// sorted position i): dword[id] += scale * (sum of dout over the id's tokens). Blocks walk the
// (sorted position, column tile) pairs with a grid stride and take each run of equal ids that
// starts at their position, for their tile of 32 * V columns: a run of thousands of [MASK]
// tokens is split over 8 warps of each of hidden / (32 V) blocks, instead of walked by one
// thread per column.
template <int V, typename TG>
__global__ void __launch_bounds__(kThreads) WordRunSumKernel(const int32_t* sorted_ids, const int32_t* order,
                                                             const TG* dout, float scale, float* dword, int64_t rows,
                                                             int64_t hidden) {
  LAMINA_DYNAMIC_SMEM(smem);
  const int64_t tiles = (hidden + 32 * V - 1) / (32 * V);
  for (int64_t item = blockIdx.x; item < rows * tiles; item += gridDim.x) {
    const int64_t start = item / tiles, col0 = item % tiles * (32 * V);
    const int32_t id = sorted_ids[start];
    if (start > 0 && sorted_ids[start - 1] == id) continue;  // inside a run another block takes
    // The run's end, kThreads positions at a time: the ids are sorted, so those of a window that
    // still equal id come first in it, and their count moves the end.
    int64_t end = start + 1;
    for (;;) {
      const int64_t j = end + threadIdx.x;
      const int same = __syncthreads_count(j < rows && sorted_ids[j] == id);
      end += same;
      if (same < kThreads) break;
    }
    float* dst = dword + static_cast<int64_t>(id) * hidden;
    SumRowsOfTile<V, 1>(
        end - start, col0, hidden,
        [&](int64_t i, int64_t c, float (&t)[1][V]) {
          LoadV<V>(dout + static_cast<int64_t>(order[start + i]) * hidden + c, t[0]);
        },
        [&](int64_t c, int, float sum) { dst[c] += sum * scale; }, reinterpret_cast<float*>(smem));
  }
}

}  // namespace
}  // namespace lamina::cuda::row_sums
