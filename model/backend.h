// The operations the encoder is made of. model/cpu/ implements them in float32 as the reference;
// model/cuda/ implements them with bf16 activations and fp32 accumulation, and is tested against
// the reference op by op.
//
// Conventions, the same for every implementation:
// - Tensors are row-major TensorViews on the backend's device. Activations and the compute copy of
//   the weights are in act_dtype(); gradients of parameters, losses and optimizer state are fp32.
// - "rows" means all leading dimensions together; a [B, T, H] activation is a [B*T, H] matrix.
// - Backward ops ACCUMULATE (+=) into parameter gradients, so micro-batches and tied weights add
//   up with no extra pass. Activation gradients are OVERWRITTEN unless the op takes an
//   `accumulate` flag and it is set.
// - Ops that draw random numbers take an RngContext; element i of the op's output uses stream
//   index rng.offset + i (see core/philox.h). Masks are recomputed in backward, never stored.
// - Ops are asynchronous on the backend's stream; only ops that return a host value synchronise.
// - Padded rows: the logits may be stored as [M, P] for M x N values, P >= N (the model rounds P
//   up to a multiple of 8, which keeps every row 16-byte aligned for the tensor-core GEMMs; with
//   BERT's 30522 classes the rows would otherwise be 4-byte aligned). LinearForward's out,
//   LinearBackward's dout and the logits of CrossEntropy and ArgMax may be padded: N is w's rows
//   or `classes`, and columns N..P-1 of each row are neither read nor written. Not with GELU.
#pragma once

#include <cstdint>
#include <memory>
#include <span>
#include <string>

#include "absl/status/statusor.h"
#include "core/buffer.h"
#include "core/philox.h"
#include "core/tensor.h"

namespace lamina {

// kGelu: GELU's erf form (BERT's); kGeluTanh: 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3))).
enum class Activation { kNone, kGelu, kGeluTanh };

// One tensor of the flat buffers as the optimizer sees it.
struct ParamSegment {
  int64_t offset = 0;
  int64_t size = 0;
  bool decay = true;
  // The tensor the segment belongs to, an index from 0. LAMB's trust ratio is per tensor, and a
  // tensor may be cut into several segments (a ZeRO shard holds pieces of tensors), so the norms
  // are summed per tensor, not per segment.
  int32_t tensor = 0;
};

// The largest shapes one forward (and, with `grad`, backward) pass of a model gives the ops; see
// Backend::PrepareStep.
struct StepShape {
  int64_t batch = 0, seq = 0;
  int64_t hidden = 0, ffn = 0, heads = 0, type_vocab = 0;
  int64_t head_rows = 0;     // rows the head runs on: the masked positions, or one [CLS] row per sequence
  int64_t head_classes = 0;  // the head's outputs per row: the vocabulary, or the labels
  bool grad = false;
};

struct AdamWHyper {
  float lr = 1e-4f;
  float beta1 = 0.9f;
  float beta2 = 0.999f;
  float eps = 1e-6f;
  float weight_decay = 0.01f;
  int64_t step = 1;         // 1-based, for bias correction
  float grad_scale = 1.0f;  // multiplies every gradient first (global-norm clipping)
};

// Marks in the order of a backend's ops, for timing them (model/op_profile.h). Mark() stands after
// every op enqueued so far and returns its index; ElapsedMs waits for both marks and returns the
// milliseconds between them; Clear() forgets the marks. The CPU's ops have run when they return,
// so there a mark is the time now; the GPU records an event on its stream.
class StreamClock {
 public:
  virtual ~StreamClock() = default;
  virtual int Mark() = 0;
  virtual double ElapsedMs(int from, int to) = 0;
  virtual void Clear() = 0;
};

class Backend {
 public:
  virtual ~Backend() = default;
  virtual std::string name() const = 0;
  virtual Device device() const = 0;
  virtual DType act_dtype() const = 0;

