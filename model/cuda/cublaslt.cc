#include "model/cuda/cublaslt.h"

#include <cstdio>
#include <utility>

#include "absl/strings/str_cat.h"
#include "core/status.h"
#include "model/cuda/cuda_check.h"

namespace lamina::cuda {
namespace {

cudaDataType_t CudaType(DType t) {
  switch (t) {
    case DType::kF32:
      return CUDA_R_32F;
    case DType::kBF16:
      return CUDA_R_16BF;
    default:
      LAMINA_CHECK(false, "cuBLASLt output dtype ", DTypeName(t), " is not supported");
  }
  return CUDA_R_32F;
}

// The largest power of two (up to 256) dividing the address: what the kernels may assume.
int64_t Alignment(const void* p) {
  const uintptr_t a = reinterpret_cast<uintptr_t>(p);
  int64_t align = 256;
  while (align > 1 && a % align != 0) align /= 2;
  return align;
}

// RAII holders so that every early exit releases the descriptors.
struct MatmulDesc {
  cublasLtMatmulDesc_t d = nullptr;
  ~MatmulDesc() {
    if (d != nullptr) cublasLtMatmulDescDestroy(d);
  }
};
struct Layout {
  cublasLtMatrixLayout_t l = nullptr;
  ~Layout() {
    if (l != nullptr) cublasLtMatrixLayoutDestroy(l);
  }
};
struct Preference {
  cublasLtMatmulPreference_t p = nullptr;
  ~Preference() {
    if (p != nullptr) cublasLtMatmulPreferenceDestroy(p);
  }
};

void MakeLayout(Layout& layout, cudaDataType_t type, int64_t rows, int64_t cols, int64_t ld, int batch,
                int64_t stride) {
  LAMINA_CUBLAS_CHECK(
      cublasLtMatrixLayoutCreate(&layout.l, type, static_cast<uint64_t>(rows), static_cast<uint64_t>(cols), ld));
  if (batch > 1) {
    const int32_t count = batch;
    LAMINA_CUBLAS_CHECK(
        cublasLtMatrixLayoutSetAttribute(layout.l, CUBLASLT_MATRIX_LAYOUT_BATCH_COUNT, &count, sizeof(count)));
    LAMINA_CUBLAS_CHECK(cublasLtMatrixLayoutSetAttribute(layout.l, CUBLASLT_MATRIX_LAYOUT_STRIDED_BATCH_OFFSET, &stride,
                                                         sizeof(stride)));
  }
}

}  // namespace

CublasLt::~CublasLt() {
  if (tune_start_ != nullptr) cudaEventDestroy(tune_start_);
  if (tune_end_ != nullptr) cudaEventDestroy(tune_end_);
  if (handle_ != nullptr) cublasLtDestroy(handle_);
}

absl::Status CublasLt::Init(bool autotune) {
  autotune_ = autotune;
  if (autotune_ && (cudaEventCreate(&tune_start_) != cudaSuccess || cudaEventCreate(&tune_end_) != cudaSuccess))
    return absl::InternalError("cuBLASLt autotuning: cudaEventCreate failed");
  const cublasStatus_t st = cublasLtCreate(&handle_);
  if (st != CUBLAS_STATUS_SUCCESS) return absl::InternalError(absl::StrCat("cuBLASLt: cublasLtCreate: ", cublasLtGetStatusString(st)));
  absl::StatusOr<Buffer> workspace = Buffer::Allocate(Device::kCuda, kWorkspaceBytes);
  if (!workspace.ok()) {
    return absl::ResourceExhaustedError(
        absl::StrCat("cuBLASLt: allocating its ", kWorkspaceBytes >> 20, " MiB workspace: ", workspace.status().message()));
  }
  workspace_ = *std::move(workspace);
  return absl::OkStatus();
}

// The heuristics pick slower kernels when a dimension is not a multiple of 8 (16 bytes of bf16):
// the MLM decoder's products over 30522 classes ran at ~230 TFLOP/s against 500-720 for aligned
// shapes. Such a product is computed as its aligned part plus a thin remainder: columns of C for
// n, rows of C for m, and for k a second product accumulated onto the first (beta = 1, no bias).
bool CublasLt::SplitUnaligned(const GemmSpec& s, cudaStream_t stream) {
  constexpr int64_t kMultiple = 8;
  const auto aligned_part = [](int64_t d) { return d > kMultiple && d % kMultiple != 0 ? d / kMultiple * kMultiple : 0; };
  const auto bf16_at = [](const void* p, int64_t elems) { return static_cast<const uint16_t*>(p) + elems; };
  const auto c_at = [&](int64_t elems) {
    return static_cast<void*>(static_cast<char*>(s.c) + elems * static_cast<int64_t>(DTypeSize(s.c_dtype)));
  };
  const auto gelu_input_at = [&](int64_t elems) {
    return s.gelu_input != nullptr ? static_cast<void*>(static_cast<uint16_t*>(s.gelu_input) + elems) : nullptr;
  };
  GemmSpec head = s, rest = s;
  if (const int64_t n0 = aligned_part(s.n)) {
    head.n = n0;
    rest.n = s.n - n0;
    rest.b = bf16_at(s.b, s.trans_b ? n0 * s.ldb : n0);
    rest.c = c_at(n0);
    rest.gelu_input = gelu_input_at(n0);
    if (s.bias != nullptr) rest.bias = bf16_at(s.bias, n0);
  } else if (const int64_t m0 = aligned_part(s.m)) {
    head.m = m0;
    rest.m = s.m - m0;
    rest.a = bf16_at(s.a, s.trans_a ? m0 : m0 * s.lda);
    rest.c = c_at(m0 * s.ldc);
    rest.gelu_input = gelu_input_at(m0 * s.ldc);
  } else if (s.gelu != GemmGelu::kNone) {
    return false;  // a GELU applies to the whole sum over k: no split of k
  } else if (const int64_t k0 = aligned_part(s.k)) {
    head.k = k0;
    rest.k = s.k - k0;
    rest.a = bf16_at(s.a, s.trans_a ? k0 * s.lda : k0);
    rest.b = bf16_at(s.b, s.trans_b ? k0 : k0 * s.ldb);
    rest.beta = 1.0f;
    rest.bias = nullptr;
  } else {
    return false;
  }
  Gemm(head, stream);
  Gemm(rest, stream);
  return true;
}

bool BiasGradEpilogueFits(const GemmSpec& s) {
  const auto aligned = [](int64_t d) { return d > 0 && d % 8 == 0; };
  return s.c_dtype == DType::kF32 && s.batch == 1 && s.bias == nullptr && s.gelu == GemmGelu::kNone &&
         aligned(s.m) && aligned(s.n) && aligned(s.k);
}

void CublasLt::Gemm(const GemmSpec& s, cudaStream_t stream) {
  LAMINA_CHECK(s.bias_grad == nullptr, "a bias-gradient product goes through GemmWithBiasGrad");
  if (s.m == 0 || s.n == 0) return;
  LAMINA_CHECK(s.k > 0, "GEMM with k = 0");
  LAMINA_CHECK(s.batch >= 1, "GEMM batch ", s.batch);
  if (s.batch == 1 && SplitUnaligned(s, stream)) return;
  Enqueue(s, stream, /*required=*/true);
}

bool CublasLt::GemmWithBiasGrad(const GemmSpec& s, cudaStream_t stream) {
  LAMINA_CHECK(s.bias_grad != nullptr, "GemmWithBiasGrad without bias_grad");
  if (!BiasGradEpilogueFits(s)) return false;
  return Enqueue(s, stream, /*required=*/false);
}

// Row-major C = op(A) op(B) is column-major C^T = op(B)^T op(A)^T, and a row-major matrix read
// column-major is its transpose; so cuBLASLt gets B as its first operand and A as its second,
// each with the caller's transpose flag, and the problem (n, m, k). The bias gradient of
// op(A)'s rows is therefore BGRADB: sums over k of cuBLASLt's second operand, one per column of
// its D (our m).
bool CublasLt::Enqueue(const GemmSpec& s, cudaStream_t stream, bool required) {
  const cudaDataType_t c_type = CudaType(s.c_dtype);
  MatmulDesc desc;
  LAMINA_CUBLAS_CHECK(cublasLtMatmulDescCreate(&desc.d, CUBLAS_COMPUTE_32F, CUDA_R_32F));
  const cublasOperation_t op_first = s.trans_b ? CUBLAS_OP_T : CUBLAS_OP_N;
  const cublasOperation_t op_second = s.trans_a ? CUBLAS_OP_T : CUBLAS_OP_N;
  LAMINA_CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(desc.d, CUBLASLT_MATMUL_DESC_TRANSA, &op_first, sizeof(op_first)));
  LAMINA_CUBLAS_CHECK(
      cublasLtMatmulDescSetAttribute(desc.d, CUBLASLT_MATMUL_DESC_TRANSB, &op_second, sizeof(op_second)));
  const bool gelu = s.gelu != GemmGelu::kNone;
  LAMINA_CHECK(gelu == (s.gelu_input != nullptr), "a GELU epilogue and its input go together");
  LAMINA_CHECK(s.gelu != GemmGelu::kBackward || s.bias == nullptr, "the GELU backward epilogue takes no bias");
  cublasLtEpilogue_t epilogue = s.bias != nullptr ? CUBLASLT_EPILOGUE_BIAS : CUBLASLT_EPILOGUE_DEFAULT;
  if (s.gelu == GemmGelu::kForward)
    epilogue = s.bias != nullptr ? CUBLASLT_EPILOGUE_GELU_AUX_BIAS : CUBLASLT_EPILOGUE_GELU_AUX;
  else if (s.gelu == GemmGelu::kBackward)
    epilogue = CUBLASLT_EPILOGUE_DGELU;
  else if (s.bias_grad != nullptr)
    epilogue = CUBLASLT_EPILOGUE_BGRADB;
  LAMINA_CUBLAS_CHECK(
      cublasLtMatmulDescSetAttribute(desc.d, CUBLASLT_MATMUL_DESC_EPILOGUE, &epilogue, sizeof(epilogue)));
  if (s.bias != nullptr) {
    LAMINA_CHECK(s.c_dtype == DType::kBF16, "the bias epilogue is used with bf16 outputs only");
    LAMINA_CUBLAS_CHECK(
        cublasLtMatmulDescSetAttribute(desc.d, CUBLASLT_MATMUL_DESC_BIAS_POINTER, &s.bias, sizeof(s.bias)));
  }
  if (s.bias_grad != nullptr) {  // only from GemmWithBiasGrad, which checked BiasGradEpilogueFits
    // The sums take C's type (f32); the heuristics read the pointer for its alignment.
    LAMINA_CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(desc.d, CUBLASLT_MATMUL_DESC_BIAS_POINTER, &s.bias_grad,
                                                       sizeof(s.bias_grad)));
  }
  if (gelu) {
    LAMINA_CHECK(s.c_dtype == DType::kBF16 && s.beta == 0.0f && s.batch == 1 && s.ldc % 8 == 0 &&
                     Alignment(s.c) >= 16 && Alignment(s.gelu_input) >= 16,
                 "the GELU epilogue needs a bf16 C, beta 0, batch 1, ldc a multiple of 8 (", s.ldc,
                 ") and 16-byte aligned C and GELU input");
    // The auxiliary matrix (written forward, read backward) has C's column-major shape (n rows) and
    // leading dimension; its type defaults to C's (bf16).
    const int64_t aux_ld = s.ldc;
    LAMINA_CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(desc.d, CUBLASLT_MATMUL_DESC_EPILOGUE_AUX_POINTER,
                                                       &s.gelu_input, sizeof(s.gelu_input)));
    LAMINA_CUBLAS_CHECK(
        cublasLtMatmulDescSetAttribute(desc.d, CUBLASLT_MATMUL_DESC_EPILOGUE_AUX_LD, &aux_ld, sizeof(aux_ld)));
  }
  // Column-major shapes as stored: first operand (row-major B) and second (row-major A).
  Layout first, second, out;
  MakeLayout(first, CUDA_R_16BF, s.trans_b ? s.k : s.n, s.trans_b ? s.n : s.k, s.ldb, s.batch, s.stride_b);
  MakeLayout(second, CUDA_R_16BF, s.trans_a ? s.m : s.k, s.trans_a ? s.k : s.m, s.lda, s.batch, s.stride_a);
  MakeLayout(out, c_type, s.n, s.m, s.ldc, s.batch, s.stride_c);

  const int64_t align_a = Alignment(s.a), align_b = Alignment(s.b), align_c = Alignment(s.c);
  const Key key{s.trans_a,
                s.trans_b,
                s.m,
                s.n,
                s.k,
                s.lda,
                s.ldb,
                s.ldc,
                static_cast<int64_t>(s.c_dtype),
                s.bias != nullptr,
                s.batch,
                s.stride_a,
                s.stride_b,
                s.stride_c,
                align_a,
                align_b,
                align_c,
                s.beta != 0.0f,
                static_cast<int64_t>(s.gelu),
                s.bias_grad != nullptr ? Alignment(s.bias_grad) : 0};
  auto it = algos_.find(key);
  if (it == algos_.end()) {
    Preference pref;
    LAMINA_CUBLAS_CHECK(cublasLtMatmulPreferenceCreate(&pref.p));
    const uint64_t ws = kWorkspaceBytes;
    LAMINA_CUBLAS_CHECK(
        cublasLtMatmulPreferenceSetAttribute(pref.p, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, &ws, sizeof(ws)));
    // Tell the heuristics the real alignment of each pointer, so that a misaligned view (a head's
    // columns inside a fused row, an odd-sized tensor) gets a kernel that can read it.
    const uint32_t al_first = static_cast<uint32_t>(align_b), al_second = static_cast<uint32_t>(align_a),
                   al_c = static_cast<uint32_t>(align_c);
    LAMINA_CUBLAS_CHECK(cublasLtMatmulPreferenceSetAttribute(pref.p, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_A_BYTES,
                                                             &al_first, sizeof(al_first)));
    LAMINA_CUBLAS_CHECK(cublasLtMatmulPreferenceSetAttribute(pref.p, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_B_BYTES,
                                                             &al_second, sizeof(al_second)));
    LAMINA_CUBLAS_CHECK(
        cublasLtMatmulPreferenceSetAttribute(pref.p, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_C_BYTES, &al_c, sizeof(al_c)));
    LAMINA_CUBLAS_CHECK(
        cublasLtMatmulPreferenceSetAttribute(pref.p, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_D_BYTES, &al_c, sizeof(al_c)));
    cublasLtMatmulHeuristicResult_t results[kTuneCandidates] = {};
    int found = 0;
    // Batched products (the GEMM attention path's) keep the first choice: tuning them would need
    // scratch for every batch's output.
    const int wanted = autotune_ && s.batch == 1 ? kTuneCandidates : 1;
    // An epilogue cuBLASLt does not offer for these types may fail the query rather than return
    // no algorithm; both mean "none".
    const cublasStatus_t st = cublasLtMatmulAlgoGetHeuristic(handle_, desc.d, first.l, second.l, out.l, out.l, pref.p,
                                                             wanted, results, &found);
    if (st != CUBLAS_STATUS_NOT_SUPPORTED) LAMINA_CUBLAS_CHECK(st);
    LAMINA_CHECK(found > 0 || !required, "cuBLASLt has no algorithm for C[", s.m, ", ", s.n,
                 "] = op(A) op(B) with k = ", s.k, ", trans ", s.trans_a, "/", s.trans_b, ", ld ", s.lda, "/", s.ldb,
                 "/", s.ldc, ", alignment ", align_a, "/", align_b, "/", align_c, " bytes, batch ", s.batch,
                 ", output ", DTypeName(s.c_dtype));
    std::optional<cublasLtMatmulAlgo_t> chosen;
    if (found == 1) chosen = results[0].algo;
    if (found > 1) {
      chosen = Fastest(s, results, found, stream, [&](const cublasLtMatmulAlgo_t& algo, void* c) {
        return cublasLtMatmul(handle_, desc.d, &s.alpha, s.b, first.l, s.a, second.l, &s.beta, c, out.l, c, out.l,
                              &algo, workspace_.data(), kWorkspaceBytes, stream);
      });
    }
    it = algos_.emplace(key, chosen).first;
  }
  if (!it->second.has_value()) return false;
  const cublasStatus_t st = cublasLtMatmul(handle_, desc.d, &s.alpha, s.b, first.l, s.a, second.l, &s.beta, s.c, out.l,
                                           s.c, out.l, &*it->second, workspace_.data(), kWorkspaceBytes, stream);
  if (st != CUBLAS_STATUS_SUCCESS && !required) {  // refused at launch (nothing ran): the caller's fallback
    it->second.reset();
    return false;
  }
  LAMINA_CUBLAS_CHECK(st);
  return true;
}

