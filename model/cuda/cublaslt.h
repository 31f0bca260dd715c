// The one entry point for matrix products on the GPU: a cuBLASLt wrapper taking row-major
// operands. bf16 A and B, fp32 accumulation and scaling, C/D in bf16 or fp32 (fp32 with beta = 1
// accumulates parameter gradients across micro-steps), optional bias, GELU and bias-gradient
// epilogues, strided batches.
#pragma once

#include <cublasLt.h>
#include <cuda_runtime.h>

#include <array>
#include <cstdint>
#include <map>
#include <optional>

#include "absl/status/status.h"
#include "core/buffer.h"
#include "core/dtype.h"

namespace lamina::cuda {

enum class GemmGelu { kNone, kForward, kBackward };

// C[m, n] = alpha * op(A)[m, k] op(B)[k, n] (+ bias[n] per row) + beta * C, all row-major.
// op(A) = A^T when trans_a (A stored [k, m]), likewise for B.
struct GemmSpec {
  bool trans_a = false, trans_b = false;
  int64_t m = 0, n = 0, k = 0;
  const void* a = nullptr;  // bf16
  int64_t lda = 0;
  const void* b = nullptr;  // bf16
  int64_t ldb = 0;
  void* c = nullptr;
  int64_t ldc = 0;
  DType c_dtype = DType::kBF16;
  float alpha = 1.0f, beta = 0.0f;
  const void* bias = nullptr;  // bf16 [n], or null
  // A tanh-form GELU in cuBLASLt's epilogue, with gelu_input a bf16 [m, n] matrix of row stride ldc:
  //   kForward:  C = gelu(op(A) op(B) + bias), and gelu_input receives op(A) op(B) + bias, the
  //              GELU's input that the backward pass reads (GELU_AUX(_BIAS));
  //   kBackward: C = op(A) op(B) * gelu'(gelu_input) (DGELU; no bias).
  // Needs a bf16 C, beta = 0, batch 1, and ldc a multiple of 8 with 16-byte aligned C and gelu_input.
  GemmGelu gelu = GemmGelu::kNone;
  void* gelu_input = nullptr;
  // An f32 [m] receiving the sums of op(A)'s rows over k (cuBLASLt's BGRADB: with A = dout^T in a
  // weight-gradient product, the bias gradient), written, not accumulated. Only through
  // GemmWithBiasGrad, and only where BiasGradEpilogueFits.
  float* bias_grad = nullptr;
  int batch = 1;
  int64_t stride_a = 0, stride_b = 0, stride_c = 0;  // in elements, when batch > 1
};

class CublasLt {
 public:
  static constexpr size_t kWorkspaceBytes = size_t{32} << 20;

  CublasLt() = default;
  ~CublasLt();
  CublasLt(const CublasLt&) = delete;
  CublasLt& operator=(const CublasLt&) = delete;

  // Creates the handle and the workspace. With `autotune`, each product shape's algorithm is the
  // fastest of up to kTuneCandidates that cuBLASLt's heuristics offer, timed at its first call on
  // the stream (which that call waits for); otherwise the heuristics' first choice.
  absl::Status Init(bool autotune = false);
  static constexpr int kTuneCandidates = 8;
  // Enqueues the product on `stream`. Aborts with the shape when cuBLASLt has no algorithm for it.
  void Gemm(const GemmSpec& spec, cudaStream_t stream);
  // Enqueues the product with its bias-gradient epilogue (spec.bias_grad set) and returns true; or
  // enqueues nothing and returns false when the shape does not fit the epilogue or cuBLASLt has no
  // algorithm for it (remembered), so that the caller sums the columns itself.
  bool GemmWithBiasGrad(const GemmSpec& spec, cudaStream_t stream);

 private:
  // Computes a product with a dimension that is not a multiple of 8 as two; false if it has none.
  bool SplitUnaligned(const GemmSpec& s, cudaStream_t stream);
  // One cuBLASLt product; false when it has no algorithm (an abort instead when `required`).
  bool Enqueue(const GemmSpec& s, cudaStream_t stream, bool required);
  // The fastest of `count` candidates for the product that `run` enqueues with a given algorithm
  // and output (s.c, or a scratch copy of C's shape where beta != 0, so that the timing runs do
  // not accumulate into it); candidates that fail to run are skipped.
  template <typename Run>
  cublasLtMatmulAlgo_t Fastest(const GemmSpec& s, const cublasLtMatmulHeuristicResult_t* candidates, int count,
                               cudaStream_t stream, Run run);

  using Key = std::array<int64_t, 20>;
  cublasLtHandle_t handle_ = nullptr;
  Buffer workspace_;  // counted with the other allocations (Allocated)
  bool autotune_ = false;
  cudaEvent_t tune_start_ = nullptr, tune_end_ = nullptr;
  std::map<Key, std::optional<cublasLtMatmulAlgo_t>> algos_;  // nullopt: cuBLASLt has none
};

// Whether a product can take the bias-gradient epilogue: f32 C (the sums are C's type), batch 1,
// no bias or GELU epilogue, and m, n, k multiples of 8 (an unaligned product is split, and the sums
// cannot be split over k). Host-only, so that the rule is tested without a GPU.
bool BiasGradEpilogueFits(const GemmSpec& s);

}  // namespace lamina::cuda
