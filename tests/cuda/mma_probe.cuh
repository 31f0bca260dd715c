// One warp running every primitive of model/cuda/mma.cuh on small fixed operands, so that their
// fragment layouts are checked on their own: against a plain product on the host, both in the
// emulation (tests/cuda/emulation.h) and on a GPU (mma_probe.cu). If the flash attention parity
// fails on a GPU while its emulation passes, this says whether the primitives are the cause.
//   a [16, 32], bt [16, 32] (B^T: a row per n), b [32, 16] (a row per k), bf16 row-major;
//   abt = a bt^T, ab = a b, chain = bf16(abt) b[0:16, :] (ToA), each f32 [16, 16].
#pragma once

#include <cstddef>
#include <cstdint>

#include "model/cuda/common.cuh"
#include "model/cuda/mma.cuh"

namespace lamina::cuda::probe {
namespace {

constexpr int kLd = 32 + 8;  // shared tiles: 16-byte aligned rows, as the flash kernels pad them

constexpr size_t MmaProbeSmemBytes() { return static_cast<size_t>(16 + 16 + 32) * kLd * sizeof(bf16_t); }

// rows x cols (a multiple of 8) from global into a shared tile with row stride kLd.
__device__ void CopyIn(const bf16_t* src, int rows, int cols, bf16_t* tile) {
  for (int i = static_cast<int>(threadIdx.x); i < rows * cols / 8; i += 32)
    CopyAsync16(tile + (i / (cols / 8)) * kLd + (i % (cols / 8)) * 8, src + i * 8, true);
}

// C tiles of a [16, 16] result into row-major f32.
__device__ void StoreC(const float (&c)[2][4], float* out) {
  const int lane = static_cast<int>(threadIdx.x & 31), g = lane >> 2, t = lane & 3;
  for (int nt = 0; nt < 2; ++nt)
    for (int e = 0; e < 4; ++e) out[(g + 8 * (e >> 1)) * 16 + 8 * nt + 2 * t + (e & 1)] = c[nt][e];
}

// One block of one warp.
__global__ void MmaProbeKernel(const bf16_t* a, const bf16_t* bt, const bf16_t* b, float* abt, float* ab,
                               float* chain) {
  LAMINA_DYNAMIC_SMEM(smem);
  bf16_t* sa = reinterpret_cast<bf16_t*>(smem);
  bf16_t* sbt = sa + 16 * kLd;
  bf16_t* sb = sbt + 16 * kLd;
  CopyIn(a, 16, 32, sa);
  CopyIn(bt, 16, 32, sbt);
  CopyIn(b, 32, 16, sb);
  CommitAsync();
  WaitAsync<0>();
  __syncwarp();
  uint32_t fa[2][4];
  LoadA(fa[0], sa, kLd, 0, 0);
  LoadA(fa[1], sa, kLd, 0, 16);
  float c_abt[2][4] = {}, c_ab[2][4] = {}, c_chain[2][4] = {};
  MmaABt<2, 2>(c_abt, fa, sbt, kLd);
  MmaAB<2, 2>(c_ab, fa, sb, kLd);
  uint32_t fc[1][4];
  ToA<2>(c_abt, fc);
  MmaAB<1, 2>(c_chain, fc, sb, kLd);
  StoreC(c_abt, abt);
  StoreC(c_ab, ab);
  StoreC(c_chain, chain);
}

}  // namespace
}  // namespace lamina::cuda::probe
