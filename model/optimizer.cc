#include "model/optimizer.h"

#include <algorithm>
#include <cmath>

#include "absl/strings/str_cat.h"
#include "core/status.h"

namespace lamina {

absl::Status OptimizerConfig::Validate() const {
  auto err = [](auto&&... p) { return absl::InvalidArgumentError(absl::StrCat("optimizer.", p...)); };
  if (!(beta1 >= 0 && beta1 < 1)) return err("beta1: must be in [0, 1), got ", beta1);
  if (!(beta2 >= 0 && beta2 < 1)) return err("beta2: must be in [0, 1), got ", beta2);
  if (!(eps > 0)) return err("eps: must be positive, got ", eps);
  if (!(weight_decay >= 0)) return err("weight_decay: must be >= 0, got ", weight_decay);
  if (!(clip_norm >= 0)) return err("clip_norm: must be >= 0 (0 = no clipping), got ", clip_norm);
  return absl::OkStatus();
}

nlohmann::json OptimizerConfig::ToJson() const {
  return {{"name", kind == OptimizerKind::kAdamW ? "adamw" : "lamb"},
          {"beta1", beta1},
          {"beta2", beta2},
          {"eps", eps},
          {"weight_decay", weight_decay},
          {"clip_norm", clip_norm}};
}

absl::StatusOr<OptimizerConfig> OptimizerConfig::FromJson(const nlohmann::json& j,
                                                          const std::vector<std::string>& other_keys) {
  if (!j.is_object()) return absl::InvalidArgumentError(absl::StrCat("optimizer: expected an object, got ", j.dump()));
  OptimizerConfig c;
  for (const auto& [key, v] : j.items()) {
    if (key == "name") {
      if (!v.is_string() || (v != "adamw" && v != "lamb"))
        return absl::InvalidArgumentError(absl::StrCat("optimizer.name: expected \"adamw\" or \"lamb\", got ", v.dump()));
      c.kind = v == "adamw" ? OptimizerKind::kAdamW : OptimizerKind::kLamb;
      continue;
    }
    float* field = key == "beta1"          ? &c.beta1
                   : key == "beta2"        ? &c.beta2
                   : key == "eps"          ? &c.eps
                   : key == "weight_decay" ? &c.weight_decay
                   : key == "clip_norm"    ? &c.clip_norm
                                           : nullptr;
    if (field == nullptr) {
      if (std::find(other_keys.begin(), other_keys.end(), key) != other_keys.end()) continue;
      return absl::InvalidArgumentError(absl::StrCat("optimizer.", key, ": unknown key"));
    }
    if (!v.is_number()) return absl::InvalidArgumentError(absl::StrCat("optimizer.", key, ": expected a number, got ", v.dump()));
    *field = v.get<float>();
  }
  RETURN_IF_ERROR(c.Validate());
  return c;
}

std::vector<ParamSegment> Optimizer::LayoutSegments(const ParamLayout& layout) {
  std::vector<ParamSegment> segments;
  for (const ParamInfo& p : layout.params())
    segments.push_back({p.offset, p.numel(), p.decay, static_cast<int32_t>(segments.size())});
  return segments;
}

AdamWHyper Optimizer::NextHyper(float lr, double grad_norm) const {
  AdamWHyper h;
  h.lr = lr;
  h.beta1 = config_.beta1;
  h.beta2 = config_.beta2;
  h.eps = config_.eps;
  h.weight_decay = config_.weight_decay;
  h.step = step_ + 1;
  h.grad_scale = (config_.clip_norm > 0 && grad_norm > config_.clip_norm)
                     ? static_cast<float>(config_.clip_norm / grad_norm)
                     : 1.0f;
  return h;
}

namespace {

// Moments for every parameter, on the model's device, updated where the parameters are.
class ReplicatedOptimizer final : public Optimizer {
 public:
  ReplicatedOptimizer(const OptimizerConfig& config, BertModel* model) : Optimizer(config, model) {}

  absl::Status Init() {
    Backend& be = model_->backend();
    segments_ = LayoutSegments(model_->layout());
    const int64_t n = model_->layout().total();
    ASSIGN_OR_RETURN(m_buf_, be.Allocate(n * sizeof(float)));
    ASSIGN_OR_RETURN(v_buf_, be.Allocate(n * sizeof(float)));
    m_ = m_buf_.View(DType::kF32, {n});
    v_ = v_buf_.View(DType::kF32, {n});
    be.Zero(m_);
    be.Zero(v_);
    if (config_.kind == OptimizerKind::kLamb) {
      const int64_t slots = 2 * static_cast<int64_t>(segments_.size());
      ASSIGN_OR_RETURN(norms_buf_, be.Allocate(slots * sizeof(float)));
      norms_ = norms_buf_.View(DType::kF32, {slots});
    }
    return be.PrepareOptimizer(segments_, n);
  }

  absl::StatusOr<StepResult> Step(float lr) override {
    Backend& be = model_->backend();
    StepResult r;
    r.grad_norm = std::sqrt(be.SumSquares(model_->grads()));
    if (!std::isfinite(r.grad_norm)) return r;
    const AdamWHyper h = NextHyper(lr, r.grad_norm);
    const TensorView compute =
        model_->compute_params().data == model_->params().data ? TensorView{} : model_->compute_params();
    if (config_.kind == OptimizerKind::kAdamW) {
      be.AdamWStep(model_->params(), model_->grads(), m_, v_, compute, segments_, h);
    } else {
      be.LambMoments(model_->params(), model_->grads(), m_, v_, segments_, h, norms_);
      be.LambUpdate(model_->params(), m_, v_, compute, segments_, h, norms_);
    }
    ++step_;
    r.applied = true;
    return r;
  }

  absl::StatusOr<OptimizerState> StateToHost() const override {
    OptimizerState s;
    s.step = step_;
    s.m.resize(m_.numel());
    s.v.resize(v_.numel());
    model_->backend().CopyToHost(m_, s.m.data());
    model_->backend().CopyToHost(v_, s.v.data());
    return s;
  }

  absl::Status LoadState(const OptimizerState& state) override {
    const size_t n = static_cast<size_t>(m_.numel());
    if (state.m.size() != n || state.v.size() != n)
      return absl::InvalidArgumentError(absl::StrCat("optimizer state has ", state.m.size(), "/", state.v.size(),
                                                     " moments for ", n, " parameters"));
    model_->backend().CopyFromHost(state.m.data(), m_);
    model_->backend().CopyFromHost(state.v.data(), v_);
    step_ = state.step;
    return absl::OkStatus();
  }

  size_t state_bytes() const override { return m_buf_.bytes() + v_buf_.bytes() + norms_buf_.bytes(); }

 private:
  std::vector<ParamSegment> segments_;
  Buffer m_buf_, v_buf_, norms_buf_;
  TensorView m_, v_, norms_;
};

}  // namespace

absl::StatusOr<std::unique_ptr<Optimizer>> Optimizer::Create(const OptimizerConfig& config, BertModel* model) {
  RETURN_IF_ERROR(config.Validate());
  auto o = std::make_unique<ReplicatedOptimizer>(config, model);
  RETURN_IF_ERROR(o->Init());
  return std::unique_ptr<Optimizer>(std::move(o));
}

}  // namespace lamina
