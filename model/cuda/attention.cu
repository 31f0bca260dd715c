// Launchers of the attention core's row kernels (model/cuda/attention.cuh). The matrix products
// around them run through the cuBLASLt wrapper (model/cuda/cuda_backend.cc).
#include "model/cuda/attention.cuh"
#include "model/cuda/kernels.h"

namespace lamina::cuda {

void LaunchAttentionSoftmax(const void* scores, const int32_t* key_mask, float scale, int64_t batch, int64_t heads,
                            int64_t seq, float p, RngContext rng, Ref probs, uint16_t* dropped, cudaStream_t stream) {
  const int64_t rows = batch * heads * seq;
  if (rows == 0) return;
  const bool wide = seq % 4 == 0 && Aligned16({scores, probs.data, dropped});  // rows start aligned
  LAMINA_DISPATCH_FLOAT(probs.dtype, TP, {
    auto kernel = wide ? attention::SoftmaxForwardKernel<4, TP> : attention::SoftmaxForwardKernel<1, TP>;
    kernel<<<attention::RowGrid(rows), attention::kThreads, 0, stream>>>(
        static_cast<const TP*>(scores), key_mask, scale, rows, heads, seq, p, rng, static_cast<TP*>(probs.data), dropped);
  });
  LAMINA_CUDA_CHECK_LAUNCH();
}

void LaunchAttentionSoftmaxBackward(const void* ddropped, Ref probs, float scale, int64_t batch, int64_t heads,
                                    int64_t seq, float p, RngContext rng, uint16_t* dropped, uint16_t* dscores,
                                    cudaStream_t stream) {
  const int64_t rows = batch * heads * seq;
  if (rows == 0) return;
  const bool wide = seq % 4 == 0 && Aligned16({ddropped, probs.data, dropped, dscores});
  LAMINA_DISPATCH_FLOAT(probs.dtype, TP, {
    auto kernel = wide ? attention::SoftmaxBackwardKernel<4, TP> : attention::SoftmaxBackwardKernel<1, TP>;
    kernel<<<attention::RowGrid(rows), attention::kThreads, 0, stream>>>(
        static_cast<const TP*>(ddropped), static_cast<const TP*>(probs.data), scale, rows, seq, p, rng, dropped, dscores);
  });
  LAMINA_CUDA_CHECK_LAUNCH();
}

}  // namespace lamina::cuda
