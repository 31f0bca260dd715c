// The float32 CPU reference implementation of Backend (model/backend.h).
//
// Every op is a plain single-threaded loop over host memory, written for clarity: this is what
// the CUDA kernels are tested against. Matrix products go through CBLAS (OpenBLAS, which may use
// its own threads). Reductions that decide accuracy (row means, softmax sums, norms) accumulate
// in double. Each op family lives in its own file with its forward and backward side by side:
// memory.cc, embedding.cc, gather.cc, layernorm.cc, linear.cc, elementwise.cc, attention.cc,
// loss.cc, optimizer.cc.
#pragma once

#include <span>
#include <string>
#include <vector>

#include "model/backend.h"

namespace lamina {

class CpuBackend final : public Backend {
 public:
  std::string name() const override { return "cpu"; }
  Device device() const override { return Device::kCpu; }
  DType act_dtype() const override { return DType::kF32; }

  // memory.cc
  void Zero(TensorView t) override;
  void CopyFromHost(const float* src, TensorView dst) override;
  void CopyToHost(TensorView src, float* dst) override;
  void CopyFromHostI32(const int32_t* src, TensorView dst) override;
  void Convert(TensorView src, TensorView dst) override;
  void Synchronize() override {}

  // embedding.cc
  void EmbeddingForward(TensorView ids, TensorView type_ids, TensorView word, TensorView pos, TensorView type,
                        float scale, TensorView out) override;
  void EmbeddingBackward(TensorView ids, TensorView type_ids, TensorView dout, float scale, TensorView dword,
                         TensorView dpos, TensorView dtype) override;

  // gather.cc
  void GatherRows(TensorView x, TensorView index, TensorView out) override;
  void ScatterAddRows(TensorView dout, TensorView index, TensorView dx) override;

  // layernorm.cc
  void LayerNormForward(TensorView x, TensorView gamma, TensorView beta, float eps, TensorView out, TensorView mean,
                        TensorView rstd) override;
  void AddLayerNormForward(TensorView a, TensorView b, float p, RngContext rng, TensorView gamma, TensorView beta,
                           float eps, TensorView sum, TensorView out, TensorView mean, TensorView rstd) override;
  void LayerNormBackward(TensorView dout, TensorView x, TensorView gamma, TensorView mean, TensorView rstd,
                         TensorView dx, bool accumulate, TensorView dgamma, TensorView dbeta, float p,
                         RngContext rng, TensorView dropped) override;

  // linear.cc
  void LinearForward(TensorView x, TensorView w, TensorView b, Activation act, TensorView pre_act,
                     TensorView out) override;
  void LinearBackward(TensorView dout, TensorView x, TensorView w, Activation act, TensorView pre_act, TensorView dx,
                      bool accumulate, TensorView dw, TensorView db) override;
  void LinearBackwardToPreActivation(TensorView dout, TensorView x, TensorView w, Activation input_act, TensorView pre,
                                     TensorView dpre, TensorView dw, TensorView db) override;

  // elementwise.cc
  void Gelu(TensorView x, TensorView out) override;
  void GeluBackward(TensorView dout, TensorView x, TensorView dx) override;
  void Tanh(TensorView x, TensorView out) override;
  void TanhBackward(TensorView dout, TensorView out, TensorView dx) override;
  void Dropout(TensorView x, float p, RngContext rng, TensorView out) override;
  void AddDropout(TensorView a, TensorView b, float p, RngContext rng, TensorView out) override;
  void DropoutBackward(TensorView dout, float p, RngContext rng, TensorView dx) override;

  // attention.cc
  void AttentionForward(TensorView qkv, TensorView key_mask, int64_t heads, float dropout_p, RngContext rng,
                        TensorView saved, TensorView out) override;
  void AttentionBackward(TensorView dout, TensorView qkv, TensorView key_mask, TensorView out,
                         TensorView saved, int64_t heads,
                         float dropout_p, RngContext rng, TensorView dqkv) override;

  // loss.cc
  void CrossEntropy(TensorView logits, int64_t classes, TensorView targets, float grad_scale, TensorView losses,
                    TensorView dlogits) override;
  void ArgMax(TensorView logits, int64_t classes, TensorView out) override;

  // optimizer.cc
  double SumSquares(TensorView x) override;
  void Scale(TensorView x, float s) override;
  void AdamWStep(TensorView params, TensorView grads, TensorView m, TensorView v, TensorView compute,
                 std::span<const ParamSegment> segments, const AdamWHyper& hyper) override;
  void LambMoments(TensorView params, TensorView grads, TensorView m, TensorView v,
                   std::span<const ParamSegment> segments, const AdamWHyper& hyper, TensorView norms) override;
  void LambUpdate(TensorView params, TensorView m, TensorView v, TensorView compute,
                  std::span<const ParamSegment> segments, const AdamWHyper& hyper, TensorView norms) override;

 private:
  // [T, T] work matrices of one attention head, kept between calls so that the per-head loop
  // allocates nothing.
  std::vector<float> head_scratch_a_;
  std::vector<float> head_scratch_b_;
};

}  // namespace lamina
