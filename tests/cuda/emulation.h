// Runs CUDA kernels written for it (model/cuda/*.cuh) on CPU threads, so that their indexing,
// synchronisation and shared-memory use are tested on machines without a GPU. A test includes
// this, then the kernels' header, which the host compiler reads with:
// - one std::thread per CUDA thread of a block; the blocks run one after another in a shuffled
//   order, so a result that depends on which block runs first shows up;
// - __syncthreads, __syncthreads_count and __syncwarp as barriers, __shfl_sync,
//   __shfl_xor_sync (float and double) and __ballot_sync through a per-warp exchange (every lane
//   must call them);
// - the register-fragment primitives of model/cuda/mma.cuh (mma.sync, ldmatrix, cp.async), at
//   the end of this file;
// - dynamic shared memory (LAMINA_DYNAMIC_SMEM) filled with 0xff bytes (NaN for f32 and bf16), as
//   fresh shared memory may hold anything.
// What this cannot show: speed, races between blocks that run at the same time on a GPU, and
// nvcc's own code (the GPU parity tests in ops_parity_test.cc cover those).
// Defines LAMINA_EMULATE to 1 where the CUDA toolkit's headers are present (they declare the
// vector types and builtins the kernels use), to 0 elsewhere.
#pragma once

#if __has_include(<cuda_runtime.h>)
#define LAMINA_EMULATE 1
#else
#define LAMINA_EMULATE 0
#endif

#if LAMINA_EMULATE
#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <atomic>
#include <barrier>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <numeric>
#include <random>
#include <thread>
#include <vector>

#include "core/bf16.h"

namespace emu {

struct Index3 {
  unsigned x = 0, y = 0, z = 0;
};

struct Block {
  Block(unsigned threads, size_t smem_bytes) : smem_storage(smem_bytes + 128), block(threads) {
    smem = reinterpret_cast<unsigned char*>((reinterpret_cast<uintptr_t>(smem_storage.data()) + 127) / 128 * 128);
    smem_end = smem + smem_bytes;
    std::memset(smem, 0xff, smem_bytes);
    for (unsigned w = 0; w < (threads + 31) / 32; ++w) {
      warp.push_back(std::make_unique<std::barrier<>>(std::min(32u, threads - 32 * w)));
      exchange.emplace_back(32 * kExchangeWords, 0u);
    }
  }
  std::vector<unsigned char> smem_storage;
  unsigned char* smem;
  unsigned char* smem_end;
  std::barrier<> block;
  std::vector<std::unique_ptr<std::barrier<>>> warp;
  static constexpr unsigned kExchangeWords = 8;  // per lane: an mma's six registers, or a pointer
  std::vector<std::vector<uint32_t>> exchange;   // per warp, for the shuffles and warp-wide ops
  std::atomic<int> count{0};                     // __syncthreads_count's tally
};

inline thread_local Index3 thread_idx, block_idx, block_dim, grid_dim;
inline thread_local Block* block = nullptr;

[[noreturn]] inline void Fail(const char* what, const void* p) {
  std::fprintf(stderr, "emulated kernel: %s (pointer %p)\n", what, p);
  std::abort();
}

// Runs every block of `kernel` (grid grid_x x grid_y, `threads` per block, `smem_bytes` of
// dynamic shared memory) on CPU threads.
template <typename... Params, typename... Args>
void Launch(void (*kernel)(Params...), unsigned grid_x, unsigned grid_y, unsigned threads, size_t smem_bytes,
            Args... args) {
  std::vector<unsigned> blocks(static_cast<size_t>(grid_x) * grid_y);
  std::iota(blocks.begin(), blocks.end(), 0u);
  std::shuffle(blocks.begin(), blocks.end(), std::mt19937(grid_x * 131u + grid_y));
  for (const unsigned index : blocks) {
    Block b(threads, smem_bytes);
    std::vector<std::thread> pool;
    for (unsigned t = 0; t < threads; ++t)
      pool.emplace_back([&, t] {
        thread_idx = {t, 0, 0};
        block_idx = {index % grid_x, index / grid_x, 0};
        block_dim = {threads, 1, 1};
        grid_dim = {grid_x, grid_y, 1};
        block = &b;
        kernel(args...);
      });
    for (std::thread& th : pool) th.join();
  }
}

}  // namespace emu

