// Warp-level tensor-core products on register fragments (PTX mma.sync m16n8k16, bf16 in, f32
// accumulate), the ldmatrix loads that fill them from shared memory, and cp.async copies from
// global to shared memory. Kernels that keep a tile in registers across several products (the
// fused attention) use these instead of WMMA, whose fragment layout is opaque.
//
// Fragment layout (PTX ISA, "Matrix Fragments for mma.m16n8k16 with floating point type"), for
// lane = 4 g + t (g = 0..7, t = 0..3); each 32-bit register holds two bf16, the lower half the
// one with the lower column (or k) index:
//   A [16 x 16] (row x k):  a0 = (g, 2t..2t+1)  a1 = (g+8, 2t..)  a2 = (g, 2t+8..)  a3 = (g+8, 2t+8..)
//   B [16 x 8]  (k x n):    b0 = (2t..2t+1, g)  b1 = (2t+8.., g)
//   C [16 x 8]  (row x n):  c0 = (g, 2t)  c1 = (g, 2t+1)  c2 = (g+8, 2t)  c3 = (g+8, 2t+1)
// Two C tiles side by side hold exactly the elements of one A fragment (ToA below), so a product's
// result feeds the next product without leaving the registers.
//
// The device versions are PTX; tests/cuda/emulation.h defines the same functions for the host
// (MmaBf16, LdMatrixX4, LdMatrixX4Trans, CopyAsync16, CommitAsync, WaitAsync) with these
// semantics, so kernels built on them run in the emulation tests. tests/cuda/mma_probe_test.cc
// checks both against plain products on the host, the device versions where a GPU is present.
#pragma once

#include <cstdint>

#include "model/cuda/common.cuh"

namespace lamina::cuda {

#if defined(__CUDACC__)

// d += a b for one A fragment, one B fragment and one C tile.
__device__ __forceinline__ void MmaBf16(float (&d)[4], const uint32_t (&a)[4], uint32_t b0, uint32_t b1) {
  asm volatile(
      "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0, %1, %2, %3}, {%4, %5, %6, %7}, {%8, %9}, "
      "{%0, %1, %2, %3};\n"
      : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}

__device__ __forceinline__ uint32_t SharedAddress(const void* p) {
  return static_cast<uint32_t>(__cvta_generic_to_shared(p));
}

// Four 8x8 bf16 matrices; lane 8 j + r gives the address of row r of matrix j (16 bytes, aligned),
// and register j of lane 4 g + t receives elements (g, 2t..2t+1) of matrix j.
__device__ __forceinline__ void LdMatrixX4(uint32_t (&r)[4], const bf16_t* row) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0, %1, %2, %3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(SharedAddress(row)));
}
// As LdMatrixX4, transposed: register j of lane 4 g + t receives elements (2t, g) and (2t+1, g).
__device__ __forceinline__ void LdMatrixX4Trans(uint32_t (&r)[4], const bf16_t* row) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0, %1, %2, %3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(SharedAddress(row)));
}

// Copies 16 bytes from global `src` to shared `dst` without passing through registers; with
// valid = false it writes 16 zero bytes and reads nothing (src must still be a valid address).
// The copies become visible after CommitAsync and WaitAsync, then a barrier for other threads.
__device__ __forceinline__ void CopyAsync16(bf16_t* dst, const bf16_t* src, bool valid) {
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(SharedAddress(dst)), "l"(src),
               "r"(valid ? 16 : 0));
}
// Closes the group of this thread's copies issued since the last commit.
__device__ __forceinline__ void CommitAsync() { asm volatile("cp.async.commit_group;\n" ::); }
// Waits until at most `kPending` of this thread's committed groups are still in flight.
template <int kPending>
__device__ __forceinline__ void WaitAsync() {
  asm volatile("cp.async.wait_group %0;\n" ::"n"(kPending));
}

#endif  // __CUDACC__

// Two floats as the two bf16 of a fragment register (a the lower half), rounded to nearest even.
__device__ __forceinline__ uint32_t PackBf16x2(float a, float b) {
  return static_cast<uint32_t>(FloatToBf16Bits(a)) | static_cast<uint32_t>(FloatToBf16Bits(b)) << 16;
}

// The row and column, within a 16 x 16 block, of the 8-element row that a lane hands to an
// ldmatrix.x4. Quarter order A: (rows 0-7, cols 0-7), (8-15, 0-7), (0-7, 8-15), (8-15, 8-15),
// the order of an A fragment's registers. Quarter order B: (0-7, 0-7), (0-7, 8-15), (8-15, 0-7),
// (8-15, 8-15).
struct LaneRow {
  int row, col;
};
__device__ __forceinline__ LaneRow QuarterOrderA(int lane) { return {(lane & 7) | (lane & 8), (lane & 16) >> 1}; }
__device__ __forceinline__ LaneRow QuarterOrderB(int lane) { return {(lane & 7) | ((lane & 16) >> 1), lane & 8}; }

