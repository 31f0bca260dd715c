// Launchers of the attention core's row kernels (model/cuda/attention.cuh). The matrix products
// around them, the rest of the GEMM path, are in model/cuda/attention_gemm.cc.
#include "model/cuda/attention.cuh"
#include "model/cuda/kernels.h"

namespace lamina::cuda {

void LaunchAttentionSoftmax(AttentionSoftmaxSaved saved, const int32_t* key_mask, float scale, int64_t batch,
                            int64_t heads, int64_t seq, float p, RngContext rng, cudaStream_t stream) {
  const int64_t rows = batch * heads * seq;
  if (rows == 0) return;
  LAMINA_KERNEL_CHECK(Aligned16(saved.scores));  // and so every part: the keep bits are read 16 bytes at a time
  const bool wide = seq % 4 == 0;  // rows of bf16 then start 8-byte aligned
  auto kernel = wide ? attention::SoftmaxForwardKernel<4> : attention::SoftmaxForwardKernel<1>;
  kernel<<<attention::RowGrid(rows), attention::kThreads, 0, stream>>>(saved.scores, key_mask, scale, rows, heads, seq,
                                                                       p, rng, saved.dropped, saved.lse, saved.keep_bits);
  LAMINA_CUDA_CHECK_LAUNCH();
}

void LaunchAttentionSoftmaxBackward(const uint16_t* ddropped, AttentionSoftmaxSaved saved, const int32_t* key_mask,
                                    float scale, int64_t batch, int64_t heads, int64_t seq, float p, uint16_t* dscores,
                                    cudaStream_t stream) {
  const int64_t rows = batch * heads * seq;
  if (rows == 0) return;
  LAMINA_KERNEL_CHECK(Aligned16(saved.scores));
  const bool wide = seq % 4 == 0 && Aligned16({ddropped, dscores});
  auto kernel = wide ? attention::SoftmaxBackwardKernel<4> : attention::SoftmaxBackwardKernel<1>;
  kernel<<<attention::RowGrid(rows), attention::kThreads, 0, stream>>>(
      ddropped, saved.scores, saved.lse, saved.keep_bits, key_mask, scale, rows, heads, seq, p, dscores);
  LAMINA_CUDA_CHECK_LAUNCH();
}

}  // namespace lamina::cuda
