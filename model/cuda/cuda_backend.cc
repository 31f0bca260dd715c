// The CUDA Backend: bf16 activations and weight copy, fp32 accumulation, parameter gradients and
// optimizer state. Ops enqueue kernels (model/cuda/*.cu) and cuBLASLt products on the backend's
// one stream; only CopyToHost/CopyFromHost and SumSquares wait for the device.
#include <algorithm>
#include <cmath>
#include <cstring>
#include <memory>
#include <vector>

#include "absl/strings/str_cat.h"
#include "core/bf16.h"
#include "core/status.h"
#include "model/backend.h"
#include "model/cuda/attention_gemm.h"
#include "model/cuda/common_host.h"
#include "model/cuda/cublaslt.h"
#include "model/cuda/cuda_check.h"
#include "model/cuda/kernels.h"
#include "model/cuda/optimizer_segments.h"

namespace lamina {
namespace {

using cuda::GemmSpec;
using cuda::Ref;

// A device operand of an op: the view must live on the GPU (or be empty where the op allows it).
Ref R(const TensorView& t, const char* what) {
  LAMINA_CHECK(t.empty() || t.device == Device::kCuda, what, " is not a CUDA tensor: ", t.ToString());
  return Ref{t.data, t.dtype};
}

float* F32(const TensorView& t, const char* what) {
  LAMINA_CHECK(t.device == Device::kCuda && t.dtype == DType::kF32, what, " must be a CUDA f32 tensor, got ",
               t.ToString());
  return t.as<float>();
}

int32_t* I32(const TensorView& t, const char* what) {
  LAMINA_CHECK(t.device == Device::kCuda && t.dtype == DType::kI32, what, " must be a CUDA i32 tensor, got ",
               t.ToString());
  return t.as<int32_t>();
}

const uint16_t* Bf16(const TensorView& t, const char* what) {
  LAMINA_CHECK(t.device == Device::kCuda && t.dtype == DType::kBF16, what, " must be a CUDA bf16 tensor, got ",
               t.ToString());
  return t.as<uint16_t>();
}

void CheckNumel(const TensorView& t, int64_t n, const char* what) {
  LAMINA_CHECK(t.numel() == n, what, " has ", t.numel(), " elements, expected ", n, ": ", t.ToString());
}

void CheckMatrix(const TensorView& t, int64_t rows, int64_t cols, const char* what) {
  LAMINA_CHECK(t.rows() == rows && t.cols() == cols, what, " must be [", rows, ", ", cols, "], got ", t.ToString());
}

// C[m, n] = op(A) op(B) on whole row-major matrices: each leading dimension is the operand's
// stored row length (A is [m, k], or [k, m] when trans_a; B is [k, n], or [n, k] when trans_b).
GemmSpec DenseGemm(bool trans_a, bool trans_b, int64_t m, int64_t n, int64_t k, const void* a, const void* b, void* c,
                   DType c_dtype) {
  return {.trans_a = trans_a, .trans_b = trans_b, .m = m, .n = n, .k = k, .a = a, .lda = trans_a ? m : k, .b = b,
          .ldb = trans_b ? k : n, .c = c, .ldc = n, .c_dtype = c_dtype};
}

// Marks as events recorded on the backend's stream; the events are made as needed and kept for
// the next recording.
class EventClock final : public StreamClock {
 public:
  explicit EventClock(cudaStream_t stream) : stream_(stream) {}
  ~EventClock() override {
    for (cudaEvent_t e : events_) cudaEventDestroy(e);
  }
  int Mark() override {
    if (used_ == events_.size()) {
      cudaEvent_t e = nullptr;
      LAMINA_CUDA_CHECK(cudaEventCreate(&e));
      events_.push_back(e);
    }
    LAMINA_CUDA_CHECK(cudaEventRecord(events_[used_], stream_));
    return static_cast<int>(used_++);
  }
  double ElapsedMs(int from, int to) override {
    LAMINA_CHECK(from >= 0 && to >= 0 && static_cast<size_t>(std::max(from, to)) < used_, "marks ", from, " and ", to,
                 " of ", used_);
    LAMINA_CUDA_CHECK(cudaEventSynchronize(events_[to]));
    float ms = 0;
    LAMINA_CUDA_CHECK(cudaEventElapsedTime(&ms, events_[from], events_[to]));
    return ms;
  }
  void Clear() override { used_ = 0; }

 private:
  cudaStream_t stream_;
  std::vector<cudaEvent_t> events_;
  size_t used_ = 0;
};

class CudaBackend final : public Backend {
 public:
  // "auto" is the fused kernels here, so the name and every later choice see the one that runs.
  explicit CudaBackend(const BackendOptions& options)
      : options_{.attention = options.attention == AttentionKernel::kAuto ? AttentionKernel::kFlash
                                                                           : options.attention,
                 .gemm_autotune = options.gemm_autotune} {}
  ~CudaBackend() override {
    if (stream_ != nullptr) {
      cudaStreamSynchronize(stream_);
      cudaStreamDestroy(stream_);
    }
  }

