// The optimizer kernels over the flat f32 buffers: the sum of squares (deterministic two-pass
// reduction), AdamW, and LAMB's three steps. The optimizers walk every segment in one launch
// (grid.y = segment; SegmentBlocks of grid.x work on a segment and the rest exit); LAMB measures
// ||p|| and ||r|| of every segment in one pass into fixed per-block partials, sums them per tensor
// in a fixed order, and a last launch applies the update.
//
// Kernels only: model/cuda/optimizer.cu launches them, and tests/cuda/optimizer_emulation_test.cc
// runs them on CPU threads.
#pragma once

#include <cstdint>

#include "model/cuda/common.cuh"
#include "model/cuda/kernels.h"

// Internal linkage: each translation unit that includes this gets its own copy (see
// flash_attention.cuh).
namespace lamina::cuda::optimizer {
namespace {

constexpr int kThreads = 256;
constexpr int kSumBlocks = 512;  // fixed, so the summation order does not depend on the device
constexpr int64_t kMaxSegmentBlocks = 512;
constexpr int kTensorsPerBlock = kThreads / 32;  // LambTensorNormsKernel: a warp per tensor
// Dynamic shared memory of the kernels that sum over a block (BlockSumDouble).
constexpr size_t kBlockSumSmem = kThreads * sizeof(double);

// Block-wide sum of a double in a fixed tree order, through kBlockSumSmem of dynamic shared
// memory; the result is valid in thread 0.
__device__ double BlockSumDouble(double v, double* shared) {
  shared[threadIdx.x] = v;
  __syncthreads();
  for (unsigned stride = blockDim.x / 2; stride > 0; stride >>= 1) {
    if (threadIdx.x < stride) shared[threadIdx.x] += shared[threadIdx.x + stride];
    __syncthreads();
  }
  return shared[0];
}

template <typename T>
__global__ void SumSquaresPartialKernel(const T* x, int64_t n, double* partial) {
  LAMINA_DYNAMIC_SMEM(smem);
  double* shared = reinterpret_cast<double*>(smem);
  double acc = 0.0;
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const double v = ToF(x[i]);
    acc += v * v;
  }
  const double total = BlockSumDouble(acc, shared);
  if (threadIdx.x == 0) partial[blockIdx.x] = total;
}

__global__ void SumPartialsKernel(const double* partial, int n, double* result) {
  LAMINA_DYNAMIC_SMEM(smem);
  double* shared = reinterpret_cast<double*>(smem);
  double acc = 0.0;
  for (int i = threadIdx.x; i < n; i += blockDim.x) acc += partial[i];
  const double total = BlockSumDouble(acc, shared);
  if (threadIdx.x == 0) *result = total;
}

// Blocks that work on a segment of `size` elements: the rest of grid.x exits at once, so small
// segments (biases, LayerNorm) do not pay for the largest one.
LAMINA_HD int64_t SegmentBlocks(int64_t size) {
  const int64_t blocks = (size + kThreads * 4 - 1) / (kThreads * 4);
  return blocks < 1 ? 1 : (blocks > kMaxSegmentBlocks ? kMaxSegmentBlocks : blocks);
}

struct Adam {
  OptimizerHyper h;
  // Updates m and v in place and returns the bias-corrected direction, as the reference does.
  __device__ __forceinline__ float Step(float grad, float& m, float& v) const {
    const float g = grad * h.grad_scale;
    m = h.beta1 * m + (1.0f - h.beta1) * g;
    v = h.beta2 * v + (1.0f - h.beta2) * g * g;
    return Direction(m, v);
  }
  __device__ __forceinline__ float Direction(float m, float v) const {
    return (m / h.bias_correction1) / (sqrtf(v / h.bias_correction2) + h.eps);
  }
};

template <typename TC>
__global__ void AdamWKernel(float* params, const float* grads, float* m, float* v, TC* compute,
                            const DeviceSegment* segments, OptimizerHyper h) {
  const DeviceSegment seg = segments[blockIdx.y];
  const int64_t blocks = SegmentBlocks(seg.size);
  if (blockIdx.x >= blocks) return;
  const float wd = seg.decay ? h.weight_decay : 0.0f;
  const Adam adam{h};
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < seg.size;
       i += blocks * blockDim.x) {
    const int64_t k = seg.offset + i;
    float mk = m[k], vk = v[k];
    const float dir = adam.Step(grads[k], mk, vk);
    m[k] = mk;
    v[k] = vk;
    const float p = params[k] - h.lr * (dir + wd * params[k]);
    params[k] = p;
    if (compute != nullptr) compute[k] = FromF<TC>(p);
  }
}

