// Device helpers shared by the kernels: bf16/f32 loads and stores, dtype dispatch, reductions.
#pragma once

#include <cstdint>
#include <initializer_list>

#include "core/bf16.h"
#include "core/dtype.h"
#include "core/philox.h"
#include "model/cuda/common_host.h"
#include "model/cuda/cuda_check.h"

// A kernel's dynamic shared memory. The emulation tests (tests/cuda/emulation.h) run kernels that
// take their shared memory this way on CPU threads, with their own definition of it.
#if defined(__CUDACC__)
#define LAMINA_DYNAMIC_SMEM(name) extern __shared__ __align__(128) unsigned char name[]
#endif

#if defined(__CUDACC__)
namespace lamina::cuda {
// kernel<<<grid, threads, smem, stream>>>(args...), first raising the kernel's dynamic shared
// memory limit when smem is above the default 48 KiB (a per-device attribute, so set at each such
// launch).
template <typename... Params, typename... Args>
void LaunchWithSmem(void (*kernel)(Params...), dim3 grid, unsigned threads, size_t smem, cudaStream_t stream,
                    Args... args) {
  if (smem > 48 * 1024)
    LAMINA_CUDA_CHECK(
        cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, static_cast<int>(smem)));
  kernel<<<grid, threads, smem, stream>>>(args...);
  LAMINA_CUDA_CHECK_LAUNCH();
}
}  // namespace lamina::cuda
#endif