  absl::Status Init() {
    cudaError_t err = cudaStreamCreateWithFlags(&stream_, cudaStreamNonBlocking);
    if (err != cudaSuccess) return absl::InternalError(absl::StrCat("cudaStreamCreate: ", cudaGetErrorString(err)));
    RETURN_IF_ERROR(gemm_.Init(options_.gemm_autotune));
    ASSIGN_OR_RETURN(sum_result_, Buffer::Allocate(Device::kCuda, sizeof(double)));
    // The GPU's name ("cuda: NVIDIA H100 80GB HBM3, flash attention") lets reports look up its
    // peak for MFU, and says which attention kernels ran and whether the products were tuned.
    int device = 0;
    cudaDeviceProp prop;
    if (cudaGetDevice(&device) == cudaSuccess && cudaGetDeviceProperties(&prop, device) == cudaSuccess)
      name_ = absl::StrCat("cuda: ", prop.name);
    absl::StrAppend(&name_, ", ", AttentionKernelName(options_.attention), " attention");
    if (options_.gemm_autotune) absl::StrAppend(&name_, ", tuned GEMMs");
    return absl::OkStatus();
  }

  std::string name() const override { return name_; }
  std::unique_ptr<StreamClock> NewStreamClock() override { return std::make_unique<EventClock>(stream_); }
  absl::Status PrepareStep(const StepShape& s) override {
    size_t need = cuda::SumSquaresScratchBytes();
    if (s.grad) {
      // Every op of a backward pass that takes scratch, at the shapes the model gives it.
      const int64_t tokens = s.batch * s.seq;
      auto take = [&need](size_t bytes) { need = std::max(need, bytes); };
      take(cuda::EmbeddingBackwardScratchBytes(tokens, s.hidden, s.type_vocab));
      take(cuda::LayerNormBackwardScratchBytes(tokens, s.hidden));
      take(cuda::LayerNormBackwardScratchBytes(s.head_rows, s.hidden));
      for (int64_t cols : {s.hidden, 3 * s.hidden, s.ffn}) take(cuda::ColumnSumScratchBytes(tokens, cols));
      take(cuda::ColumnSumScratchBytes(s.head_rows, s.hidden));
      take(cuda::ColumnSumScratchBytes(s.head_rows, s.head_classes));
      if (s.heads > 0) take(AttentionBackwardScratchBytes(Dims{s.batch, s.seq, s.hidden, s.hidden / s.heads}, s.heads));
    }
    prepared_ = true;
    return ReserveScratch(need);
  }

  absl::Status PrepareOptimizer(std::span<const ParamSegment> segments, int64_t params) override {
    ASSIGN_OR_RETURN(device_segments_, segment_table_.Upload(segments, params, stream_));
    max_segment_ = segment_table_.max_segment();
    prepared_ = true;
    return ReserveScratch(std::max(cuda::SumSquaresScratchBytes(),
                                   cuda::LambScratchBytes(static_cast<int>(segments.size()), max_segment_)));
  }

  void* native_stream() const override { return stream_; }
  Device device() const override { return Device::kCuda; }
  DType act_dtype() const override { return DType::kBF16; }

  // ---- memory ----
  void Zero(TensorView t) override {
    R(t, "Zero");
    if (t.numel() > 0) LAMINA_CUDA_CHECK(cudaMemsetAsync(t.data, 0, t.bytes(), stream_));
  }

  void CopyFromHost(const float* src, TensorView dst) override {
    R(dst, "CopyFromHost dst");
    const int64_t n = dst.numel();
    if (n == 0) return;
    if (dst.dtype == DType::kF32) {
      LAMINA_CUDA_CHECK(cudaMemcpyAsync(dst.data, src, dst.bytes(), cudaMemcpyHostToDevice, stream_));
    } else {
      LAMINA_CHECK(dst.dtype == DType::kBF16, "CopyFromHost into ", dst.ToString());
      staging_.resize(n);
      for (int64_t i = 0; i < n; ++i) staging_[i] = FloatToBf16Bits(src[i]);
      LAMINA_CUDA_CHECK(cudaMemcpyAsync(dst.data, staging_.data(), dst.bytes(), cudaMemcpyHostToDevice, stream_));
    }
    LAMINA_CUDA_CHECK(cudaStreamSynchronize(stream_));  // the host source may go away on return
  }

  void CopyToHost(TensorView src, float* dst) override {
    R(src, "CopyToHost src");
    const int64_t n = src.numel();
    if (n == 0) return;
    if (src.dtype == DType::kF32) {
      LAMINA_CUDA_CHECK(cudaMemcpyAsync(dst, src.data, src.bytes(), cudaMemcpyDeviceToHost, stream_));
      LAMINA_CUDA_CHECK(cudaStreamSynchronize(stream_));
      return;
    }
    LAMINA_CHECK(src.dtype == DType::kBF16, "CopyToHost from ", src.ToString());
    staging_.resize(n);
    LAMINA_CUDA_CHECK(cudaMemcpyAsync(staging_.data(), src.data, src.bytes(), cudaMemcpyDeviceToHost, stream_));
    LAMINA_CUDA_CHECK(cudaStreamSynchronize(stream_));
    for (int64_t i = 0; i < n; ++i) dst[i] = Bf16BitsToFloat(staging_[i]);
  }