  // ---- memory ----
  absl::StatusOr<Buffer> Allocate(size_t bytes) const { return Buffer::Allocate(device(), bytes); }
  virtual void Zero(TensorView t) = 0;
  // Copies between a host and a backend tensor of the same shape, converting between f32 and
  // act_dtype() where they differ.
  virtual void CopyFromHost(const float* src, TensorView dst) = 0;
  virtual void CopyToHost(TensorView src, float* dst) = 0;
  virtual void CopyFromHostI32(const int32_t* src, TensorView dst) = 0;
  // dst = src converted to dst.dtype (f32 master weights -> compute copy, same shape).
  virtual void Convert(TensorView src, TensorView dst) = 0;
  virtual void Synchronize() = 0;
  // The stream the ops run on (a cudaStream_t for the CUDA backend; null on the CPU), so that a
  // communicator can order its collectives after the ops with events instead of a host wait.
  virtual void* native_stream() const { return nullptr; }
  // Device memory the ops keep for their intermediates, allocated before they run: ops return no
  // Status, so running out of memory is reported here, as a Status naming what was allocated, its
  // size and the free memory. A model calls PrepareStep before each pass (it is free once the
  // memory is there) and an optimizer PrepareOptimizer once with its segments; ops called without
  // them (kernel tests) allocate on first use and abort if they cannot. No-ops on the CPU.
  virtual absl::Status PrepareStep(const StepShape& /*shape*/) { return absl::OkStatus(); }
  virtual absl::Status PrepareOptimizer(std::span<const ParamSegment> /*segments*/, int64_t /*params*/) {
    return absl::OkStatus();
  }
  // A clock of this backend's op order (the host's clock for a backend whose ops are synchronous).
  virtual std::unique_ptr<StreamClock> NewStreamClock();

  // ---- embeddings ----
  // out[n] = (word[ids[n]] + pos[n % T] + type[type_ids[n]]) * scale, for n over B*T rows.
  // ids, type_ids: i32 [B, T]; word [V, H], pos [P, H], type [TV, H]; out [B*T, H].
  virtual void EmbeddingForward(TensorView ids, TensorView type_ids, TensorView word, TensorView pos, TensorView type,
                                float scale, TensorView out) = 0;
  // dword/dpos/dtype += the gradient; deterministic (same result every run).
  virtual void EmbeddingBackward(TensorView ids, TensorView type_ids, TensorView dout, float scale, TensorView dword,
                                 TensorView dpos, TensorView dtype) = 0;

  // ---- layer norm ----
  // out = (x - mean) * rstd * gamma + beta per row; mean, rstd: f32 [rows] saved for backward.
  virtual void LayerNormForward(TensorView x, TensorView gamma, TensorView beta, float eps, TensorView out,
                                TensorView mean, TensorView rstd) = 0;
  // sum = a + Dropout(b, p, rng); out = LayerNorm(sum). The branch's dropout and the residual add
  // fused with the norm that follows them (one pass instead of three). sum may alias a.
  virtual void AddLayerNormForward(TensorView a, TensorView b, float p, RngContext rng, TensorView gamma,
                                   TensorView beta, float eps, TensorView sum, TensorView out, TensorView mean,
                                   TensorView rstd) = 0;
  // dx (= or += if accumulate) from dout; dgamma, dbeta +=. With `dropped` non-empty, also
  // dropped = DropoutBackward(dx, p, rng) of the final (accumulated) dx in the same pass: the
  // gradient of the branch whose dropout fed the norm's input (AddLayerNormForward's p and rng).
  // dropped may alias dout; p = 0 with an empty `dropped` is the plain backward.
  virtual void LayerNormBackward(TensorView dout, TensorView x, TensorView gamma, TensorView mean, TensorView rstd,
                                 TensorView dx, bool accumulate, TensorView dgamma, TensorView dbeta, float p,
                                 RngContext rng, TensorView dropped) = 0;

  // ---- dense layers ----
  // out = act(x W^T + b). x [M, K], w [N, K], b [N] or empty; out [M, N] (or padded rows with
  // kNone). With a GELU, pre_act [M, N] receives x W^T + b for the backward pass.
  virtual void LinearForward(TensorView x, TensorView w, TensorView b, Activation act, TensorView pre_act,
                             TensorView out) = 0;
  // dout is the gradient w.r.t. out (padded rows as out's); with a GELU it is overwritten by the
  // gradient w.r.t. pre_act.
  // dx [M, K] (= or += if accumulate; empty to skip); dw [N, K] +=; db [N] += (empty to skip).
  virtual void LinearBackward(TensorView dout, TensorView x, TensorView w, Activation act, TensorView pre_act,
                              TensorView dx, bool accumulate, TensorView dw, TensorView db) = 0;
  // LinearBackward of a layer whose input is x = input_act(pre) (a GELU; the FFN's second layer):
  // dpre [M, K] = (dout W) * input_act'(pre) instead of dx. dw and db as LinearBackward. The bias
  // gradient of the layer that made pre is that layer's LinearBackward's, from dpre. The GPU
  // computes the tanh GELU's derivative in the dx product's epilogue.
  virtual void LinearBackwardToPreActivation(TensorView dout, TensorView x, TensorView w, Activation input_act,
                                             TensorView pre, TensorView dpre, TensorView dw, TensorView db) = 0;

