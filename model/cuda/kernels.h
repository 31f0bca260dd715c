// Launchers of the CUDA backend's kernels. Plain C++ (no Abseil) so that both nvcc and the host
// compiler read it. Every launcher takes the stream it runs on and checks its launch; none
// synchronises. Element types are passed at run time and dispatched inside (f32 or bf16).
#pragma once

#include <cuda_runtime.h>

#include <cstddef>
#include <cstdint>

#include "core/dtype.h"
#include "core/philox.h"

namespace lamina::cuda {

// GELU's two forms (model/cpu/gelu.h): BERT's erf form and the tanh approximation.
enum class GeluForm { kErf, kTanh };

// A device pointer with its element type.
struct Ref {
  void* data = nullptr;
  DType dtype = DType::kF32;
};

// ---- elementwise (n elements) ----
void LaunchConvert(Ref src, Ref dst, int64_t n, cudaStream_t stream);
void LaunchGelu(Ref x, Ref out, int64_t n, GeluForm form, cudaStream_t stream);
void LaunchGeluBackward(Ref dout, Ref x, Ref dx, int64_t n, GeluForm form, cudaStream_t stream);
void LaunchTanh(Ref x, Ref out, int64_t n, cudaStream_t stream);
void LaunchTanhBackward(Ref dout, Ref out, Ref dx, int64_t n, cudaStream_t stream);
void LaunchAdd(Ref a, Ref b, Ref out, int64_t n, cudaStream_t stream);
// out = keep(i) ? x / (1 - p) : 0 with DropoutKeep(rng, i, p); also dropout's backward.
void LaunchDropout(Ref x, float p, RngContext rng, Ref out, int64_t n, cudaStream_t stream);
// out = a + LaunchDropout's (b, p, rng), in one pass (p = 0: a + b).
void LaunchAddDropout(Ref a, Ref b, float p, RngContext rng, Ref out, int64_t n, cudaStream_t stream);
void LaunchScale(float* x, float s, int64_t n, cudaStream_t stream);

// ---- embeddings ----
void LaunchEmbeddingForward(const int32_t* ids, const int32_t* type_ids, Ref word, Ref pos, Ref type, float scale,
                            Ref out, int64_t rows, int64_t seq, int64_t hidden, cudaStream_t stream);
size_t EmbeddingBackwardScratchBytes(int64_t rows, int64_t hidden, int64_t type_vocab);
// Deterministic: word rows are grouped by a stable radix sort of the ids and each group is summed
// by one block in a fixed order (row_sums.cuh); position and token-type rows likewise.
void LaunchEmbeddingBackward(const int32_t* ids, const int32_t* type_ids, Ref dout, float scale, float* dword,
                             float* dpos, float* dtype, int64_t rows, int64_t seq, int64_t hidden, int64_t vocab,
                             int64_t type_vocab, void* scratch, size_t scratch_bytes, cudaStream_t stream);

// ---- layer norm ----
// With b.data set: sum = a + dropout(b) (p and rng as LaunchDropout's; stored in sum's dtype) and
// the norm is of the stored sum.
void LaunchLayerNormForward(Ref a, Ref b, float p, RngContext rng, Ref gamma, Ref beta, float eps, Ref sum, Ref out,
                            float* mean, float* rstd, int64_t rows, int64_t hidden, cudaStream_t stream);
size_t LayerNormBackwardScratchBytes(int64_t rows, int64_t hidden);
// dx (= or += when accumulate), dgamma and dbeta +=; with dropped.data set, also dropped =
// dropout(dx) with p and rng (dropped in dx's dtype; it may alias dout).
void LaunchLayerNormBackward(Ref dout, Ref x, Ref gamma, const float* mean, const float* rstd, Ref dx, bool accumulate,
                             float* dgamma, float* dbeta, float p, RngContext rng, Ref dropped, int64_t rows,
                             int64_t hidden, void* scratch, cudaStream_t stream);

// ---- column sums (bias gradients) ----
size_t ColumnSumScratchBytes(int64_t rows, int64_t cols);
// out[c] += sum over rows of x[r, c], summed in a fixed order; x's rows start every `pitch` >= cols
// elements.
void LaunchColumnSumAccumulate(Ref x, int64_t rows, int64_t cols, int64_t pitch, float* out, void* scratch,
                               cudaStream_t stream);
// dout = dout * GELU'(pre) in place ([rows, cols], dense), and out[c] += the column sums of the
// result (the bias gradient, ColumnSumScratchBytes of scratch) in the same pass; with out null,
// the GELU backward alone.
void LaunchGeluBackwardColumnSum(Ref dout, Ref pre, int64_t rows, int64_t cols, GeluForm form, float* out,
                                 void* scratch, cudaStream_t stream);
// out[c] += scale * (the sum over chunks, in a fixed order, of partial[chunk * cols + c]).
void LaunchChunkFinalize(const float* partial, float scale, float* out, int64_t chunks, int64_t cols,
                         cudaStream_t stream);

// ---- attention softmax of the GEMM path (rows = batch * heads * seq rows of seq scores each) ----
// What the forward pass keeps for backward, in one buffer (the backend's bf16 `saved`), each part
// from a 16-byte boundary: the unscaled scores and the dropped probabilities, bf16 [rows, seq]
// each; one f32 logsumexp per row; and the dropout decisions, KeepWords(seq) words per row (word
// 4 i + k, bit l: column 128 i + 4 l + k kept), so that the backward pass does not draw again.
struct AttentionSoftmaxSaved {
  uint16_t* scores;
  uint16_t* dropped;
  float* lse;
  uint32_t* keep_bits;