  void CopyFromHostI32(const int32_t* src, TensorView dst) override {
    I32(dst, "CopyFromHostI32 dst");
    if (dst.numel() == 0) return;
    LAMINA_CUDA_CHECK(cudaMemcpyAsync(dst.data, src, dst.bytes(), cudaMemcpyHostToDevice, stream_));
    LAMINA_CUDA_CHECK(cudaStreamSynchronize(stream_));
  }

  void Convert(TensorView src, TensorView dst) override {
    CheckNumel(dst, src.numel(), "Convert dst");
    cuda::LaunchConvert(R(src, "Convert src"), R(dst, "Convert dst"), src.numel(), stream_);
  }

  void Synchronize() override { LAMINA_CUDA_CHECK(cudaStreamSynchronize(stream_)); }

  // ---- embeddings ----
  void EmbeddingForward(TensorView ids, TensorView type_ids, TensorView word, TensorView pos, TensorView type,
                        float scale, TensorView out) override {
    const int64_t seq = CheckEmbedding(ids, type_ids, word, pos, type);
    CheckMatrix(out, ids.numel(), word.cols(), "out");
    cuda::LaunchEmbeddingForward(I32(ids, "ids"), I32(type_ids, "type_ids"), R(word, "word"), R(pos, "pos"),
                                 R(type, "type"), scale, R(out, "out"), ids.numel(), seq, word.cols(), stream_);
  }

  void EmbeddingBackward(TensorView ids, TensorView type_ids, TensorView dout, float scale, TensorView dword,
                         TensorView dpos, TensorView dtype) override {
    const int64_t seq = CheckEmbedding(ids, type_ids, dword, dpos, dtype);
    const int64_t rows = ids.numel(), hidden = dword.cols();
    CheckMatrix(dout, rows, hidden, "dout");
    const size_t bytes = cuda::EmbeddingBackwardScratchBytes(rows, hidden, dtype.rows());
    cuda::LaunchEmbeddingBackward(I32(ids, "ids"), I32(type_ids, "type_ids"), R(dout, "dout"), scale,
                                  F32(dword, "dword"), F32(dpos, "dpos"), F32(dtype, "dtype"), rows, seq, hidden,
                                  dword.rows(), dtype.rows(), Scratch(bytes), bytes, stream_);
  }

  // ---- layer norm ----
  void LayerNormForward(TensorView x, TensorView gamma, TensorView beta, float eps, TensorView out, TensorView mean,
                        TensorView rstd) override {
    CheckNorm(x, gamma, beta, out, mean, rstd);
    cuda::LaunchLayerNormForward(R(x, "x"), Ref{}, 0.0f, RngContext{}, R(gamma, "gamma"), R(beta, "beta"), eps, Ref{},
                                 R(out, "out"), F32(mean, "mean"), F32(rstd, "rstd"), x.rows(), x.cols(), stream_);
  }

  void AddLayerNormForward(TensorView a, TensorView b, float p, RngContext rng, TensorView gamma, TensorView beta,
                           float eps, TensorView sum, TensorView out, TensorView mean, TensorView rstd) override {
    CheckNorm(a, gamma, beta, out, mean, rstd);
    CheckMatrix(b, a.rows(), a.cols(), "b");
    CheckMatrix(sum, a.rows(), a.cols(), "sum");
    LAMINA_CHECK(a.dtype == b.dtype && a.dtype == sum.dtype, "AddLayerNorm dtypes ", a.ToString(), " ", b.ToString(),
                 " ", sum.ToString());
    LAMINA_CHECK(p >= 0.0f && p < 1.0f, "dropout probability ", p);
    cuda::LaunchLayerNormForward(R(a, "a"), R(b, "b"), p, rng, R(gamma, "gamma"), R(beta, "beta"), eps, R(sum, "sum"),
                                 R(out, "out"), F32(mean, "mean"), F32(rstd, "rstd"), a.rows(), a.cols(), stream_);
  }

  void LayerNormBackward(TensorView dout, TensorView x, TensorView gamma, TensorView mean, TensorView rstd,
                         TensorView dx, bool accumulate, TensorView dgamma, TensorView dbeta, float p, RngContext rng,
                         TensorView dropped) override {
    const int64_t rows = x.rows(), cols = x.cols();
    CheckMatrix(dout, rows, cols, "dout");
    CheckMatrix(dx, rows, cols, "dx");
    LAMINA_CHECK(p >= 0.0f && p < 1.0f, "dropout probability ", p);
    if (!dropped.empty()) {
      CheckMatrix(dropped, rows, cols, "dropped");
      LAMINA_CHECK(dropped.dtype == dx.dtype, "LayerNormBackward dropped ", dropped.ToString(), " dx ", dx.ToString());
    }
    CheckNumel(gamma, cols, "gamma");
    CheckNumel(dgamma, cols, "dgamma");
    CheckNumel(dbeta, cols, "dbeta");
    CheckNumel(mean, rows, "mean");
    CheckNumel(rstd, rows, "rstd");
    void* scratch = Scratch(cuda::LayerNormBackwardScratchBytes(rows, cols));
    cuda::LaunchLayerNormBackward(R(dout, "dout"), R(x, "x"), R(gamma, "gamma"), F32(mean, "mean"), F32(rstd, "rstd"),
                                  R(dx, "dx"), accumulate, F32(dgamma, "dgamma"), F32(dbeta, "dbeta"), p, rng,
                                  R(dropped, "dropped"), rows, cols, scratch, stream_);
  }

