// Launchers of the optimizer kernels (model/cuda/optimizer.cuh).
#include "model/cuda/optimizer.cuh"

namespace lamina::cuda {

size_t SumSquaresScratchBytes() { return optimizer::kSumBlocks * sizeof(double); }

void LaunchSumSquares(Ref x, int64_t n, void* scratch, double* result, cudaStream_t stream) {
  double* partial = static_cast<double*>(scratch);
  LAMINA_DISPATCH_FLOAT(x.dtype, T, {
    optimizer::SumSquaresPartialKernel<T><<<optimizer::kSumBlocks, optimizer::kThreads, optimizer::kBlockSumSmem,
                                            stream>>>(static_cast<const T*>(x.data), n, partial);
  });
  LAMINA_CUDA_CHECK_LAUNCH();
  optimizer::SumPartialsKernel<<<1, optimizer::kThreads, optimizer::kBlockSumSmem, stream>>>(
      partial, optimizer::kSumBlocks, result);
  LAMINA_CUDA_CHECK_LAUNCH();
}

void LaunchAdamW(float* params, const float* grads, float* m, float* v, Ref compute, const DeviceSegment* segments,
                 int num_segments, int64_t max_segment, const OptimizerHyper& h, cudaStream_t stream) {
  if (num_segments == 0) return;
  LAMINA_KERNEL_CHECK(num_segments <= 65535);
  const dim3 grid = optimizer::SegmentGrid(num_segments, max_segment);
  LAMINA_DISPATCH_FLOAT(compute.dtype, TC, {
    optimizer::AdamWKernel<TC><<<grid, optimizer::kThreads, 0, stream>>>(params, grads, m, v,
                                                                         static_cast<TC*>(compute.data), segments, h);
  });
  LAMINA_CUDA_CHECK_LAUNCH();
}

size_t LambScratchBytes(int num_segments, int64_t max_segment) {
  return static_cast<size_t>(optimizer::SegmentGrid(num_segments, max_segment).x) * num_segments * 2 * sizeof(double);
}

void LaunchLambMoments(const float* params, const float* grads, float* m, float* v, const DeviceSegment* segments,
                       int num_segments, int64_t max_segment, int64_t num_tensors, const OptimizerHyper& h,
                       void* scratch, float* norms, cudaStream_t stream) {
  if (num_segments == 0) return;
  LAMINA_KERNEL_CHECK(num_segments <= 65535);
  const dim3 grid = optimizer::SegmentGrid(num_segments, max_segment);
  double* partial = static_cast<double*>(scratch);
  optimizer::LambNormsKernel<<<grid, optimizer::kThreads, optimizer::kBlockSumSmem, stream>>>(params, grads, m, v,
                                                                                              segments, h, partial);
  LAMINA_CUDA_CHECK_LAUNCH();
  const int tensor_blocks =
      static_cast<int>((num_tensors + optimizer::kTensorsPerBlock - 1) / optimizer::kTensorsPerBlock);
  optimizer::LambTensorNormsKernel<<<tensor_blocks, optimizer::kThreads, 0, stream>>>(
      segments, num_segments, static_cast<int>(grid.x), partial, num_tensors, norms);
  LAMINA_CUDA_CHECK_LAUNCH();
}

void LaunchLambUpdate(float* params, const float* m, const float* v, Ref compute, const DeviceSegment* segments,
                      int num_segments, int64_t max_segment, const OptimizerHyper& h, const float* norms,
                      cudaStream_t stream) {
  if (num_segments == 0) return;
  LAMINA_KERNEL_CHECK(num_segments <= 65535);
  const dim3 grid = optimizer::SegmentGrid(num_segments, max_segment);
  LAMINA_DISPATCH_FLOAT(compute.dtype, TC, {
    optimizer::LambUpdateKernel<TC>
        <<<grid, optimizer::kThreads, 0, stream>>>(params, m, v, static_cast<TC*>(compute.data), segments, h, norms);
  });
  LAMINA_CUDA_CHECK_LAUNCH();
}

}  // namespace lamina::cuda
