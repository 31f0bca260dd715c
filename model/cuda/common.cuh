// Device helpers shared by the kernels: bf16/f32 loads and stores, dtype dispatch, reductions.
#pragma once

#include <cstdint>

#include "core/bf16.h"
#include "core/dtype.h"
#include "model/cuda/common_host.h"
#include "model/cuda/cuda_check.h"

namespace lamina::cuda {

// bf16 is carried as its raw bits (uint16_t) and converted with core/bf16.h, so that rounding is
// bit-identical to the host's.
using bf16_t = uint16_t;

__device__ __forceinline__ float ToF(float x) { return x; }
__device__ __forceinline__ float ToF(bf16_t x) { return __uint_as_float(static_cast<uint32_t>(x) << 16); }

template <typename T>
__device__ __forceinline__ T FromF(float x);
template <>
__device__ __forceinline__ float FromF<float>(float x) {
  return x;
}
template <>
__device__ __forceinline__ bf16_t FromF<bf16_t>(float x) {
  return FloatToBf16Bits(x);
}


}  // namespace lamina::cuda

// For the launchers' own preconditions (programming errors).
#define LAMINA_KERNEL_CHECK(cond) \
  do {                            \
    if (!(cond)) ::lamina::cuda::LauncherCheckFailed(#cond, __FILE__, __LINE__); \
  } while (0)

namespace lamina::cuda {

// Runs the body with T bound to the element type of `dtype` (f32 or bf16).
#define LAMINA_DISPATCH_FLOAT(dtype, T, ...)                                  \
  switch (dtype) {                                                            \
    case ::lamina::DType::kF32: {                                             \
      using T = float;                                                        \
      __VA_ARGS__;                                                            \
      break;                                                                  \
    }                                                                         \
    case ::lamina::DType::kBF16: {                                            \
      using T = ::lamina::cuda::bf16_t;                                       \
      __VA_ARGS__;                                                            \
      break;                                                                  \
    }                                                                         \
    default:                                                                  \
      ::lamina::cuda::UnsupportedDType(dtype, __func__);                      \
  }

inline int64_t CeilDiv(int64_t a, int64_t b) { return (a + b - 1) / b; }

// Grid size for a grid-stride loop over n elements.
inline unsigned GridFor(int64_t n, int threads) {
  const int64_t blocks = CeilDiv(n, threads);
  return static_cast<unsigned>(blocks < 1 ? 1 : (blocks > 65535 * 16 ? 65535 * 16 : blocks));
}

__device__ __forceinline__ float WarpSum(float v) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  return v;
}

__device__ __forceinline__ float WarpMax(float v) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
  return v;
}

// Sum over the block in a fixed order (deterministic); every thread gets the result. `scratch`
// holds 32 floats; blockDim.x must be a multiple of 32.
__device__ __forceinline__ float BlockSum(float v, float* scratch) {
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, warps = blockDim.x >> 5;
  v = WarpSum(v);
  __syncthreads();  // scratch may still be read by a previous call
  if (lane == 0) scratch[warp] = v;
  __syncthreads();
  v = lane < warps ? scratch[lane] : 0.0f;
  return WarpSum(v);
}

__device__ __forceinline__ float BlockMax(float v, float* scratch) {
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, warps = blockDim.x >> 5;
  v = WarpMax(v);
  __syncthreads();
  if (lane == 0) scratch[warp] = v;
  __syncthreads();
  v = lane < warps ? scratch[lane] : -INFINITY;
  return WarpMax(v);
}

}  // namespace lamina::cuda