  // ---- dense layers ----
  void LinearForward(TensorView x, TensorView w, TensorView b, Activation act, TensorView pre_act,
                     TensorView out) override {
    const int64_t m = x.rows(), k = x.cols(), n = w.rows();
    CheckMatrix(w, n, k, "w");
    const int64_t pitch = RowPitch(out, m, n, act == Activation::kNone, "out");
    if (!b.empty()) {
      Bf16(b, "b");
      CheckNumel(b, n, "b");
    }
    const TensorView& y = act != Activation::kNone ? pre_act : out;
    if (act != Activation::kNone) CheckMatrix(pre_act, m, n, "pre_act");
    // The tanh GELU is cuBLASLt's own epilogue: out and pre_act from the product in one pass.
    // Rows of a width that is not a multiple of 8 take the separate GELU kernel, as the erf form does.
    if (EpilogueGelu(act, n, out, pre_act)) {
      GemmSpec s = DenseGemm(false, true, m, n, k, Bf16(x, "x"), Bf16(w, "w"), out.data, DType::kBF16);
      s.bias = b.empty() ? nullptr : b.data;
      s.gelu = cuda::GemmGelu::kForward;
      s.gelu_input = pre_act.data;
      gemm_.Gemm(s, stream_);
      return;
    }
    // y = x W^T (+ b)
    GemmSpec s = DenseGemm(false, true, m, n, k, Bf16(x, "x"), Bf16(w, "w"), R(y, "out").data, y.dtype);
    s.ldc = pitch;  // padded rows (the logits) stay 16-byte aligned for the tensor-core kernels
    s.bias = b.empty() ? nullptr : b.data;
    gemm_.Gemm(s, stream_);
    if (act != Activation::kNone) cuda::LaunchGelu(R(pre_act, "pre_act"), R(out, "out"), m * n, FormOf(act), stream_);
  }

  void LinearBackward(TensorView dout, TensorView x, TensorView w, Activation act, TensorView pre_act, TensorView dx,
                      bool accumulate, TensorView dw, TensorView db) override {
    LinearBackwardImpl(dout, x, w, act, pre_act, dx, accumulate, dw, db, /*dx_gelu_input=*/{});
  }

  void LinearBackwardToPreActivation(TensorView dout, TensorView x, TensorView w, Activation input_act, TensorView pre,
                                     TensorView dpre, TensorView dw, TensorView db) override {
    LAMINA_CHECK(input_act != Activation::kNone, "LinearBackwardToPreActivation needs the input's activation");
    const int64_t m = x.rows(), k = x.cols();
    CheckMatrix(pre, m, k, "pre");
    CheckMatrix(dpre, m, k, "dpre");
    if (EpilogueGelu(input_act, k, dpre, pre)) {
      // dpre straight from the dx product's epilogue.
      LinearBackwardImpl(dout, x, w, Activation::kNone, {}, dpre, false, dw, db, /*dx_gelu_input=*/pre);
    } else {
      // dx, then the GELU backward in place.
      LinearBackwardImpl(dout, x, w, Activation::kNone, {}, dpre, false, dw, db, /*dx_gelu_input=*/{});
      cuda::LaunchGeluBackward(R(dpre, "dpre"), R(pre, "pre"), R(dpre, "dpre"), m * k, FormOf(input_act), stream_);
    }
  }

  // ---- elementwise ----
  void Gelu(TensorView x, TensorView out) override {
    CheckNumel(out, x.numel(), "out");
    cuda::LaunchGelu(R(x, "x"), R(out, "out"), x.numel(), cuda::GeluForm::kErf, stream_);
  }
  void GeluBackward(TensorView dout, TensorView x, TensorView dx) override {
    CheckNumel(dout, x.numel(), "dout");
    CheckNumel(dx, x.numel(), "dx");
    cuda::LaunchGeluBackward(R(dout, "dout"), R(x, "x"), R(dx, "dx"), x.numel(), cuda::GeluForm::kErf, stream_);
  }
  void Tanh(TensorView x, TensorView out) override {
    CheckNumel(out, x.numel(), "out");
    cuda::LaunchTanh(R(x, "x"), R(out, "out"), x.numel(), stream_);
  }
  void TanhBackward(TensorView dout, TensorView out, TensorView dx) override {
    CheckNumel(dout, out.numel(), "dout");
    CheckNumel(dx, out.numel(), "dx");
    cuda::LaunchTanhBackward(R(dout, "dout"), R(out, "out"), R(dx, "dx"), out.numel(), stream_);
  }
  void Dropout(TensorView x, float p, RngContext rng, TensorView out) override {
    CheckNumel(out, x.numel(), "out");
    LAMINA_CHECK(p >= 0.0f && p < 1.0f, "dropout probability ", p);
    cuda::LaunchDropout(R(x, "x"), p, rng, R(out, "out"), x.numel(), stream_);
  }
  void DropoutBackward(TensorView dout, float p, RngContext rng, TensorView dx) override { Dropout(dout, p, rng, dx); }
  void AddDropout(TensorView a, TensorView b, float p, RngContext rng, TensorView out) override {
    CheckNumel(b, a.numel(), "b");
    CheckNumel(out, a.numel(), "out");
    LAMINA_CHECK(p >= 0.0f && p < 1.0f, "dropout probability ", p);
    cuda::LaunchAddDropout(R(a, "a"), R(b, "b"), p, rng, R(out, "out"), a.numel(), stream_);
  }

