// AdamW and LAMB over the model's flat buffers, with global-norm gradient clipping.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "model/backend.h"
#include "model/bert.h"
#include "nlohmann/json.hpp"

namespace lamina {

enum class OptimizerKind { kAdamW, kLamb };

struct OptimizerConfig {
  OptimizerKind kind = OptimizerKind::kAdamW;
  float beta1 = 0.9f;
  float beta2 = 0.999f;
  float eps = 1e-6f;
  float weight_decay = 0.01f;
  float clip_norm = 1.0f;  // global gradient norm limit; 0 turns clipping off

  absl::Status Validate() const;
  nlohmann::json ToJson() const;
  // Reads an "optimizer" object (keys: name, beta1, beta2, eps, weight_decay, clip_norm);
  // keys it does not know are reported, except those in `other_keys` (owned by the caller,
  // e.g. the learning rate of the schedule).
  static absl::StatusOr<OptimizerConfig> FromJson(const nlohmann::json& j, const std::vector<std::string>& other_keys = {});
};

struct StepResult {
  double grad_norm = 0;   // before clipping
  bool applied = false;   // false when the gradient was not finite (the update is skipped)
};

class Optimizer {
 public:
  static absl::StatusOr<Optimizer> Create(const OptimizerConfig& config, BertModel* model);

  // Clips, then applies one update with learning rate `lr` to the model's parameters (and its
  // compute copy). A non-finite gradient norm skips the update and leaves the state untouched.
  StepResult Step(float lr);

  int64_t step() const { return step_; }
  void set_step(int64_t s) { step_ = s; }
  const OptimizerConfig& config() const { return config_; }
  // First and second moments, f32 in the layout of the parameters (for checkpoints).
  TensorView m() const { return m_; }
  TensorView v() const { return v_; }

 private:
  OptimizerConfig config_;
  BertModel* model_ = nullptr;
  std::vector<ParamSegment> segments_;
  Buffer m_buf_, v_buf_;
  TensorView m_, v_;
  int64_t step_ = 0;
};

}  // namespace lamina