// partial[(segment * gridDim.x + block) * 2 + {0, 1}] = this block's sums of p^2 and r^2, for the
// segment's SegmentBlocks() blocks.
__global__ void LambNormsKernel(const float* params, const float* grads, float* m, float* v,
                                const DeviceSegment* segments, OptimizerHyper h, double* partial) {
  LAMINA_DYNAMIC_SMEM(smem);
  double* shared = reinterpret_cast<double*>(smem);
  const DeviceSegment seg = segments[blockIdx.y];
  const int64_t blocks = SegmentBlocks(seg.size);
  if (blockIdx.x >= blocks) return;
  const float wd = seg.decay ? h.weight_decay : 0.0f;
  const Adam adam{h};
  double p2 = 0.0, r2 = 0.0;
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < seg.size;
       i += blocks * blockDim.x) {
    const int64_t k = seg.offset + i;
    float mk = m[k], vk = v[k];
    const float p = params[k];
    const float r = adam.Step(grads[k], mk, vk) + wd * p;
    m[k] = mk;
    v[k] = vk;
    p2 += static_cast<double>(p) * p;
    r2 += static_cast<double>(r) * r;
  }
  const int64_t slot = (static_cast<int64_t>(blockIdx.y) * gridDim.x + blockIdx.x) * 2;
  const double p_total = BlockSumDouble(p2, shared);
  if (threadIdx.x == 0) partial[slot] = p_total;
  __syncthreads();
  const double r_total = BlockSumDouble(r2, shared);
  if (threadIdx.x == 0) partial[slot + 1] = r_total;
}

// norms[2t], norms[2t+1] = the sums of p^2 and r^2 over the segments of tensor t (a tensor may be
// several segments: a ZeRO shard's edges cut tensors). One warp per tensor: lane j adds blocks j,
// j + 32, ... of each of the tensor's segments, in segment order, and the lanes' sums meet in a
// fixed butterfly, so the result depends on the shapes alone. (One thread per tensor, walking all
// of its up to 512 block partials alone while the warp's other lanes waited on their own
// tensors' turns, took the LAMB step from 2.4 to 3.3 ms at BERT-base.)
__global__ void LambTensorNormsKernel(const DeviceSegment* segments, int num_segments, int blocks_per_segment,
                                      const double* partial, int64_t num_tensors, float* norms) {
  const int64_t t = (static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x) / 32;
  const int lane = static_cast<int>(threadIdx.x % 32);
  if (t >= num_tensors) return;  // whole warps: blockDim.x is a multiple of 32
  double p2 = 0.0, r2 = 0.0;
  for (int s = 0; s < num_segments; ++s) {
    if (segments[s].tensor != t) continue;  // the same for every lane
    const double* part = partial + static_cast<int64_t>(s) * blocks_per_segment * 2;
    const int64_t blocks = SegmentBlocks(segments[s].size);
    for (int64_t b = lane; b < blocks; b += 32) {
      p2 += part[2 * b];
      r2 += part[2 * b + 1];
    }
  }
  for (int o = 16; o > 0; o >>= 1) {
    p2 += __shfl_xor_sync(0xffffffffu, p2, o);
    r2 += __shfl_xor_sync(0xffffffffu, r2, o);
  }
  if (lane == 0) {
    norms[2 * t] = static_cast<float>(p2);
    norms[2 * t + 1] = static_cast<float>(r2);
  }
}

template <typename TC>
__global__ void LambUpdateKernel(float* params, const float* m, const float* v, TC* compute,
                                 const DeviceSegment* segments, OptimizerHyper h, const float* norms) {
  const DeviceSegment seg = segments[blockIdx.y];
  const int64_t blocks = SegmentBlocks(seg.size);
  if (blockIdx.x >= blocks) return;
  const float p2 = norms[2 * seg.tensor], r2 = norms[2 * seg.tensor + 1];
  const float trust = p2 > 0.0f && r2 > 0.0f ? sqrtf(p2) / sqrtf(r2) : 1.0f;
  const float wd = seg.decay ? h.weight_decay : 0.0f;
  const Adam adam{h};
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < seg.size;
       i += blocks * blockDim.x) {
    const int64_t k = seg.offset + i;
    const float r = adam.Direction(m[k], v[k]) + wd * params[k];
    const float p = params[k] - h.lr * trust * r;
    params[k] = p;
    if (compute != nullptr) compute[k] = FromF<TC>(p);
  }
}

inline dim3 SegmentGrid(int num_segments, int64_t max_segment) {
  return dim3(static_cast<unsigned>(SegmentBlocks(max_segment)), static_cast<unsigned>(num_segments));
}

}  // namespace
}  // namespace lamina::cuda::optimizer