  // ---- attention ----
  int64_t AttentionSavedElems(int64_t batch, int64_t heads, int64_t seq, int64_t head_dim) const override {
    if (UsesFlash(head_dim))
      return static_cast<int64_t>(cuda::FlashAttentionSavedBytes({batch, heads, seq, head_dim}) / sizeof(uint16_t));
    return cuda::AttentionSoftmaxSaved::Bytes(batch * heads * seq, seq) / static_cast<int64_t>(sizeof(uint16_t));
  }

  void AttentionForward(TensorView qkv, TensorView key_mask, int64_t heads, float dropout_p, RngContext rng,
                        TensorView saved, TensorView out) override {
    const Dims d = CheckAttention(qkv, key_mask, heads, saved, dropout_p);
    CheckMatrix(out, d.batch * d.seq, d.hidden, "out");
    Bf16(out, "out");
    if (d.seq == 0 || d.head_dim == 0) return;
    if (UsesFlash(d.head_dim)) {
      cuda::LaunchFlashAttentionForward(FlashShapeOf(d, heads), Bf16(qkv, "qkv"), key_mask.as<int32_t>(), dropout_p,
                                        rng, static_cast<uint16_t*>(out.data), saved.data, stream_);
      return;
    }
    cuda::GemmAttentionForward(gemm_, GemmShapeOf(d, heads), Bf16(qkv, "qkv"), key_mask.as<int32_t>(), dropout_p, rng,
                               SoftmaxSaved(saved, d, heads), static_cast<uint16_t*>(out.data), stream_);
  }

  // Both paths read the forward pass's dropout decisions from `saved`: no draws, so no rng.
  void AttentionBackward(TensorView dout, TensorView qkv, TensorView key_mask, TensorView out, TensorView saved,
                         int64_t heads, float dropout_p, RngContext /*rng*/, TensorView dqkv) override {
    const Dims d = CheckAttention(qkv, key_mask, heads, saved, dropout_p);
    CheckMatrix(dout, d.batch * d.seq, d.hidden, "dout");
    CheckMatrix(dqkv, d.batch * d.seq, 3 * d.hidden, "dqkv");
    Bf16(dout, "dout");
    Bf16(dqkv, "dqkv");
    if (d.seq == 0 || d.head_dim == 0) return;
    if (UsesFlash(d.head_dim)) {
      CheckMatrix(out, d.batch * d.seq, d.hidden, "out");
      const cuda::FlashShape shape = FlashShapeOf(d, heads);
      cuda::LaunchFlashAttentionBackward(shape, Bf16(dout, "dout"), Bf16(qkv, "qkv"), key_mask.as<int32_t>(),
                                         Bf16(out, "out"), saved.data, dropout_p, static_cast<uint16_t*>(dqkv.data),
                                         Scratch(AttentionBackwardScratchBytes(d, heads)), stream_);
      return;
    }
    uint16_t* grad = static_cast<uint16_t*>(Scratch(AttentionBackwardScratchBytes(d, heads)));
    cuda::GemmAttentionBackward(gemm_, GemmShapeOf(d, heads), Bf16(dout, "dout"), Bf16(qkv, "qkv"),
                                key_mask.as<int32_t>(), dropout_p, SoftmaxSaved(saved, d, heads), grad,
                                static_cast<uint16_t*>(dqkv.data), stream_);
  }

  // ---- rows ----
  void GatherRows(TensorView x, TensorView index, TensorView out) override {
    const int64_t n = index.numel(), cols = x.cols();
    CheckMatrix(out, n, cols, "out");
    cuda::LaunchGatherRows(R(x, "x"), I32(index, "index"), R(out, "out"), n, cols, stream_);
  }
  void ScatterAddRows(TensorView dout, TensorView index, TensorView dx) override {
    const int64_t n = index.numel(), cols = dx.cols();
    CheckMatrix(dout, n, cols, "dout");
    cuda::LaunchScatterAddRows(R(dout, "dout"), I32(index, "index"), R(dx, "dx"), n, cols, stream_);
  }