  // ---- elementwise ----
  virtual void Gelu(TensorView x, TensorView out) = 0;                          // erf form
  virtual void GeluBackward(TensorView dout, TensorView x, TensorView dx) = 0;  // dx may alias dout
  virtual void Tanh(TensorView x, TensorView out) = 0;
  virtual void TanhBackward(TensorView dout, TensorView out, TensorView dx) = 0;  // from the forward output
  // Inverted dropout: out = keep ? x / (1 - p) : 0. out may alias x. p == 0 copies.
  virtual void Dropout(TensorView x, float p, RngContext rng, TensorView out) = 0;
  // out = a + Dropout(b, p, rng), the mask Dropout draws: a residual add with its branch's dropout
  // in one pass (T-Fixup's, which has no norm to fuse them with). p == 0 adds. out may alias a or b.
  virtual void AddDropout(TensorView a, TensorView b, float p, RngContext rng, TensorView out) = 0;
  virtual void DropoutBackward(TensorView dout, float p, RngContext rng, TensorView dx) = 0;

  // ---- attention ----
  // Multi-head self-attention core on a fused projection. qkv [B*T, 3H] = [q | k | v], head h at
  // columns h*D..(h+1)*D of each part; key_mask i32 [B, T], 1 = attend, 0 = padding (masked
  // keys get probability exactly 0). Scores are scaled by 1/sqrt(D); attention dropout with p and
  // rng keeps key j of query i by AttentionKeepBits8 (core/philox.h) of row (b*heads + h)*T + i,
  // rng.offset counting rows (first_sample * heads * T). out [B*T, H].
  // `saved` is the implementation's own record for backward, AttentionSavedElems(B, heads, T, D)
  // elements of act_dtype(): the reference keeps the softmax probabilities, the CUDA GEMM path
  // the scores, the dropped probabilities and one f32 logsumexp per query row, the fused CUDA
  // kernels the logsumexps and the dropout decisions as bits. Backward must get the forward's
  // dropout_p and rng.
  virtual int64_t AttentionSavedElems(int64_t batch, int64_t heads, int64_t seq, int64_t head_dim) const {
    (void)head_dim;
    return batch * heads * seq * seq;
  }
  virtual void AttentionForward(TensorView qkv, TensorView key_mask, int64_t heads, float dropout_p, RngContext rng,
                                TensorView saved, TensorView out) = 0;
  // out: the forward pass's output (the fused kernels need dO . O per row).
  virtual void AttentionBackward(TensorView dout, TensorView qkv, TensorView key_mask, TensorView out,
                                 TensorView saved, int64_t heads, float dropout_p, RngContext rng,
                                 TensorView dqkv) = 0;

  // ---- gathering rows (MLM head on masked positions, pooler on [CLS]) ----
  // out[i] = x[index[i]]; index i32 [N].
  virtual void GatherRows(TensorView x, TensorView index, TensorView out) = 0;
  // dx[index[i]] += dout[i]; indices are distinct.
  virtual void ScatterAddRows(TensorView dout, TensorView index, TensorView dx) = 0;

  // ---- loss ----
  // Softmax cross-entropy per row over `classes` classes. logits [N, classes] or padded rows, in
  // act_dtype; targets i32 [N] (-1 = ignore). losses f32 [N]: -log softmax(logits)[target], 0
  // where ignored. When dlogits is not empty (the same shape as logits) it receives
  // (softmax - onehot(target)) * grad_scale (zero rows where ignored); it may alias logits.
  // Computed in fp32 whatever the input dtype.
  virtual void CrossEntropy(TensorView logits, int64_t classes, TensorView targets, float grad_scale,
                            TensorView losses, TensorView dlogits) = 0;
  // Row-wise argmax (i32 [N]) over the first `classes` columns of logits, for accuracy.
  virtual void ArgMax(TensorView logits, int64_t classes, TensorView out) = 0;

