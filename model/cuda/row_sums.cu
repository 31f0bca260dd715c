// Column sums (bias gradients, alone or with the GELU backward) and the chunk finalize with the
// kernels of row_sums.cuh.
#include <algorithm>

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

void LaunchGeluBackwardColumnSum(Ref dout, Ref pre, int64_t rows, int64_t cols, GeluForm form, float* out,
                                 void* scratch, cudaStream_t stream) {
  if (out == nullptr) {
    LaunchGeluBackward(dout, pre, dout, rows * cols, form, stream);
    return;
  }
  if (rows == 0 || cols == 0) return;
  const int64_t chunks = CeilDiv(rows, row_sums::kChunkRows);
  float* partial = static_cast<float*>(scratch);
  const int width = std::min(VectorWidth(dout.data, cols, cols, DTypeSize(dout.dtype)),
                             VectorWidth(pre.data, cols, cols, DTypeSize(pre.dtype)));
  LAMINA_DISPATCH_FLOAT(
      dout.dtype, TG, LAMINA_DISPATCH_FLOAT(pre.dtype, TX, LAMINA_DISPATCH_WIDTH(width, V, {
                                              const dim3 grid(static_cast<unsigned>(CeilDiv(cols, 32 * V)),
                                                              static_cast<unsigned>(chunks));
                                              auto* kernel = form == GeluForm::kTanh
                                                                 ? row_sums::GeluBackwardColumnPartialKernel<V, true, TG, TX>
                                                                 : row_sums::GeluBackwardColumnPartialKernel<V, false, TG, TX>;
                                              kernel<<<grid, row_sums::kThreads, row_sums::SmemBytes(V, 1), stream>>>(
                                                  static_cast<TG*>(dout.data), static_cast<const TX*>(pre.data),
                                                  partial, rows, cols);
                                            })));
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