  // ---- loss ----
  void CrossEntropy(TensorView logits, int64_t classes, TensorView targets, float grad_scale, TensorView losses,
                    TensorView dlogits) override {
    const int64_t rows = logits.rows();
    const int64_t pitch = RowPitch(logits, rows, classes, true, "logits");
    CheckNumel(targets, rows, "targets");
    CheckNumel(losses, rows, "losses");
    if (!dlogits.empty()) CheckMatrix(dlogits, rows, pitch, "dlogits");
    cuda::LaunchCrossEntropy(R(logits, "logits"), I32(targets, "targets"), grad_scale, F32(losses, "losses"),
                             R(dlogits, "dlogits"), rows, classes, pitch, stream_);
  }
  void ArgMax(TensorView logits, int64_t classes, TensorView out) override {
    const int64_t pitch = RowPitch(logits, logits.rows(), classes, true, "logits");
    CheckNumel(out, logits.rows(), "out");
    cuda::LaunchArgMax(R(logits, "logits"), I32(out, "out"), logits.rows(), classes, pitch, stream_);
  }

  // ---- reductions and optimizers ----
  double SumSquares(TensorView x) override {
    double* result = static_cast<double*>(sum_result_.data());
    cuda::LaunchSumSquares(R(x, "x"), x.numel(), Scratch(cuda::SumSquaresScratchBytes()), result, stream_);
    double host = 0;
    LAMINA_CUDA_CHECK(cudaMemcpyAsync(&host, result, sizeof(double), cudaMemcpyDeviceToHost, stream_));
    LAMINA_CUDA_CHECK(cudaStreamSynchronize(stream_));
    return host;
  }

  void Scale(TensorView x, float s) override { cuda::LaunchScale(F32(x, "x"), s, x.numel(), stream_); }

  void AdamWStep(TensorView params, TensorView grads, TensorView m, TensorView v, TensorView compute,
                 std::span<const ParamSegment> segments, const AdamWHyper& hyper) override {
    const cuda::OptimizerHyper h = CheckOptimizer(params, grads, m, v, compute, segments, hyper);
    cuda::LaunchAdamW(F32(params, "params"), F32(grads, "grads"), F32(m, "m"), F32(v, "v"), R(compute, "compute"),
                      device_segments_, static_cast<int>(segments.size()), max_segment_, h, stream_);
  }

  void LambMoments(TensorView params, TensorView grads, TensorView m, TensorView v,
                   std::span<const ParamSegment> segments, const AdamWHyper& hyper, TensorView norms) override {
    const cuda::OptimizerHyper h = CheckOptimizer(params, grads, m, v, {}, segments, hyper);
    const int64_t tensors = LambTensorCount(segments, norms);
    Zero(norms);  // slots beyond the tensors (and every slot when there are no segments) read 0
    const int count = static_cast<int>(segments.size());
    cuda::LaunchLambMoments(F32(params, "params"), F32(grads, "grads"), F32(m, "m"), F32(v, "v"), device_segments_,
                            count, max_segment_, tensors, h, Scratch(cuda::LambScratchBytes(count, max_segment_)),
                            F32(norms, "norms"), stream_);
  }

  void LambUpdate(TensorView params, TensorView m, TensorView v, TensorView compute,
                  std::span<const ParamSegment> segments, const AdamWHyper& hyper, TensorView norms) override {
    const cuda::OptimizerHyper h = CheckOptimizer(params, params, m, v, compute, segments, hyper);
    LambTensorCount(segments, norms);
    cuda::LaunchLambUpdate(F32(params, "params"), F32(m, "m"), F32(v, "v"), R(compute, "compute"), device_segments_,
                           static_cast<int>(segments.size()), max_segment_, h, F32(norms, "norms"), stream_);
  }

 private:
  // Whether a GELU of this form over rows of width n runs in a GEMM epilogue (cuBLASLt's is the
  // tanh form) on these bf16 matrices: rows of a width that is not a multiple of 8, or views not
  // 16-byte aligned, take the separate GELU kernels, as the erf form always does.
  static bool EpilogueGelu(Activation act, int64_t n, const TensorView& c, const TensorView& gelu_input) {
    return act == Activation::kGeluTanh && n % 8 == 0 && c.dtype == DType::kBF16 &&
           gelu_input.dtype == DType::kBF16 && c.device == Device::kCuda && gelu_input.device == Device::kCuda &&
           cuda::Aligned16({c.data, gelu_input.data});
  }