#define threadIdx ::emu::thread_idx
#define blockIdx ::emu::block_idx
#define blockDim ::emu::block_dim
#define gridDim ::emu::grid_dim
#define LAMINA_DYNAMIC_SMEM(name) unsigned char* name = ::emu::block->smem
#undef __launch_bounds__
#define __launch_bounds__(...)

inline void __syncthreads() { emu::block->block.arrive_and_wait(); }
inline int __syncthreads_count(int predicate) {
  emu::Block& b = *emu::block;
  b.count.fetch_add(predicate != 0 ? 1 : 0);
  b.block.arrive_and_wait();
  const int total = b.count.load();
  b.block.arrive_and_wait();  // everyone has read the tally
  if (threadIdx.x == 0) b.count.store(0);
  b.block.arrive_and_wait();  // and it is zero again before the next call adds to it
  return total;
}
inline void __syncwarp(unsigned = 0xffffffffu) { emu::block->warp[threadIdx.x / 32]->arrive_and_wait(); }
namespace emu {
// Every lane of the warp hands in N 32-bit words; each gets all 32 lanes' words, lane-major.
template <unsigned N>
std::vector<uint32_t> WarpGather(const uint32_t (&words)[N]) {
  static_assert(N <= Block::kExchangeWords, "too many words for the exchange");
  std::vector<uint32_t>& slots = block->exchange[threadIdx.x / 32];
  const unsigned lane = threadIdx.x % 32;
  std::copy(words, words + N, slots.begin() + lane * N);
  __syncwarp();
  std::vector<uint32_t> all(slots.begin(), slots.begin() + 32 * N);
  __syncwarp();
  return all;
}
}  // namespace emu

inline uint32_t __shfl_sync(unsigned, uint32_t v, int src_lane) {
  return emu::WarpGather<1>({v})[static_cast<unsigned>(src_lane) % 32];
}
inline float __shfl_xor_sync(unsigned, float v, int lane_mask) {
  uint32_t bits;
  std::memcpy(&bits, &v, sizeof bits);
  bits = emu::WarpGather<1>({bits})[(threadIdx.x % 32) ^ static_cast<unsigned>(lane_mask)];
  float r;
  std::memcpy(&r, &bits, sizeof r);
  return r;
}
inline double __shfl_xor_sync(unsigned, double v, int lane_mask) {
  uint32_t words[2];
  std::memcpy(words, &v, sizeof words);
  const std::vector<uint32_t> all = emu::WarpGather<2>(words);
  const unsigned src = (threadIdx.x % 32) ^ static_cast<unsigned>(lane_mask);
  double r;
  std::memcpy(&r, &all[2 * src], sizeof r);
  return r;
}
inline unsigned __ballot_sync(unsigned, int predicate) {
  const std::vector<uint32_t> all = emu::WarpGather<1>({predicate != 0 ? 1u : 0u});
  unsigned ballot = 0;
  for (unsigned lane = 0; lane < 32; ++lane) ballot |= all[lane] << lane;
  return ballot;
}
inline float rsqrtf(float x) { return 1.0f / std::sqrt(x); }
inline float __expf(float x) { return std::exp(x); }
inline float __uint_as_float(uint32_t u) {
  float f;
  std::memcpy(&f, &u, sizeof f);
  return f;
}