  // ---- reductions and optimizer (f32 flat buffers) ----
  // Sum of squares of x, returned to the host (synchronises).
  virtual double SumSquares(TensorView x) = 0;
  virtual void Scale(TensorView x, float s) = 0;
  // One AdamW step over every segment: decoupled weight decay where segment.decay, bias
  // correction with hyper.step. params, grads, m, v: f32 of the same shape. When `compute` is
  // not empty (a low-precision copy of params) it is refreshed from the updated params.
  virtual void AdamWStep(TensorView params, TensorView grads, TensorView m, TensorView v, TensorView compute,
                         std::span<const ParamSegment> segments, const AdamWHyper& hyper) = 0;
  // One LAMB step (You et al. 2019) is two ops: the Adam direction r = mhat / (sqrt(vhat) + eps)
  // + decay, scaled per tensor by the trust ratio ||p|| / ||r|| (1 where either norm is 0).
  // Between them a sharded optimizer sums `norms` over the ranks, since each rank holds only
  // pieces of the tensors.
  //
  // LambMoments updates m and v and sets norms (f32 [2 * tensors], tensors > every
  // segment.tensor) to norms[2t] = sum of p^2 and norms[2t+1] = sum of r^2 over the segments of
  // tensor t; slots with no segment get 0.
  virtual void LambMoments(TensorView params, TensorView grads, TensorView m, TensorView v,
                           std::span<const ParamSegment> segments, const AdamWHyper& hyper, TensorView norms) = 0;
  // Recomputes r from the updated moments and applies p -= lr * trust(tensor) * r.
  virtual void LambUpdate(TensorView params, TensorView m, TensorView v, TensorView compute,
                          std::span<const ParamSegment> segments, const AdamWHyper& hyper, TensorView norms) = 0;
};

// The number of tensors the segments name (1 + the largest segment.tensor), checking that
// `norms` has room for their two sums each (Backend::LambMoments). Aborts on a caller's bug.
int64_t LambTensorCount(std::span<const ParamSegment> segments, const TensorView& norms);

// The row pitch P of a matrix argument that may have padded rows (see the conventions above):
// t must be [rows, P] with P >= cols, and P == cols unless `padding_allowed`. Aborts on a
// caller's bug.
int64_t RowPitch(const TensorView& t, int64_t rows, int64_t cols, bool padding_allowed, const char* what);

// How the CUDA backend computes the attention core.
enum class AttentionKernel {
  // The default: kFlash on a GPU (faster at every BERT-base shape measured, and less memory;
  // docs/performance.md), the reference on the CPU.
  kAuto,
  // Per-head cuBLASLt products around one softmax kernel; keeps the [T, T] scores and dropped
  // probabilities in bf16.
  kGemm,
  // Fused tiled kernels (model/cuda/flash_attention.cu): scores stay in registers, one
  // logsumexp per row and the dropout decisions as bits are kept, backward recomputes. Head dims that are multiples of 8 up to 128;
  // other heads fall back to kGemm.
  kFlash,
};
// "auto", "gemm" or "flash"; an error naming `key` otherwise.
absl::StatusOr<AttentionKernel> ParseAttentionKernel(const std::string& name, const std::string& key);
const char* AttentionKernelName(AttentionKernel k);

struct BackendOptions {
  AttentionKernel attention = AttentionKernel::kAuto;
  // CUDA: time up to 8 of cuBLASLt's candidate algorithms on each product's first call and keep the
  // fastest, instead of its heuristics' first choice. The choice rests on timings, so two processes
  // may choose differently and their results differ in the last bits: off by default.
  bool gemm_autotune = false;
};

// The float32 CPU reference backend.
std::unique_ptr<Backend> MakeCpuBackend();

// The CUDA backend on the current device, or an error when this build or machine has no GPU.
absl::StatusOr<std::unique_ptr<Backend>> MakeCudaBackend(const BackendOptions& options = {});

// The backend `device` names: "cpu", "cuda", or "auto" (the GPU when this build has CUDA and
// one is present, else the CPU). Options that only the GPU has are an error on the CPU: there
// attention must be kAuto (gemm and flash name CUDA kernels).
absl::StatusOr<std::unique_ptr<Backend>> MakeBackend(const std::string& device, const BackendOptions& options = {});

}  // namespace lamina