  // LinearBackward; with dx_gelu_input non-empty, dx = (dpre W) * gelu_tanh'(dx_gelu_input) from
  // the product's epilogue (EpilogueGelu must hold for dx and it).
  void LinearBackwardImpl(TensorView dout, TensorView x, TensorView w, Activation act, TensorView pre_act,
                          TensorView dx, bool accumulate, TensorView dw, TensorView db, TensorView dx_gelu_input) {
    const int64_t m = x.rows(), k = x.cols(), n = w.rows();
    CheckMatrix(w, n, k, "w");
    CheckMatrix(dw, n, k, "dw");
    const int64_t pitch = RowPitch(dout, m, n, act == Activation::kNone, "dout");
    if (!db.empty()) CheckNumel(db, n, "db");
    // dW += dpre^T x, accumulated in fp32
    GemmSpec dw_product = DenseGemm(true, false, n, k, m, Bf16(dout, "dout"), Bf16(x, "x"), F32(dw, "dw"), DType::kF32);
    dw_product.lda = pitch;
    dw_product.beta = 1.0f;
    bool dw_done = false;
    if (act != Activation::kNone) {
      // dpre over dout, and the bias gradient's column sums in the same pass.
      CheckMatrix(pre_act, m, n, "pre_act");
      cuda::LaunchGeluBackwardColumnSum(R(dout, "dout"), R(pre_act, "pre_act"), m, n, FormOf(act),
                                        db.empty() ? nullptr : F32(db, "db"),
                                        Scratch(cuda::ColumnSumScratchBytes(m, n)), stream_);
    } else if (!db.empty() && m > 0) {
      // The bias gradient from the dW product's epilogue, into scratch (the epilogue writes; db
      // accumulates); where cuBLASLt has no such product, the column sums' own pass over dout.
      // ColumnSumScratchBytes(m, n) >= n floats, so PrepareStep's sizing holds either way.
      float* sums = static_cast<float*>(Scratch(cuda::ColumnSumScratchBytes(m, n)));
      GemmSpec with_sums = dw_product;
      with_sums.bias_grad = sums;
      dw_done = gemm_.GemmWithBiasGrad(with_sums, stream_);
      if (dw_done) {
        cuda::LaunchAdd(R(db, "db"), cuda::Ref{sums, DType::kF32}, R(db, "db"), n, stream_);
      } else {
        cuda::LaunchColumnSumAccumulate(R(dout, "dout"), m, n, pitch, F32(db, "db"), sums, stream_);
      }
    }
    if (!dx.empty()) {
      CheckMatrix(dx, m, k, "dx");
      // dx = dpre W
      GemmSpec s = DenseGemm(false, false, m, k, n, Bf16(dout, "dout"), Bf16(w, "w"), R(dx, "dx").data, dx.dtype);
      s.lda = pitch;
      s.beta = accumulate ? 1.0f : 0.0f;
      if (!dx_gelu_input.empty()) {
        LAMINA_CHECK(!accumulate, "a GELU backward epilogue writes dx");
        s.gelu = cuda::GemmGelu::kBackward;
        s.gelu_input = dx_gelu_input.data;
      }
      gemm_.Gemm(s, stream_);
    }
    if (m > 0 && !dw_done) gemm_.Gemm(dw_product, stream_);
  }

  struct Dims {
    int64_t batch, seq, hidden, head_dim;
  };

  // Device memory for an op's intermediates, reused by every op (they run in stream order);
  // PrepareStep and PrepareOptimizer size it before the ops ask.
  absl::Status ReserveScratch(size_t bytes) {
    if (bytes <= scratch_.bytes()) return absl::OkStatus();
    LAMINA_CUDA_CHECK(cudaStreamSynchronize(stream_));  // the old scratch may still be in use
    scratch_ = Buffer();
    absl::StatusOr<Buffer> b = Buffer::Allocate(Device::kCuda, bytes + bytes / 4);
    if (!b.ok()) return Annotate(b.status(), "the CUDA backend's scratch for the ops' intermediates");
    scratch_ = *std::move(b);
    return absl::OkStatus();
  }
  void* Scratch(size_t bytes) {
    // Once a model or optimizer has prepared, every op's need is known in advance: a larger one
    // is a shape PrepareStep does not foresee, which would turn a Status back into an abort.
    LAMINA_CHECK(!prepared_ || bytes <= scratch_.bytes(), "an op needs ", bytes, " bytes of scratch, more than the ",
                 scratch_.bytes(), " PrepareStep/PrepareOptimizer reserved: they miss an op's shape");
    const absl::Status reserved = ReserveScratch(bytes);
    LAMINA_CHECK(reserved.ok(), reserved.ToString());
    return scratch_.data();
  }

  size_t AttentionBackwardScratchBytes(const Dims& d, int64_t heads) const {
    if (UsesFlash(d.head_dim)) return cuda::FlashAttentionBackwardScratchBytes(FlashShapeOf(d, heads));
    return d.batch * heads * d.seq * d.seq * sizeof(uint16_t);  // the softmax gradient, one matrix per head
  }

  int64_t CheckEmbedding(const TensorView& ids, const TensorView& type_ids, const TensorView& word,
                         const TensorView& pos, const TensorView& type) {
    LAMINA_CHECK(ids.rank() == 2, "ids must be [B, T], got ", ids.ToString());
    LAMINA_CHECK(type_ids.shape == ids.shape, "type_ids ", type_ids.ToString(), " vs ids ", ids.ToString());
    LAMINA_CHECK(pos.cols() == word.cols() && type.cols() == word.cols(), "embedding widths ", word.ToString(), " ",
                 pos.ToString(), " ", type.ToString());
    LAMINA_CHECK(ids.dim(1) <= pos.rows(), "sequence length ", ids.dim(1), " exceeds ", pos.rows(), " positions");
    return ids.dim(1);
  }

