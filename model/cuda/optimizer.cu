// Sum of squares (deterministic two-pass reduction), AdamW and LAMB over the flat f32 buffers.
// The optimizers walk every segment in one launch (grid.y = segment); LAMB measures ||p|| and
// ||r|| of every segment in one pass into fixed per-block partials, sums them per tensor in a
// fixed order (a tensor may be several segments), and a second launch applies the update.
#include "model/cuda/common.cuh"
#include "model/cuda/kernels.h"

namespace lamina::cuda {
namespace {

constexpr int kThreads = 256;
constexpr int kSumBlocks = 512;  // fixed, so the summation order does not depend on the device
constexpr int64_t kMaxSegmentBlocks = 512;

// Block-wide sum of a double in a fixed tree order; the result is valid in thread 0.
__device__ double BlockSumDouble(double v, double* shared) {
  shared[threadIdx.x] = v;
  __syncthreads();
  for (int stride = blockDim.x / 2; stride > 0; stride >>= 1) {
    if (threadIdx.x < stride) shared[threadIdx.x] += shared[threadIdx.x + stride];
    __syncthreads();
  }
  return shared[0];
}

template <typename T>
__global__ void SumSquaresPartialKernel(const T* x, int64_t n, double* partial) {
  __shared__ double shared[kThreads];
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
  __shared__ double shared[kThreads];
  double acc = 0.0;
  for (int i = threadIdx.x; i < n; i += blockDim.x) acc += partial[i];
  const double total = BlockSumDouble(acc, shared);
  if (threadIdx.x == 0) *result = total;
}

// Blocks that work on a segment of `size` elements: the rest of grid.x exits at once, so small
// segments (biases, LayerNorm) do not pay for the largest one.
__host__ __device__ __forceinline__ int64_t SegmentBlocks(int64_t size) {
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
  __shared__ double shared[kThreads];
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

// norms[2t], norms[2t+1] = the sums of p^2 and r^2 over the segments of tensor t: one thread per
// tensor adds its segments' block partials in segment order, so the result is deterministic.
__global__ void LambTensorNormsKernel(const DeviceSegment* segments, int num_segments, int blocks_per_segment,
                                      const double* partial, int64_t num_tensors, float* norms) {
  for (int64_t t = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; t < num_tensors;
       t += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    double p2 = 0.0, r2 = 0.0;
    for (int s = 0; s < num_segments; ++s) {
      if (segments[s].tensor != t) continue;
      const double* part = partial + static_cast<int64_t>(s) * blocks_per_segment * 2;
      const int64_t blocks = SegmentBlocks(segments[s].size);
      for (int64_t b = 0; b < blocks; ++b) {
        p2 += part[2 * b];
        r2 += part[2 * b + 1];
      }
    }
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

dim3 SegmentGrid(int num_segments, int64_t max_segment) {
  return dim3(static_cast<unsigned>(SegmentBlocks(max_segment)), static_cast<unsigned>(num_segments));
}

}  // namespace

size_t SumSquaresScratchBytes() { return kSumBlocks * sizeof(double); }

void LaunchSumSquares(Ref x, int64_t n, void* scratch, double* result, cudaStream_t stream) {
  double* partial = static_cast<double*>(scratch);
  LAMINA_DISPATCH_FLOAT(x.dtype, T, {
    SumSquaresPartialKernel<T><<<kSumBlocks, kThreads, 0, stream>>>(static_cast<const T*>(x.data), n, partial);
  });
  LAMINA_CUDA_CHECK_LAUNCH();
  SumPartialsKernel<<<1, kThreads, 0, stream>>>(partial, kSumBlocks, result);
  LAMINA_CUDA_CHECK_LAUNCH();
}

void LaunchAdamW(float* params, const float* grads, float* m, float* v, Ref compute, const DeviceSegment* segments,
                 int num_segments, int64_t max_segment, const OptimizerHyper& h, cudaStream_t stream) {
  if (num_segments == 0) return;
  LAMINA_KERNEL_CHECK(num_segments <= 65535);
  const dim3 grid = SegmentGrid(num_segments, max_segment);
  LAMINA_DISPATCH_FLOAT(compute.dtype, TC, {
    AdamWKernel<TC><<<grid, kThreads, 0, stream>>>(params, grads, m, v, static_cast<TC*>(compute.data), segments, h);
  });
  LAMINA_CUDA_CHECK_LAUNCH();
}

size_t LambScratchBytes(int num_segments, int64_t max_segment) {
  return static_cast<size_t>(SegmentGrid(num_segments, max_segment).x) * num_segments * 2 * sizeof(double);
}

void LaunchLambMoments(const float* params, const float* grads, float* m, float* v, const DeviceSegment* segments,
                       int num_segments, int64_t max_segment, int64_t num_tensors, const OptimizerHyper& h,
                       void* scratch, float* norms, cudaStream_t stream) {
  if (num_segments == 0) return;
  LAMINA_KERNEL_CHECK(num_segments <= 65535);
  const dim3 grid = SegmentGrid(num_segments, max_segment);
  double* partial = static_cast<double*>(scratch);
  LambNormsKernel<<<grid, kThreads, 0, stream>>>(params, grads, m, v, segments, h, partial);
  LAMINA_CUDA_CHECK_LAUNCH();
  const int tensor_blocks = static_cast<int>((num_tensors + kThreads - 1) / kThreads);
  LambTensorNormsKernel<<<tensor_blocks, kThreads, 0, stream>>>(segments, num_segments, static_cast<int>(grid.x),
                                                                partial, num_tensors, norms);
  LAMINA_CUDA_CHECK_LAUNCH();
}

void LaunchLambUpdate(float* params, const float* m, const float* v, Ref compute, const DeviceSegment* segments,
                      int num_segments, int64_t max_segment, const OptimizerHyper& h, const float* norms,
                      cudaStream_t stream) {
  if (num_segments == 0) return;
  LAMINA_KERNEL_CHECK(num_segments <= 65535);
  const dim3 grid = SegmentGrid(num_segments, max_segment);
  LAMINA_DISPATCH_FLOAT(compute.dtype, TC, {
    LambUpdateKernel<TC>
        <<<grid, kThreads, 0, stream>>>(params, m, v, static_cast<TC*>(compute.data), segments, h, norms);
  });
  LAMINA_CUDA_CHECK_LAUNCH();
}

}  // namespace lamina::cuda
