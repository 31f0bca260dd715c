// Where a training step's time goes, op by op: a Backend that forwards every call to another and,
// while recording, marks the start and the end of each op on the inner backend's StreamClock (CUDA
// events on the GPU). Each op is charged the device's time between its marks, and the time between
// one op's end and the next one's start (launch gaps, host work and waits, the device idle) goes to
// one row of its own: the whole step in the order the device ran it, the per-op breakdown `lamina
// bench train --profile_ops` prints where the GPU machines have no Nsight Systems. Outside a
// recording the calls only forward.
#pragma once

#include <map>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "model/backend.h"

namespace lamina {

// One kind of op call in a recording: the Backend method and what its operands were.
struct OpTime {
  std::string op;     // "LinearForward"
  std::string shape;  // "[32768, 768] x [3072, 768]^T, gelu"
  int64_t calls = 0;
  double ms = 0;
};

class ProfilingBackend final : public Backend {
 public:
  static constexpr const char* kBetweenOps = "(between ops)";
  explicit ProfilingBackend(std::unique_ptr<Backend> inner);

  // Starts a recording (a previous one's marks are dropped).
  void StartRecording();
  // Ends it: waits for the recorded ops and returns their times per (op, shape), largest first,
  // with a row named kBetweenOps for the time between them.
  std::vector<OpTime> StopRecording();
  Backend& inner() { return *inner_; }

  std::string name() const override { return inner_->name(); }
  Device device() const override { return inner_->device(); }
  DType act_dtype() const override { return inner_->act_dtype(); }
  void* native_stream() const override { return inner_->native_stream(); }
  absl::Status PrepareStep(const StepShape& shape) override { return inner_->PrepareStep(shape); }
  absl::Status PrepareOptimizer(std::span<const ParamSegment> segments, int64_t params) override {
    return inner_->PrepareOptimizer(segments, params);
  }
  std::unique_ptr<StreamClock> NewStreamClock() override { return inner_->NewStreamClock(); }
  void Synchronize() override { inner_->Synchronize(); }
  int64_t AttentionSavedElems(int64_t batch, int64_t heads, int64_t seq, int64_t head_dim) const override {
    return inner_->AttentionSavedElems(batch, heads, seq, head_dim);
  }

  void Zero(TensorView t) override;
  void CopyFromHost(const float* src, TensorView dst) override;
  void CopyToHost(TensorView src, float* dst) override;
  void CopyFromHostI32(const int32_t* src, TensorView dst) override;
  void Convert(TensorView src, TensorView dst) override;
  void EmbeddingForward(TensorView ids, TensorView type_ids, TensorView word, TensorView pos, TensorView type,
                        float scale, TensorView out) override;
  void EmbeddingBackward(TensorView ids, TensorView type_ids, TensorView dout, float scale, TensorView dword,
                         TensorView dpos, TensorView dtype) override;
  void LayerNormForward(TensorView x, TensorView gamma, TensorView beta, float eps, TensorView out, TensorView mean,
                        TensorView rstd) override;
  void AddLayerNormForward(TensorView a, TensorView b, float p, RngContext rng, TensorView gamma, TensorView beta,
                           float eps, TensorView sum, TensorView out, TensorView mean, TensorView rstd) override;
  void LayerNormBackward(TensorView dout, TensorView x, TensorView gamma, TensorView mean, TensorView rstd,
                         TensorView dx, bool accumulate, TensorView dgamma, TensorView dbeta, float p, RngContext rng,
                         TensorView dropped) override;
  void LinearForward(TensorView x, TensorView w, TensorView b, Activation act, TensorView pre_act,
                     TensorView out) override;
  void LinearBackward(TensorView dout, TensorView x, TensorView w, Activation act, TensorView pre_act, TensorView dx,
                      bool accumulate, TensorView dw, TensorView db) override;
  void LinearBackwardToPreActivation(TensorView dout, TensorView x, TensorView w, Activation input_act, TensorView pre,
                                     TensorView dpre, TensorView dw, TensorView db) override;
  void Gelu(TensorView x, TensorView out) override;
  void GeluBackward(TensorView dout, TensorView x, TensorView dx) override;
  void Tanh(TensorView x, TensorView out) override;
  void TanhBackward(TensorView dout, TensorView out, TensorView dx) override;
  void Dropout(TensorView x, float p, RngContext rng, TensorView out) override;
  void DropoutBackward(TensorView dout, float p, RngContext rng, TensorView dx) override;
  void AddDropout(TensorView a, TensorView b, float p, RngContext rng, TensorView out) override;
  void AttentionForward(TensorView qkv, TensorView key_mask, int64_t heads, float dropout_p, RngContext rng,
                        TensorView saved, TensorView out) override;
  void AttentionBackward(TensorView dout, TensorView qkv, TensorView key_mask, TensorView out, TensorView saved,
                         int64_t heads, float dropout_p, RngContext rng, TensorView dqkv) override;
  void GatherRows(TensorView x, TensorView index, TensorView out) override;
  void ScatterAddRows(TensorView dout, TensorView index, TensorView dx) override;
  void CrossEntropy(TensorView logits, int64_t classes, TensorView targets, float grad_scale, TensorView losses,
                    TensorView dlogits) override;
  void ArgMax(TensorView logits, int64_t classes, TensorView out) override;
  double SumSquares(TensorView x) override;
  void Scale(TensorView x, float s) override;
  void AdamWStep(TensorView params, TensorView grads, TensorView m, TensorView v, TensorView compute,
                 std::span<const ParamSegment> segments, const AdamWHyper& hyper) override;
  void LambMoments(TensorView params, TensorView grads, TensorView m, TensorView v,
                   std::span<const ParamSegment> segments, const AdamWHyper& hyper, TensorView norms) override;
  void LambUpdate(TensorView params, TensorView m, TensorView v, TensorView compute,
                  std::span<const ParamSegment> segments, const AdamWHyper& hyper, TensorView norms) override;

 private:
  // call() (the inner op); when recording, between two marks charged to (op, shape()).
  template <typename OpFn, typename ShapeFn>
  void Run(const char* op, OpFn call, ShapeFn shape);

  std::unique_ptr<Backend> inner_;
  std::unique_ptr<StreamClock> clock_;
  bool recording_ = false;
  int start_ = 0;
  std::map<std::pair<std::string, std::string>, int> keys_;  // (op, shape) -> index in names_
  std::vector<std::pair<std::string, std::string>> names_;
  struct Recorded {
    int key, start, end;  // index in names_, marks
  };
  std::vector<Recorded> calls_;  // in order
};

// The recording as a table: op, shape, calls and milliseconds per step (over `steps` steps), and
// each row's share of the total; the rows under 0.1% folded into one.
std::string FormatOpTimes(const std::vector<OpTime>& times, int steps);

}  // namespace lamina
