// Runs CUDA kernels written for it (model/cuda/*.cuh) on CPU threads, so that their indexing,
// synchronisation and shared-memory use are tested on machines without a GPU. A test includes
// this, then the kernels' header, which the host compiler reads with:
// - one std::thread per CUDA thread of a block; the blocks run one after another in a shuffled
//   order, so a result that depends on which block runs first shows up;
// - __syncthreads, __syncthreads_count and __syncwarp as barriers, __shfl_xor_sync through a
//   per-warp exchange;
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
      exchange.emplace_back(32, 0.0f);
    }
  }
  std::vector<unsigned char> smem_storage;
  unsigned char* smem;
  unsigned char* smem_end;
  std::barrier<> block;
  std::vector<std::unique_ptr<std::barrier<>>> warp;
  std::vector<std::vector<float>> exchange;  // one slot per lane, for the shuffles
  std::atomic<int> count{0};                 // __syncthreads_count's tally
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
inline float __shfl_xor_sync(unsigned, float v, int lane_mask) {
  std::vector<float>& slots = emu::block->exchange[threadIdx.x / 32];
  const unsigned lane = threadIdx.x % 32;
  slots[lane] = v;
  __syncwarp();
  const float r = slots[lane ^ static_cast<unsigned>(lane_mask)];
  __syncwarp();
  return r;
}
inline float rsqrtf(float x) { return 1.0f / std::sqrt(x); }
inline float __expf(float x) { return std::exp(x); }
inline float __uint_as_float(uint32_t u) {
  float f;
  std::memcpy(&f, &u, sizeof f);
  return f;
}

#endif  // LAMINA_EMULATE
