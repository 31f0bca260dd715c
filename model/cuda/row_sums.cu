// Column sums (bias gradients) and the chunk finalize with the kernels of row_sums.cuh.
#include "model/cuda/common.cuh"
#include "model/cuda/kernels.h"
#include "model/cuda/row_sums.cuh"

namespace lamina::cuda {

size_t ColumnSumScratchBytes(int64_t rows, int64_t cols) {
  return static_cast<size_t>(CeilDiv(rows, row_sums::kChunkRows) * cols) * sizeof(float);
}

void LaunchColumnSumAccumulate(Ref x, int64_t rows, int64_t cols, int64_t pitch, float* out, void* scratch,
                               cudaStream_t stream) {
  if (rows == 0 || cols == 0) return;
  LAMINA_KERNEL_CHECK(pitch >= cols);
  const int64_t chunks = CeilDiv(rows, row_sums::kChunkRows);
  float* partial = static_cast<float*>(scratch);
  LAMINA_DISPATCH_FLOAT(x.dtype, T, LAMINA_DISPATCH_WIDTH(VectorWidth(x.data, cols, pitch, sizeof(T)), V, {
                          const dim3 grid(static_cast<unsigned>(CeilDiv(cols, 32 * V)), static_cast<unsigned>(chunks));
                          row_sums::ColumnPartialKernel<V, T>
                              <<<grid, row_sums::kThreads, row_sums::SmemBytes(V, 1), stream>>>(
                                  static_cast<const T*>(x.data), partial, rows, cols, pitch);
                        }));
  LAMINA_CUDA_CHECK_LAUNCH();
  LaunchChunkFinalize(partial, 1.0f, out, chunks, cols, stream);
}

void LaunchChunkFinalize(const float* partial, float scale, float* out, int64_t chunks, int64_t cols,
                         cudaStream_t stream) {
  if (cols == 0) return;
  row_sums::ChunkFinalizeKernel<<<row_sums::FinalizeBlocks(cols), row_sums::kThreads, row_sums::SmemBytes(1, 1),
                                  stream>>>(partial, scale, out, chunks, cols);
  LAMINA_CUDA_CHECK_LAUNCH();
}

}  // namespace lamina::cuda