// The A fragment of the 16 x 16 block at (row0, col0) of a row-major bf16 tile with row stride ld.
__device__ __forceinline__ void LoadA(uint32_t (&a)[4], const bf16_t* tile, int ld, int row0, int col0) {
  const LaneRow at = QuarterOrderA(static_cast<int>(threadIdx.x & 31));
  LdMatrixX4(a, tile + (row0 + at.row) * ld + col0 + at.col);
}

// One k-step of acc[mt] += A_mt B for MT row tiles: A_mt's 16 x 16 fragment of this k-step is in
// registers, B's 16 x (8 NT) slice of it is read from a bf16 tile with row stride ld, stored [n][k]
// (kBStoredNK: B^T's rows, e.g. the keys of Q K^T) or [k][n] (e.g. the values of P V, loaded
// transposed). B fragments come two n-tiles per ldmatrix and serve all MT row tiles: a warp with
// two row tiles reads half the shared memory per product that a warp with one does.
template <bool kBStoredNK, int MT, int NT>
__device__ __forceinline__ void MmaKStep(float (&acc)[MT][NT][4], const uint32_t (&a)[MT][4], const bf16_t* b, int ld,
                                         int k) {
  static_assert(NT % 2 == 0, "B fragments are loaded two n-tiles at a time");
  const int lane = static_cast<int>(threadIdx.x & 31);
  const LaneRow at = kBStoredNK ? QuarterOrderB(lane) : QuarterOrderA(lane);
#pragma unroll
  for (int n = 0; n < NT; n += 2) {
    uint32_t f[4];  // n-tile n: f[0], f[1]; n-tile n + 1: f[2], f[3]
    if constexpr (kBStoredNK)
      LdMatrixX4(f, b + (n * 8 + at.row) * ld + k * 16 + at.col);
    else
      LdMatrixX4Trans(f, b + (k * 16 + at.row) * ld + n * 8 + at.col);
#pragma unroll
    for (int mt = 0; mt < MT; ++mt) {
      MmaBf16(acc[mt][n], a[mt], f[0], f[1]);
      MmaBf16(acc[mt][n + 1], a[mt], f[2], f[3]);
    }
  }
}

// acc[mt][16 x 8 NT] += A_mt B for MT row tiles, A_mt as KS fragments (16 x 16 KS) in registers.
template <bool kBStoredNK, int MT, int KS, int NT>
__device__ __forceinline__ void MmaAccumulate(float (&acc)[MT][NT][4], const uint32_t (&a)[MT][KS][4],
                                              const bf16_t* b, int ld) {
#pragma unroll
  for (int k = 0; k < KS; ++k) {
    uint32_t ak[MT][4];
#pragma unroll
    for (int mt = 0; mt < MT; ++mt)
#pragma unroll
      for (int r = 0; r < 4; ++r) ak[mt][r] = a[mt][k][r];
    MmaKStep<kBStoredNK>(acc, ak, b, ld, k);
  }
}
// acc[mt] += A_mt B^T, B stored [n][k] (NT * 8 rows of 16 KS).
template <int MT, int KS, int NT>
__device__ __forceinline__ void MmaABt(float (&acc)[MT][NT][4], const uint32_t (&a)[MT][KS][4], const bf16_t* b,
                                       int ld) {
  MmaAccumulate<true>(acc, a, b, ld);
}
// acc[mt] += A_mt B, B stored [k][n] (16 KS rows of NT * 8).
template <int MT, int KS, int NT>
__device__ __forceinline__ void MmaAB(float (&acc)[MT][NT][4], const uint32_t (&a)[MT][KS][4], const bf16_t* b,
                                      int ld) {
  MmaAccumulate<false>(acc, a, b, ld);
}
// The same for one row tile.
template <int KS, int NT>
__device__ __forceinline__ void MmaABt(float (&acc)[NT][4], const uint32_t (&a)[KS][4], const bf16_t* b, int ld) {
  MmaABt(reinterpret_cast<float(&)[1][NT][4]>(acc), reinterpret_cast<const uint32_t(&)[1][KS][4]>(a), b, ld);
}
template <int KS, int NT>
__device__ __forceinline__ void MmaAB(float (&acc)[NT][4], const uint32_t (&a)[KS][4], const bf16_t* b, int ld) {
  MmaAB(reinterpret_cast<float(&)[1][NT][4]>(acc), reinterpret_cast<const uint32_t(&)[1][KS][4]>(a), b, ld);
}
// The C tiles of a 16 x 8 NT f32 result as the NT / 2 A fragments of the same matrix in bf16.
template <int NT>
__device__ __forceinline__ void ToA(const float (&c)[NT][4], uint32_t (&a)[NT / 2][4]) {
#pragma unroll
  for (int k = 0; k < NT / 2; ++k) {
    a[k][0] = PackBf16x2(c[2 * k][0], c[2 * k][1]);
    a[k][1] = PackBf16x2(c[2 * k][2], c[2 * k][3]);
    a[k][2] = PackBf16x2(c[2 * k + 1][0], c[2 * k + 1][1]);
    a[k][3] = PackBf16x2(c[2 * k + 1][2], c[2 * k + 1][3]);
  }
}

}  // namespace lamina::cuda