// For the launchers' own preconditions (programming errors).
#define LAMINA_KERNEL_CHECK(cond)                                                \
  do {                                                                           \
    if (!(cond)) ::lamina::cuda::LauncherCheckFailed(#cond, __FILE__, __LINE__); \
  } while (0)

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

// Runs the body with T bound to the element type of `dtype` (f32 or bf16).
#define LAMINA_DISPATCH_FLOAT(dtype, T, ...)             \
  switch (dtype) {                                       \
    case ::lamina::DType::kF32: {                        \
      using T = float;                                   \
      __VA_ARGS__;                                       \
      break;                                             \
    }                                                    \
    case ::lamina::DType::kBF16: {                       \
      using T = ::lamina::cuda::bf16_t;                  \
      __VA_ARGS__;                                       \
      break;                                             \
    }                                                    \
    default:                                             \
      ::lamina::cuda::UnsupportedDType(dtype, __func__); \
  }

// Eight consecutive elements as fp32, moved with 16-byte accesses (one for bf16, two for f32).
__device__ __forceinline__ void Load8(const float* p, float v[8]) {
  const float4 a = reinterpret_cast<const float4*>(p)[0], b = reinterpret_cast<const float4*>(p)[1];
  v[0] = a.x, v[1] = a.y, v[2] = a.z, v[3] = a.w, v[4] = b.x, v[5] = b.y, v[6] = b.z, v[7] = b.w;
}
__device__ __forceinline__ void Unpack8(const uint4& u, float v[8]) {
  const uint32_t w[4] = {u.x, u.y, u.z, u.w};
#pragma unroll
  for (int k = 0; k < 4; ++k) {  // little-endian: the lower half is the earlier element
    v[2 * k] = __uint_as_float(w[k] << 16);
    v[2 * k + 1] = __uint_as_float(w[k] & 0xffff0000u);
  }
}
__device__ __forceinline__ void Load8(const bf16_t* p, float v[8]) { Unpack8(*reinterpret_cast<const uint4*>(p), v); }
// Eight consecutive elements held as they are stored (bf16 packed, 4 registers instead of 8),
// for kernels that keep a row across passes: Load reads them, Get converts them to fp32.
template <typename T>
struct Held8 {
  float v[8];
  __device__ __forceinline__ void Load(const float* p) { Load8(p, v); }
  __device__ __forceinline__ void Get(float out[8]) const {
#pragma unroll
    for (int k = 0; k < 8; ++k) out[k] = v[k];
  }
};
template <>
struct Held8<bf16_t> {
  uint4 u;
  __device__ __forceinline__ void Load(const bf16_t* p) { u = *reinterpret_cast<const uint4*>(p); }
  __device__ __forceinline__ void Get(float out[8]) const { Unpack8(u, out); }
};
__device__ __forceinline__ void Store8(float* p, const float v[8]) {
  reinterpret_cast<float4*>(p)[0] = make_float4(v[0], v[1], v[2], v[3]);
  reinterpret_cast<float4*>(p)[1] = make_float4(v[4], v[5], v[6], v[7]);
}
__device__ __forceinline__ void Store8(bf16_t* p, const float v[8]) {
  uint32_t w[4];
#pragma unroll
  for (int k = 0; k < 4; ++k)
    w[k] = static_cast<uint32_t>(FloatToBf16Bits(v[2 * k])) | static_cast<uint32_t>(FloatToBf16Bits(v[2 * k + 1]))
                                                                  << 16;
  *reinterpret_cast<uint4*>(p) = make_uint4(w[0], w[1], w[2], w[3]);
}

// Two consecutive elements as fp32, in one access (4 bytes for bf16, 8 for f32).
__device__ __forceinline__ void Load2(const float* p, float v[2]) {
  const float2 a = *reinterpret_cast<const float2*>(p);
  v[0] = a.x, v[1] = a.y;
}
__device__ __forceinline__ void Load2(const bf16_t* p, float v[2]) {
  const uint32_t w = *reinterpret_cast<const uint32_t*>(p);
  v[0] = __uint_as_float(w << 16);
  v[1] = __uint_as_float(w & 0xffff0000u);
}

// V (8, 2 or 1) consecutive elements as fp32, in as few accesses as the width allows.
template <int V, typename T>
__device__ __forceinline__ void LoadV(const T* p, float (&v)[V]) {
  if constexpr (V == 8) {
    Load8(p, v);
  } else if constexpr (V == 2) {
    Load2(p, v);
  } else {
    static_assert(V == 1, "widths are 8, 2 or 1");
    v[0] = ToF(*p);
  }
}

// Stores V (8, 2 or 1) consecutive elements, as LoadV reads them.
template <int V, typename T>
__device__ __forceinline__ void StoreV(T* p, const float (&v)[V]) {
  if constexpr (V == 8) {
    Store8(p, v);
  } else if constexpr (V == 2 && sizeof(T) == 4) {
    *reinterpret_cast<float2*>(p) = make_float2(v[0], v[1]);
  } else if constexpr (V == 2) {
    *reinterpret_cast<uint32_t*>(p) =
        static_cast<uint32_t>(FloatToBf16Bits(v[0])) | static_cast<uint32_t>(FloatToBf16Bits(v[1])) << 16;
  } else {
    static_assert(V == 1, "widths are 8, 2 or 1");
    *p = FromF<T>(v[0]);
  }
}

// GELU in the erf form (as the reference, model/cpu/gelu.h) and its derivative.
__device__ __forceinline__ float GeluValue(float x) { return 0.5f * x * (1.0f + erff(x * 0.70710678118654752f)); }
__device__ __forceinline__ float GeluDerivative(float x) {
  constexpr float kInvSqrt2Pi = 0.3989422804014327f;
  return 0.5f * (1.0f + erff(x * 0.70710678118654752f)) + x * __expf(-0.5f * x * x) * kInvSqrt2Pi;
}

// GELU's tanh approximation (model/cpu/gelu.h) and its derivative.
__device__ __forceinline__ float GeluTanhValue(float x) {
  return 0.5f * x * (1.0f + tanhf(0.7978845608028654f * (x + 0.044715f * x * x * x)));
}
__device__ __forceinline__ float GeluTanhDerivative(float x) {
  const float t = tanhf(0.7978845608028654f * (x + 0.044715f * x * x * x));
  return 0.5f * (1.0f + t) + 0.5f * x * (1.0f - t * t) * 0.7978845608028654f * (1.0f + 3.0f * 0.044715f * x * x);
}
template <bool kTanh>
__device__ __forceinline__ float GeluDerivativeOf(float x) {
  if constexpr (kTanh) return GeluTanhDerivative(x);
  else return GeluDerivative(x);
}

// Elements c..c+3 of a row of n as fp32. V = 4: one access (16 bytes of f32, 8 of bf16), for rows
// aligned to it with c + 4 <= n; V = 1: one access each, `fill` past n.
template <int V, typename T>
__device__ __forceinline__ void Load4(const T* row, int64_t c, int64_t n, float fill, float (&v)[4]) {
  if constexpr (V == 4 && sizeof(T) == 4) {
    const float4 a = *reinterpret_cast<const float4*>(row + c);
    v[0] = a.x, v[1] = a.y, v[2] = a.z, v[3] = a.w;
  } else if constexpr (V == 4) {
    const uint2 u = *reinterpret_cast<const uint2*>(row + c);
    v[0] = __uint_as_float(u.x << 16), v[1] = __uint_as_float(u.x & 0xffff0000u);
    v[2] = __uint_as_float(u.y << 16), v[3] = __uint_as_float(u.y & 0xffff0000u);
  } else {
    static_assert(V == 1, "widths are 4 or 1");
#pragma unroll
    for (int k = 0; k < 4; ++k) v[k] = c + k < n ? ToF(row[c + k]) : fill;
  }
}
// Stores elements c..c+3 of a row of n (those below n when V = 1), as Load4 reads them.
template <int V, typename T>
__device__ __forceinline__ void Store4(T* row, int64_t c, int64_t n, const float (&v)[4]) {
  if constexpr (V == 4 && sizeof(T) == 4) {
    *reinterpret_cast<float4*>(row + c) = make_float4(v[0], v[1], v[2], v[3]);
  } else if constexpr (V == 4) {
    *reinterpret_cast<uint2*>(row + c) =
        make_uint2(static_cast<uint32_t>(FloatToBf16Bits(v[0])) | static_cast<uint32_t>(FloatToBf16Bits(v[1])) << 16,
                   static_cast<uint32_t>(FloatToBf16Bits(v[2])) | static_cast<uint32_t>(FloatToBf16Bits(v[3])) << 16);
  } else {
    static_assert(V == 1, "widths are 4 or 1");
#pragma unroll
    for (int k = 0; k < 4; ++k)
      if (c + k < n) row[c + k] = FromF<T>(v[k]);
  }
}

// The widest V in {8, 2, 1} for which rows of `cols` elements of `elem_bytes` each, one every
// `pitch` elements from `p`, can be read V elements per access: V divides cols and pitch, and p
// is aligned to the access.
inline int VectorWidth(const void* p, int64_t cols, int64_t pitch, size_t elem_bytes) {
  const uintptr_t at = reinterpret_cast<uintptr_t>(p);
  if (cols % 8 == 0 && pitch % 8 == 0 && at % 16 == 0) return 8;
  if (cols % 2 == 0 && pitch % 2 == 0 && at % (2 * elem_bytes) == 0) return 2;
  return 1;
}

// Runs the body with the compile-time constant V bound to `width` (8, 2 or 1).
#define LAMINA_DISPATCH_WIDTH(width, V, ...) \
  switch (width) {                           \
    case 8: {                                \
      constexpr int V = 8;                   \
      __VA_ARGS__;                           \
      break;                                 \
    }                                        \
    case 2: {                                \
      constexpr int V = 2;                   \
      __VA_ARGS__;                           \
      break;                                 \
    }                                        \
    default: {                               \
      constexpr int V = 1;                   \
      __VA_ARGS__;                           \
    }                                        \
  }

inline int64_t CeilDiv(int64_t a, int64_t b) { return (a + b - 1) / b; }

// Grid size for a grid-stride loop over n elements.
inline unsigned GridFor(int64_t n, int threads) {
  const int64_t blocks = CeilDiv(n, threads);
  return static_cast<unsigned>(blocks < 1 ? 1 : (blocks > 65535 * 16 ? 65535 * 16 : blocks));
}

// 2^x by the hardware's approximate exp2 (ex2.approx.ftz: about 2 ulp; results below 2^-126, and
// 2^-inf, are 0), without the denormal handling that exp2f adds around it. On the host (the
// emulation tests) it is exp2f.
__device__ __forceinline__ float Exp2Approx(float x) {
#if defined(__CUDA_ARCH__)
  float y;
  asm("ex2.approx.ftz.f32 %0, %1;" : "=f"(y) : "f"(x));
  return y;
#else
  return exp2f(x);
#endif
}

// Inverted dropout by stream index: x / (1 - p) when element i is kept, else 0, with
// DropoutKeep's decisions bit for bit; p = 0 passes x through. Built on the host, passed to the
// kernels by value (the dropout kernel, and the LayerNorm kernels for the branch they add).
struct ElementDropout {
  RngContext rng;
  float p;
  float scale;         // 1 / (1 - p)
  uint32_t threshold;  // KeepThreshold(p)
  ElementDropout(RngContext r, float prob)
      : rng(r), p(prob), scale(1.0f / (1.0f - prob)), threshold(KeepThreshold(prob)) {}

  __device__ float operator()(float x, int64_t i) const {
    return p == 0.0f || DropoutKeep(rng, static_cast<uint64_t>(i), p) ? x * scale : 0.0f;
  }
  // Elements i..i+7, from two Philox blocks (four when the stream offset is not a multiple of 4)
  // instead of eight.
  __device__ void Apply8(int64_t i, float (&v)[8]) const {
    if (p == 0.0f) return;
    const uint32_t keep = DropoutKeepBits4(rng, static_cast<uint64_t>(i), threshold) |
                          DropoutKeepBits4(rng, static_cast<uint64_t>(i) + 4, threshold) << 4;
#pragma unroll
    for (int k = 0; k < 8; ++k) v[k] = (keep >> k) & 1u ? v[k] * scale : 0.0f;
  }
};

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

}  // namespace lamina::cuda
