// The BERT encoder (Post-LN, Pre-LN or T-Fixup) with its MLM and classification heads, forward
// and backward written out op by op against a Backend. No autograd: the backward pass walks the
// forward in reverse and reads the activations the forward saved.
//
//   Post-LN:  h = LN(E);          x' = LN(x + Drop(Attn(x)));    x'' = LN(x' + Drop(FFN(x')))
//   Pre-LN:   h = LN(E);          x' = x + Drop(Attn(LN(x)));    x'' = x' + Drop(FFN(LN(x'))); final LN
//   T-Fixup:  h = E * sqrt(d);    x' = x + Drop(Attn(x));        x'' = x' + Drop(FFN(x'))
// (E = word + position + type embeddings, followed by dropout.)
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <vector>

#include "absl/status/statusor.h"
#include "core/buffer.h"
#include "model/backend.h"
#include "model/batch.h"
#include "model/config.h"
#include "model/param_layout.h"

namespace lamina {

struct ForwardOptions {
  bool training = false;       // dropout on
  uint64_t seed = 0;           // dropout seed
  int64_t step = 0;            // optimizer step: dropout streams differ per step
  bool compute_grad = false;   // prepare for Backward(): the loss gradient is computed in the forward
  float grad_scale = 1.0f;     // d(total loss)/d(sum of this batch's per-token losses)
  bool accuracy = false;       // also count correct predictions (one more pass over the logits)
};

// Told during BertModel::Backward() that every gradient at offsets >= `from` in grads() is final
// for this pass: the ops writing them have been enqueued on the backend's stream (not necessarily
// run). Called with decreasing `from`, the last time with 0. The layout puts the embeddings first
// and the heads last, so gradients complete from the end of the buffer backwards; the tied word
// embeddings are written twice and are final only at the end.
using GradReadyFn = std::function<void(int64_t from)>;

struct LossStats {
  double loss_sum = 0;    // sum of per-token (MLM) or per-example (classification) losses
  int64_t count = 0;      // predicted positions or examples
  int64_t correct = 0;    // when ForwardOptions::accuracy
  std::vector<int32_t> predictions;  // classification only: argmax per example
  std::vector<float> logits;         // classification only: [batch, num_labels]
};

class BertModel {
 public:
  // Allocates parameters (uninitialised), gradients and the compute copy on the backend.
  static absl::StatusOr<std::unique_ptr<BertModel>> Create(const BertConfig& config, const HeadOptions& heads,
                                                           Backend* backend);
  ~BertModel();

  const BertConfig& config() const { return config_; }
  const HeadOptions& heads() const { return heads_; }
  const ParamLayout& layout() const { return layout_; }
  Backend& backend() const { return *backend_; }

  // Flat buffers on the backend's device: f32 master parameters and gradients, and the
  // act_dtype() copy of the parameters the ops read (the same memory as params() when
  // act_dtype() is f32).
  TensorView params() const { return params_; }
  TensorView grads() const { return grads_; }
  TensorView compute_params() const { return compute_; }

  // Initialises parameters (model/init.h) and refreshes the compute copy.
  void Initialize(uint64_t seed);
  // Replaces all parameters with host values (layout order) and refreshes the compute copy.
  absl::Status LoadParams(const std::vector<float>& host);
  std::vector<float> ParamsToHost() const;
  std::vector<float> GradsToHost() const;
  // After parameters changed on the device other than through the optimizer.
  void RefreshComputeParams();
  void ZeroGrads();

  // MLM forward on batch.mlm_positions; with compute_grad, Backward() may follow.
  absl::StatusOr<LossStats> ForwardMlm(const EncoderBatch& batch, const ForwardOptions& options);
  // Classification forward on batch.labels (needs heads().num_labels > 0).
  absl::StatusOr<LossStats> ForwardClassify(const EncoderBatch& batch, const ForwardOptions& options);
  // Accumulates parameter gradients of the last forward (which had compute_grad) into grads(),
  // reporting progress to `ready` when given (gradient sync overlapped with the backward pass).
  void Backward(const GradReadyFn& ready = nullptr);
  // The logits of the last forward on the host: [positions, vocab] after ForwardMlm (fill-mask,
  // tests), [batch, labels] after ForwardClassify.
  std::vector<float> LogitsToHost() const;

  // The norm of each encoder layer's output after the last forward, as the root mean square over
  // the B*T positions of each position's L2 norm (padding included). Call it before Backward(),
  // which may reuse activation memory.
  std::vector<double> LayerOutputNorms() const;

  // Bytes of activation memory the last forward used, for reports.
  size_t activation_bytes() const { return arena_.peak(); }

 private:
  struct LayerActs;
  struct Acts;
  BertModel(const BertConfig& config, const HeadOptions& heads, Backend* backend);

  enum class Head { kNone, kMlm, kClassify };
  // Lays out every activation of the step in the arena and copies the batch's ids to the device.
  absl::Status PrepareBatch(const EncoderBatch& batch, Head head, int64_t head_rows, bool grad);
  void EncoderForward(const ForwardOptions& options);
  void EncoderBackward(const GradReadyFn& ready);
  // The first offset after the encoder layers' parameters (where the heads begin).
  int64_t LayersEnd() const;
  TensorView W(int64_t offset, Shape shape) const { return ParamView(compute_, offset, shape); }
  TensorView G(int64_t offset, Shape shape) const { return ParamView(grads_, offset, shape); }
  RngContext Rng(int64_t layer, int site, int64_t elems_per_sample) const;

  BertConfig config_;
  HeadOptions heads_;
  ParamLayout layout_;
  Backend* backend_;
  Buffer params_buf_, grads_buf_, compute_buf_;
  TensorView params_, grads_, compute_;
  Arena arena_;
  std::unique_ptr<Acts> acts_;
  ForwardOptions last_options_;
  Head last_head_ = Head::kNone;
};

}  // namespace lamina
