// Softmax cross-entropy and argmax, one block per row. Cross-entropy reads the logits in their own
// dtype and keeps only per-thread running (max, sum of exp) pairs in fp32 (an online softmax), so
// no fp32 copy of the logits is ever materialised; the gradient is written in place if asked.
#include "model/cuda/common.cuh"
#include "model/cuda/kernels.h"

namespace lamina::cuda {
namespace {

constexpr int kThreads = 512;

// Merges running (max, sum of exp(x - max)) pairs.
__device__ __forceinline__ void MergeOnline(float& m, float& s, float m2, float s2) {
  const float nm = fmaxf(m, m2);
  if (nm == -INFINITY) return;
  s = s * __expf(m - nm) + s2 * __expf(m2 - nm);
  m = nm;
}

// Merges the running pairs across the warp; every lane gets the warp's pair.
__device__ __forceinline__ void WarpMergeOnline(float& m, float& s) {
  for (int o = 16; o > 0; o >>= 1) {
    const float m2 = __shfl_xor_sync(0xffffffffu, m, o), s2 = __shfl_xor_sync(0xffffffffu, s, o);
    MergeOnline(m, s, m2, s2);
  }
}

template <typename TL, typename TD>
__global__ void CrossEntropyKernel(const TL* logits, const int32_t* targets, float grad_scale, float* losses,
                                   TD* dlogits, int64_t vocab, int64_t pitch) {
  __shared__ float scratch_m[32], scratch_s[32];
  __shared__ float shared_max, shared_log_sum;
  const int64_t row = blockIdx.x;
  const int32_t target = targets[row];
  const TL* z = logits + row * pitch;
  TD* dz = dlogits == nullptr ? nullptr : dlogits + row * pitch;
  if (target < 0) {
    if (threadIdx.x == 0) losses[row] = 0.0f;
    if (dz != nullptr)
      for (int64_t c = threadIdx.x; c < vocab; c += blockDim.x) dz[c] = FromF<TD>(0.0f);
    return;
  }
  float m = -INFINITY, s = 0.0f;
  for (int64_t c = threadIdx.x; c < vocab; c += blockDim.x) MergeOnline(m, s, ToF(z[c]), 1.0f);
  WarpMergeOnline(m, s);
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, warps = blockDim.x >> 5;
  if (lane == 0) {
    scratch_m[warp] = m;
    scratch_s[warp] = s;
  }
  __syncthreads();
  if (warp == 0) {
    m = lane < warps ? scratch_m[lane] : -INFINITY;
    s = lane < warps ? scratch_s[lane] : 0.0f;
    WarpMergeOnline(m, s);
    if (lane == 0) {
      shared_max = m;
      shared_log_sum = logf(s);
      losses[row] = shared_log_sum - (ToF(z[target]) - m);
    }
  }
  __syncthreads();
  if (dz == nullptr) return;
  const float max = shared_max, log_sum = shared_log_sum;
  for (int64_t c = threadIdx.x; c < vocab; c += blockDim.x) {
    const float p = __expf(ToF(z[c]) - max - log_sum);
    dz[c] = FromF<TD>((c == target ? p - 1.0f : p) * grad_scale);
  }
}

// Whether candidate (v, i) beats (bv, bi); index `vocab` means no candidate yet.
__device__ __forceinline__ bool Better(float v, int64_t i, float bv, int64_t bi, int64_t vocab) {
  return i < vocab && (bi == vocab || v > bv || (v == bv && i < bi));
}

// The best candidate across the warp; every lane gets it.
__device__ __forceinline__ void WarpArgMax(float& best, int64_t& best_i, int64_t vocab) {
  for (int o = 16; o > 0; o >>= 1) {
    const float v2 = __shfl_xor_sync(0xffffffffu, best, o);
    const int64_t i2 = __shfl_xor_sync(0xffffffffu, best_i, o);
    if (Better(v2, i2, best, best_i, vocab)) {
      best = v2;
      best_i = i2;
    }
  }
}

// The first maximum: ties go to the smaller index, as in the reference.
template <typename TL>
__global__ void ArgMaxKernel(const TL* logits, int32_t* out, int64_t vocab, int64_t pitch) {
  __shared__ float scratch_v[32];
  __shared__ int64_t scratch_i[32];
  const int64_t row = blockIdx.x;
  const TL* z = logits + row * pitch;
  float best = -INFINITY;
  int64_t best_i = vocab;
  for (int64_t c = threadIdx.x; c < vocab; c += blockDim.x) {
    const float v = ToF(z[c]);
    if (best_i == vocab || v > best) {
      best = v;
      best_i = c;
    }
  }
  WarpArgMax(best, best_i, vocab);
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, warps = blockDim.x >> 5;
  if (lane == 0) {
    scratch_v[warp] = best;
    scratch_i[warp] = best_i;
  }
  __syncthreads();
  if (warp != 0) return;
  best = lane < warps ? scratch_v[lane] : -INFINITY;
  best_i = lane < warps ? scratch_i[lane] : vocab;
  WarpArgMax(best, best_i, vocab);
  if (lane == 0) out[row] = static_cast<int32_t>(best_i == vocab ? 0 : best_i);
}

}  // namespace

void LaunchCrossEntropy(Ref logits, const int32_t* targets, float grad_scale, float* losses, Ref dlogits, int64_t n,
                        int64_t vocab, int64_t pitch, cudaStream_t stream) {
  if (n == 0) return;
  LAMINA_KERNEL_CHECK(vocab > 0 && pitch >= vocab);
  LAMINA_DISPATCH_FLOAT(logits.dtype, TL, LAMINA_DISPATCH_FLOAT(dlogits.dtype, TD, {
                          CrossEntropyKernel<TL, TD><<<static_cast<unsigned>(n), kThreads, 0, stream>>>(
                              static_cast<const TL*>(logits.data), targets, grad_scale, losses,
                              static_cast<TD*>(dlogits.data), vocab, pitch);
                        }));
  LAMINA_CUDA_CHECK_LAUNCH();
}

void LaunchArgMax(Ref logits, int32_t* out, int64_t n, int64_t vocab, int64_t pitch, cudaStream_t stream) {
  if (n == 0) return;
  LAMINA_KERNEL_CHECK(vocab > 0 && pitch >= vocab);
  LAMINA_DISPATCH_FLOAT(logits.dtype, TL, {
    ArgMaxKernel<TL>
        <<<static_cast<unsigned>(n), kThreads, 0, stream>>>(static_cast<const TL*>(logits.data), out, vocab, pitch);
  });
  LAMINA_CUDA_CHECK_LAUNCH();
}

}  // namespace lamina::cuda
