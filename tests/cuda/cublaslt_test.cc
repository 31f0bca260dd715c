// The cuBLASLt wrapper's bias-gradient epilogue (BGRADB): which products may take it (checked on
// the host), and on a GPU that it is taken at BERT-base's weight-gradient shapes and gives the
// column sums of dout beside an unchanged dW. LinearBackward's parity tests check db either way,
// so they alone would pass if the epilogue silently fell back to the column-sum pass. And tuned
// products (CublasLt::Init(true)) against the reference.
#include <cmath>
#include <string>
#include <utility>
#include <vector>

#include "tests/cuda/parity_util.h"
#if LAMINA_WITH_CUDA
#include <cuda_runtime.h>

#include "model/cuda/cublaslt.h"
#endif

namespace lamina::testing {
namespace {

#if LAMINA_WITH_CUDA
// dW[n, k] += dout^T x with dout [m, n] and x [m, k] (m tokens): LinearBackward's product.
cuda::GemmSpec WeightGradient(int64_t m, int64_t n, int64_t k, const void* dout, const void* x, void* dw) {
  return {.trans_a = true, .m = n, .n = k, .k = m, .a = dout, .lda = n, .b = x, .ldb = k, .c = dw, .ldc = k,
          .c_dtype = DType::kF32, .beta = 1.0f};
}

TEST(CublasLtRules, BiasGradEpilogueFitsAlignedF32ProductsOnly) {
  float sums = 0;
  cuda::GemmSpec s = WeightGradient(4096, 768, 3072, nullptr, nullptr, nullptr);
  s.bias_grad = &sums;
  EXPECT_TRUE(cuda::BiasGradEpilogueFits(s));
  for (int which = 0; which < 3; ++which) {  // m, n, k in turn not a multiple of 8
    cuda::GemmSpec odd = s;
    (which == 0 ? odd.m : which == 1 ? odd.n : odd.k) += 4;
    EXPECT_FALSE(cuda::BiasGradEpilogueFits(odd)) << "dimension " << which;
  }
  cuda::GemmSpec bf16 = s;
  bf16.c_dtype = DType::kBF16;  // the sums would be bf16
  EXPECT_FALSE(cuda::BiasGradEpilogueFits(bf16));
  cuda::GemmSpec batched = s;
  batched.batch = 2;
  EXPECT_FALSE(cuda::BiasGradEpilogueFits(batched));
  cuda::GemmSpec with_bias = s;
  with_bias.bias = &sums;
  EXPECT_FALSE(cuda::BiasGradEpilogueFits(with_bias));
  cuda::GemmSpec with_gelu = s;
  with_gelu.gelu = cuda::GemmGelu::kBackward;
  EXPECT_FALSE(cuda::BiasGradEpilogueFits(with_gelu));
}

using CublasLtTest = CudaParityTest;

// The three weight-gradient products whose bias gradient LinearBackward takes from the epilogue
// (QKV, attention-out, FFN-out) on 1024 tokens: the epilogue is taken, dW still accumulates, and
// the sums (which it writes) match the reference's column sums. An unaligned token count is
// refused without a write.
TEST_F(CublasLtTest, BiasGradEpilogueSumsTheGradientColumns) {
  cuda::CublasLt lt;
  ASSERT_TRUE(lt.Init().ok());
  const int64_t m = 1024;
  for (const auto& [n, k] : {std::pair<int64_t, int64_t>{2304, 768}, {768, 768}, {768, 3072}}) {
    const std::string tag = " n" + std::to_string(n) + " k" + std::to_string(k);
    Pair dout = Random({m, n}, DType::kBF16), x = Random({m, k}, DType::kBF16), w = Random({n, k}, DType::kBF16);
    Pair dw = Random({n, k}, DType::kF32), sums = Make({n}, DType::kF32);
    Set(sums, std::vector<float>(n, 0.0f));  // the reference accumulates; the epilogue writes
    gpu_->Synchronize();
    cuda::GemmSpec s = WeightGradient(m, n, k, dout.gpu.data, x.gpu.data, dw.gpu.data);
    s.bias_grad = sums.gpu.as<float>();
    ASSERT_TRUE(lt.GemmWithBiasGrad(s, nullptr)) << "cuBLASLt offers no BGRADB product for" << tag;
    ASSERT_EQ(cudaDeviceSynchronize(), cudaSuccess);
    cpu_->LinearBackward(dout.cpu, x.cpu, w.cpu, Activation::kNone, {}, {}, false, dw.cpu, sums.cpu);
    ExpectClose(dw, 1e-5, "BGRADB product dW" + tag);
    ExpectClose(sums, 1e-5, "BGRADB bias gradient" + tag);
  }
  Pair dout = Random({m + 4, 768}, DType::kBF16), x = Random({m + 4, 768}, DType::kBF16);
  Pair dw = Make({768, 768}, DType::kF32), sums = Make({768}, DType::kF32);
  gpu_->Synchronize();
  cuda::GemmSpec s = WeightGradient(m + 4, 768, 768, dout.gpu.data, x.gpu.data, dw.gpu.data);
  s.bias_grad = sums.gpu.as<float>();
  EXPECT_FALSE(lt.GemmWithBiasGrad(s, nullptr));
  ASSERT_EQ(cudaDeviceSynchronize(), cudaSuccess);
  for (float v : Gpu(sums)) ASSERT_TRUE(std::isnan(v)) << "a refused product wrote its sums";
}

// Tuned products: the timing runs must not reach an output the product accumulates into (beta = 1,
// a weight gradient), and a plain product (beta = 0, bf16 out) is the same product.
TEST_F(CublasLtTest, AutotunedProductsMatchTheReference) {
  cuda::CublasLt lt;
  ASSERT_TRUE(lt.Init(/*autotune=*/true).ok());
  const int64_t m = 512, n = 768, k = 256;
  Pair dout = Random({m, n}, DType::kBF16), x = Random({m, k}, DType::kBF16), w = Random({n, k}, DType::kBF16);
  Pair dw = Random({n, k}, DType::kF32), dx = Make({m, k}, DType::kBF16);
  gpu_->Synchronize();
  lt.Gemm(WeightGradient(m, n, k, dout.gpu.data, x.gpu.data, dw.gpu.data), nullptr);
  // dx = dout w, as LinearBackward's product: C[m, k] = A[m, n] B[n, k].
  lt.Gemm({.m = m, .n = k, .k = n, .a = dout.gpu.data, .lda = n, .b = w.gpu.data, .ldb = k, .c = dx.gpu.data,
           .ldc = k, .c_dtype = DType::kBF16},
          nullptr);
  ASSERT_EQ(cudaDeviceSynchronize(), cudaSuccess);
  cpu_->LinearBackward(dout.cpu, x.cpu, w.cpu, Activation::kNone, {}, dx.cpu, false, dw.cpu, {});
  ExpectClose(dw, 1e-5, "tuned dW += dout^T x (accumulated once)");
  ExpectClose(dx, 1e-2, "tuned dx = dout w");
}
#endif  // LAMINA_WITH_CUDA

}  // namespace
}  // namespace lamina::testing