  void CheckNorm(const TensorView& x, const TensorView& gamma, const TensorView& beta, const TensorView& out,
                 const TensorView& mean, const TensorView& rstd) {
    CheckNumel(gamma, x.cols(), "gamma");
    CheckNumel(beta, x.cols(), "beta");
    CheckMatrix(out, x.rows(), x.cols(), "out");
    CheckNumel(mean, x.rows(), "mean");
    CheckNumel(rstd, x.rows(), "rstd");
  }

  // The GEMM path's parts of `saved` (bf16, AttentionSavedElems long).
  static cuda::AttentionSoftmaxSaved SoftmaxSaved(const TensorView& saved, const Dims& d, int64_t heads) {
    return cuda::AttentionSoftmaxSaved::In(saved.data, d.batch * heads * d.seq, d.seq);
  }
  static cuda::GemmAttentionShape GemmShapeOf(const Dims& d, int64_t heads) {
    return cuda::GemmAttentionShape{d.batch, d.seq, heads, d.head_dim};
  }

  static cuda::GeluForm FormOf(Activation act) {
    return act == Activation::kGeluTanh ? cuda::GeluForm::kTanh : cuda::GeluForm::kErf;
  }

  bool UsesFlash(int64_t head_dim) const {
    return options_.attention == AttentionKernel::kFlash && cuda::FlashAttentionSupports(head_dim);
  }
  static cuda::FlashShape FlashShapeOf(const Dims& d, int64_t heads) {
    return cuda::FlashShape{d.batch, heads, d.seq, d.head_dim};
  }

  Dims CheckAttention(const TensorView& qkv, const TensorView& key_mask, int64_t heads, const TensorView& saved,
                      float dropout_p) {
    Bf16(qkv, "qkv");
    I32(key_mask, "key_mask");
    Bf16(saved, "saved");
    LAMINA_CHECK(key_mask.rank() == 2, "key_mask must be [B, T], got ", key_mask.ToString());
    LAMINA_CHECK(heads > 0 && qkv.cols() % (3 * heads) == 0, "qkv ", qkv.ToString(), " does not split into 3 x ", heads,
                 " heads");
    Dims d{key_mask.dim(0), key_mask.dim(1), qkv.cols() / 3, qkv.cols() / 3 / heads};
    CheckMatrix(qkv, d.batch * d.seq, 3 * d.hidden, "qkv");
    CheckNumel(saved, AttentionSavedElems(d.batch, heads, d.seq, d.head_dim), "saved");
    LAMINA_CHECK(dropout_p >= 0.0f && dropout_p < 1.0f, "attention dropout probability ", dropout_p);
    return d;
  }

  // Checks the buffers, uploads the segment table when it changed (model/cuda/optimizer_segments.h)
  // and returns the step's constants.
  cuda::OptimizerHyper CheckOptimizer(const TensorView& params, const TensorView& grads, const TensorView& m,
                                      const TensorView& v, const TensorView& compute,
                                      std::span<const ParamSegment> segments, const AdamWHyper& hyper) {
    const int64_t n = params.numel();
    CheckNumel(grads, n, "grads");
    CheckNumel(m, n, "m");
    CheckNumel(v, n, "v");
    if (!compute.empty()) CheckNumel(compute, n, "compute");
    LAMINA_CHECK(hyper.step >= 1, "optimizer step ", hyper.step, " must be 1-based");
    const absl::StatusOr<const cuda::DeviceSegment*> table = segment_table_.Upload(segments, n, stream_);
    LAMINA_CHECK(table.ok(), table.status().ToString());
    device_segments_ = *table;
    max_segment_ = segment_table_.max_segment();
    return cuda::DeviceHyper(hyper);
  }

  cudaStream_t stream_ = nullptr;
  std::string name_ = "cuda";
  cuda::CublasLt gemm_;
  Buffer scratch_;
  bool prepared_ = false;  // PrepareStep or PrepareOptimizer has run (see Scratch)
  Buffer sum_result_;
  cuda::DeviceSegmentTable segment_table_;
  const cuda::DeviceSegment* device_segments_ = nullptr;  // of the last CheckOptimizer
  int64_t max_segment_ = 0;
  std::vector<uint16_t> staging_;
  const BackendOptions options_;
};

}  // namespace

absl::StatusOr<std::unique_ptr<Backend>> MakeCudaBackend(const BackendOptions& options) {
  int count = 0;
  const cudaError_t err = cudaGetDeviceCount(&count);
  if (err != cudaSuccess || count == 0) {
    cudaGetLastError();  // clear the sticky "no device" error
    return absl::FailedPreconditionError(absl::StrCat(
        "no usable CUDA device: ", err != cudaSuccess ? cudaGetErrorString(err) : "the device count is 0"));
  }
  auto backend = std::make_unique<CudaBackend>(options);
  RETURN_IF_ERROR(backend->Init());
  return std::unique_ptr<Backend>(std::move(backend));
}

}  // namespace lamina