// The fragment primitives of model/cuda/mma.cuh, with the PTX semantics documented there: the
// warp's lanes swap their registers (or addresses) through the exchange and each computes its own
// share. ldmatrix and cp.async check 16-byte alignment and shared-memory bounds. cp.async copies
// land only when WaitAsync lets their group complete, so a read before the wait sees stale data.
namespace lamina::cuda {

inline float EmuBf16(uint32_t reg, unsigned half) { return Bf16BitsToFloat(static_cast<uint16_t>(reg >> (16 * half))); }

inline void MmaBf16(float (&d)[4], const uint32_t (&a)[4], uint32_t b0, uint32_t b1) {
  const uint32_t mine[6] = {a[0], a[1], a[2], a[3], b0, b1};
  const std::vector<uint32_t> all = emu::WarpGather<6>(mine);
  float A[16][16], B[16][8];
  for (unsigned lane = 0; lane < 32; ++lane) {
    const unsigned g = lane / 4, t = lane % 4;
    const uint32_t* r = &all[lane * 6];
    for (unsigned h = 0; h < 2; ++h) {
      A[g][2 * t + h] = EmuBf16(r[0], h);
      A[g + 8][2 * t + h] = EmuBf16(r[1], h);
      A[g][2 * t + 8 + h] = EmuBf16(r[2], h);
      A[g + 8][2 * t + 8 + h] = EmuBf16(r[3], h);
      B[2 * t + h][g] = EmuBf16(r[4], h);
      B[2 * t + 8 + h][g] = EmuBf16(r[5], h);
    }
  }
  const unsigned lane = threadIdx.x % 32, g = lane / 4, t = lane % 4;
  for (unsigned c = 0; c < 4; ++c) {
    const unsigned row = g + 8 * (c / 2), col = 2 * t + c % 2;
    float acc = d[c];
    for (unsigned k = 0; k < 16; ++k) acc += A[row][k] * B[k][col];
    d[c] = acc;
  }
}

namespace emu_detail {
inline void CheckShared16(const void* p, const char* what) {
  const unsigned char* b = static_cast<const unsigned char*>(p);
  if (reinterpret_cast<uintptr_t>(p) % 16 != 0) emu::Fail(what, p);
  if (b < emu::block->smem || b + 16 > emu::block->smem_end) emu::Fail(what, p);
}
// Register j of this lane for ldmatrix.x4 from the rows the warp's lanes point at.
inline void LdMatrix(uint32_t (&r)[4], const uint16_t* row, bool trans) {
  CheckShared16(row, "ldmatrix row not 16-byte aligned or outside shared memory");
  uint32_t mine[2];
  const uint64_t at = reinterpret_cast<uintptr_t>(row);
  mine[0] = static_cast<uint32_t>(at), mine[1] = static_cast<uint32_t>(at >> 32);
  const std::vector<uint32_t> all = emu::WarpGather<2>(mine);
  auto row_of = [&](unsigned lane) {
    return reinterpret_cast<const uint16_t*>(static_cast<uintptr_t>(all[2 * lane] | uint64_t{all[2 * lane + 1]} << 32));
  };
  const unsigned lane = threadIdx.x % 32, g = lane / 4, t = lane % 4;
  for (unsigned j = 0; j < 4; ++j) {
    const uint16_t lo = trans ? row_of(8 * j + 2 * t)[g] : row_of(8 * j + g)[2 * t];
    const uint16_t hi = trans ? row_of(8 * j + 2 * t + 1)[g] : row_of(8 * j + g)[2 * t + 1];
    r[j] = lo | static_cast<uint32_t>(hi) << 16;
  }
}
struct PendingCopy {
  uint16_t* dst;
  const uint16_t* src;
  bool valid;
};
inline thread_local std::vector<std::vector<PendingCopy>> committed;  // oldest group first
inline thread_local std::vector<PendingCopy> open_group;
}  // namespace emu_detail

inline void LdMatrixX4(uint32_t (&r)[4], const uint16_t* row) { emu_detail::LdMatrix(r, row, false); }
inline void LdMatrixX4Trans(uint32_t (&r)[4], const uint16_t* row) { emu_detail::LdMatrix(r, row, true); }
inline void CopyAsync16(uint16_t* dst, const uint16_t* src, bool valid) {
  emu_detail::CheckShared16(dst, "cp.async destination not 16-byte aligned or outside shared memory");
  if (reinterpret_cast<uintptr_t>(src) % 16 != 0) emu::Fail("cp.async source not 16-byte aligned", src);
  emu_detail::open_group.push_back({dst, src, valid});
}
inline void CommitAsync() {
  emu_detail::committed.push_back(std::move(emu_detail::open_group));
  emu_detail::open_group.clear();
}
template <int kPending>
void WaitAsync() {
  auto& groups = emu_detail::committed;
  while (groups.size() > static_cast<size_t>(kPending)) {
    for (const emu_detail::PendingCopy& c : groups.front()) {
      if (c.valid)
        std::memcpy(c.dst, c.src, 16);
      else
        std::memset(c.dst, 0, 16);
    }
    groups.erase(groups.begin());
  }
}

}  // namespace lamina::cuda

#endif  // LAMINA_EMULATE