template <typename Run>
cublasLtMatmulAlgo_t CublasLt::Fastest(const GemmSpec& s, const cublasLtMatmulHeuristicResult_t* candidates, int count,
                                       cudaStream_t stream, Run run) {
  constexpr int kRepeats = 3;
  void* c = s.c;
  Buffer scratch;  // C's shape, where the product accumulates into C
  if (s.beta != 0.0f) {
    absl::StatusOr<Buffer> b =
        Buffer::Allocate(Device::kCuda, static_cast<size_t>(s.m * s.ldc) * DTypeSize(s.c_dtype));
    if (!b.ok()) return candidates[0].algo;  // no room to tune: the heuristics' choice
    scratch = *std::move(b);
    c = scratch.data();
  }
  int best = 0;
  float best_ms = -1;
  for (int i = 0; i < count; ++i) {
    if (candidates[i].state != CUBLAS_STATUS_SUCCESS) continue;
    if (run(candidates[i].algo, c) != CUBLAS_STATUS_SUCCESS) continue;  // the warm-up; a refusal skips it
    LAMINA_CUDA_CHECK(cudaEventRecord(tune_start_, stream));
    for (int r = 0; r < kRepeats; ++r) LAMINA_CUBLAS_CHECK(run(candidates[i].algo, c));
    LAMINA_CUDA_CHECK(cudaEventRecord(tune_end_, stream));
    LAMINA_CUDA_CHECK(cudaEventSynchronize(tune_end_));
    float ms = 0;
    LAMINA_CUDA_CHECK(cudaEventElapsedTime(&ms, tune_start_, tune_end_));
    if (best_ms < 0 || ms < best_ms) {
      best = i;
      best_ms = ms;
    }
  }
  return candidates[best].algo;
}

}  // namespace lamina::cuda
