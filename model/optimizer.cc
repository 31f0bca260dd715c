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

absl::StatusOr<Optimizer> Optimizer::Create(const OptimizerConfig& config, BertModel* model) {
  RETURN_IF_ERROR(config.Validate());
  Optimizer o;
  o.config_ = config;
  o.model_ = model;
  for (const ParamInfo& p : model->layout().params()) o.segments_.push_back({p.offset, p.numel(), p.decay});
  const int64_t n = model->layout().total();
  ASSIGN_OR_RETURN(o.m_buf_, model->backend().Allocate(n * sizeof(float)));
  ASSIGN_OR_RETURN(o.v_buf_, model->backend().Allocate(n * sizeof(float)));
  o.m_ = o.m_buf_.View(DType::kF32, {n});
  o.v_ = o.v_buf_.View(DType::kF32, {n});
  model->backend().Zero(o.m_);
  model->backend().Zero(o.v_);
  return o;
}

StepResult Optimizer::Step(float lr) {
  Backend& be = model_->backend();
  StepResult r;
  r.grad_norm = std::sqrt(be.SumSquares(model_->grads()));
  if (!std::isfinite(r.grad_norm)) return r;
  AdamWHyper h;
  h.lr = lr;
  h.beta1 = config_.beta1;
  h.beta2 = config_.beta2;
  h.eps = config_.eps;
  h.weight_decay = config_.weight_decay;
  h.step = step_ + 1;
  h.grad_scale = (config_.clip_norm > 0 && r.grad_norm > config_.clip_norm)
                     ? static_cast<float>(config_.clip_norm / r.grad_norm)
                     : 1.0f;
  const TensorView compute = model_->compute_params().data == model_->params().data ? TensorView{} : model_->compute_params();
  if (config_.kind == OptimizerKind::kAdamW) {
    be.AdamWStep(model_->params(), model_->grads(), m_, v_, compute, segments_, h);
  } else {
    be.LambStep(model_->params(), model_->grads(), m_, v_, compute, segments_, h);
  }
  ++step_;
  r.applied = true;
  return r;
}

}  // namespace lamina
