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

// Columns c..c+V-1 of a row of `vocab` as fp32, those at or past vocab replaced by `fill`. V = 8:
// one 16-byte access; rows are then a multiple of 8 apart, so the last group's reads stay inside
// its row (the padding of padded rows, which is never used).
template <int V, typename T>
__device__ __forceinline__ void LoadGroup(const T* row, int64_t c, int64_t vocab, float fill, float (&v)[V]) {
  LoadV<V>(row + c, v);
#pragma unroll
  for (int k = 0; k < V; ++k)
    if (c + k >= vocab) v[k] = fill;
}
// Stores the columns of c..c+V-1 below vocab; the padding is never written.
template <int V, typename T>
__device__ __forceinline__ void StoreGroup(T* row, int64_t c, int64_t vocab, const float (&v)[V]) {
  if constexpr (V == 8) {
    if (c + 8 <= vocab) return Store8(row + c, v);
  }
#pragma unroll
  for (int k = 0; k < V; ++k)
    if (c + k < vocab) row[c + k] = FromF<T>(v[k]);
}

template <int V, typename TL, typename TD>
__global__ void CrossEntropyKernel(const TL* logits, const int32_t* targets, float grad_scale, float* losses,
                                   TD* dlogits, int64_t vocab, int64_t pitch) {
  __shared__ float scratch_m[32], scratch_s[32];
  __shared__ float shared_max, shared_log_sum;
  const int64_t row = blockIdx.x;
  const int32_t target = targets[row];
  const TL* z = logits + row * pitch;
  TD* dz = dlogits == nullptr ? nullptr : dlogits + row * pitch;
  const int64_t first = V * static_cast<int64_t>(threadIdx.x), step = V * static_cast<int64_t>(blockDim.x);
  if (target < 0) {
    if (threadIdx.x == 0) losses[row] = 0.0f;
    const float zeros[V] = {};
    if (dz != nullptr)
      for (int64_t c = first; c < vocab; c += step) StoreGroup<V>(dz, c, vocab, zeros);
    return;
  }
  float m = -INFINITY, s = 0.0f;
  for (int64_t c = first; c < vocab; c += step) {
    float v[V];
    LoadGroup<V>(z, c, vocab, -INFINITY, v);
#pragma unroll
    for (int k = 0; k < V; ++k) MergeOnline(m, s, v[k], 1.0f);  // exp(-inf - m) adds 0 past vocab
  }
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
  for (int64_t c = first; c < vocab; c += step) {
    float v[V];
    LoadGroup<V>(z, c, vocab, 0.0f, v);
#pragma unroll
    for (int k = 0; k < V; ++k) {
      const float p = __expf(v[k] - max - log_sum);
      v[k] = (c + k == target ? p - 1.0f : p) * grad_scale;
    }
    StoreGroup<V>(dz, c, vocab, v);
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
  // Eight columns per access where rows are 16-byte aligned (the padded logits).
  const bool wide = pitch % 8 == 0 && Aligned16({logits.data, dlogits.data});
  LAMINA_DISPATCH_FLOAT(logits.dtype, TL, LAMINA_DISPATCH_FLOAT(dlogits.dtype, TD, {
                          auto kernel = wide ? CrossEntropyKernel<8, TL, TD> : CrossEntropyKernel<1, TL, TD>;
                          kernel<<<static_cast<unsigned>(n), kThreads, 0, stream>>>(
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