  LAMINA_HD static int64_t KeepWords(int64_t seq) { return (seq + 127) / 128 * 4; }
  static int64_t Bytes(int64_t rows, int64_t seq) { return Offsets(rows, seq).end; }
  static AttentionSoftmaxSaved In(void* saved, int64_t rows, int64_t seq) {
    char* base = static_cast<char*>(saved);
    const Layout at = Offsets(rows, seq);
    return {reinterpret_cast<uint16_t*>(base), reinterpret_cast<uint16_t*>(base + at.dropped),
            reinterpret_cast<float*>(base + at.lse), reinterpret_cast<uint32_t*>(base + at.keep_bits)};
  }

 private:
  struct Layout {
    int64_t dropped, lse, keep_bits, end;  // byte offsets
  };
  static Layout Offsets(int64_t rows, int64_t seq) {
    const auto round16 = [](int64_t bytes) { return (bytes + 15) / 16 * 16; };
    Layout at;
    at.dropped = round16(rows * seq * 2);
    at.lse = 2 * at.dropped;
    at.keep_bits = at.lse + round16(rows * 4);
    at.end = at.keep_bits + rows * KeepWords(seq) * 4;
    return at;
  }
};
// From saved.scores (unscaled q.k): lse = log sum over unmasked keys of exp(scale * scores) per
// row (+inf for a row without any), saved.dropped = dropout(P), P = exp(scale * s - lse) (masked
// keys exactly 0), with element index row * seq + j, and its decisions in saved.keep_bits (p > 0).
void LaunchAttentionSoftmax(AttentionSoftmaxSaved saved, const int32_t* key_mask, float scale, int64_t batch,
                            int64_t heads, int64_t seq, float p, RngContext rng, cudaStream_t stream);
// ddropped: bf16 gradient w.r.t. the dropped probabilities. Writes dscores = scale * dS in bf16,
// which may be ddropped itself; the dropout decisions come from the forward pass's saved bits.
void LaunchAttentionSoftmaxBackward(const uint16_t* ddropped, AttentionSoftmaxSaved saved, const int32_t* key_mask,
                                    float scale, int64_t batch, int64_t heads, int64_t seq, float p, uint16_t* dscores,
                                    cudaStream_t stream);

// ---- fused (flash) attention, model/cuda/flash_attention.cu ----
struct FlashShape {
  int64_t batch, heads, seq, head_dim;
  // Rows per warp of the kernels' own side (queries forward and for dQ, keys for dK/dV): 16 or 32
  // (two mma row tiles sharing each shared-memory B fragment, for more registers; head dims over
  // 64 keep 16; flash_attention.cuh). The results are the same bits either way.
  int warp_rows = 16;
  // With 16 rows per warp, the dK/dV kernel holds its K and V fragments in registers for the whole
  // walk over 32-query steps, instead of reading them at every 64-query step (head dims up to 64;
  // the same bits either way).
  bool hold_key_fragments = false;
};
// Head dims the fused kernels take: multiples of 8 up to 128.
bool FlashAttentionSupports(int64_t head_dim);
// What the forward pass keeps for backward (16-byte aligned): each query row's log2-domain
// logsumexp, and the dropout keep bits it drew (flash_attention.cuh, SavedLayout).
size_t FlashAttentionSavedBytes(const FlashShape& s);
// qkv [B*T, 3H] bf16 as in Backend::AttentionForward; out [B*T, H] bf16.
void LaunchFlashAttentionForward(const FlashShape& s, const uint16_t* qkv, const int32_t* key_mask, float p,
                                 RngContext rng, uint16_t* out, void* saved, cudaStream_t stream);
size_t FlashAttentionBackwardScratchBytes(const FlashShape& s);
// out and saved from the forward pass, with the same p; writes every element of dqkv.
void LaunchFlashAttentionBackward(const FlashShape& s, const uint16_t* dout, const uint16_t* qkv,
                                  const int32_t* key_mask, const uint16_t* out, const void* saved, float p,
                                  uint16_t* dqkv, void* scratch, cudaStream_t stream);

// ---- rows ----
void LaunchGatherRows(Ref x, const int32_t* index, Ref out, int64_t n, int64_t cols, cudaStream_t stream);
void LaunchScatterAddRows(Ref dout, const int32_t* index, Ref dx, int64_t n, int64_t cols, cudaStream_t stream);

// ---- loss ----
// n rows of `vocab` classes, one every `pitch` >= vocab elements (padded rows, backend.h).
// dlogits.data may be null (no gradient) or equal logits.data (in place).
void LaunchCrossEntropy(Ref logits, const int32_t* targets, float grad_scale, float* losses, Ref dlogits, int64_t n,
                        int64_t vocab, int64_t pitch, cudaStream_t stream);
void LaunchArgMax(Ref logits, int32_t* out, int64_t n, int64_t vocab, int64_t pitch, cudaStream_t stream);

// ---- reductions and optimizers ----
size_t SumSquaresScratchBytes();
// *result (device) = sum of x^2 in double, in a fixed order whatever the device.
void LaunchSumSquares(Ref x, int64_t n, void* scratch, double* result, cudaStream_t stream);

struct DeviceSegment {
  int64_t offset;
  int64_t size;
  int32_t decay;
  int32_t tensor;  // LAMB norms slot (ParamSegment::tensor)
};

struct OptimizerHyper {
  float lr, beta1, beta2, eps, weight_decay, grad_scale;
  float bias_correction1, bias_correction2;  // 1 - beta^step
};

// segments: device array of num_segments; compute.data may be null.
void LaunchAdamW(float* params, const float* grads, float* m, float* v, Ref compute, const DeviceSegment* segments,
                 int num_segments, int64_t max_segment, const OptimizerHyper& h, cudaStream_t stream);
// LAMB in two launches (Backend::LambMoments / LambUpdate): norms is f32 [2 * num_tensors].
size_t LambScratchBytes(int num_segments, int64_t max_segment);
void LaunchLambMoments(const float* params, const float* grads, float* m, float* v, const DeviceSegment* segments,
                       int num_segments, int64_t max_segment, int64_t num_tensors, const OptimizerHyper& h,
                       void* scratch, float* norms, cudaStream_t stream);
void LaunchLambUpdate(float* params, const float* m, const float* v, Ref compute, const DeviceSegment* segments,
                      int num_segments, int64_t max_segment, const OptimizerHyper& h, const float* norms,
                      cudaStream_t stream);

}  // namespace lamina::cuda
