// AdamW and LAMB over the model's flat buffers, with global-norm gradient clipping.
#pragma once

#include <cstdint>
#include <memory>
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

// The optimizer's state in the layout of the parameters, on the host (checkpoints).
struct OptimizerState {
  int64_t step = 0;
  std::vector<float> m, v;  // first and second moments, layout().total() each
};

// Applies the update to a model's parameters from its gradients. Two implementations: the one
// Create() returns keeps the whole state on every process; dist/sharded_optimizer.h's keeps
// 1/world of it per rank (ZeRO stage 1).
class Optimizer {
 public:
  virtual ~Optimizer() = default;

  // The replicated optimizer: moments for every parameter, updated in place on the model.
  static absl::StatusOr<std::unique_ptr<Optimizer>> Create(const OptimizerConfig& config, BertModel* model);

  // Clips, then applies one update with learning rate `lr` to the model's parameters (and its
  // compute copy). A non-finite gradient norm skips the update and leaves the state untouched.
  // The gradients must be complete (averaged over ranks where there are several).
  virtual absl::StatusOr<StepResult> Step(float lr) = 0;

  // Makes the full state readable by StateToHost() and the model's f32 parameters() current.
  // A no-op here; collective for a sharded optimizer (every rank must call it).
  virtual absl::Status GatherState() { return absl::OkStatus(); }
  // The full state on the host. A sharded optimizer returns what the last GatherState() gathered
  // (an error if a step has been applied since).
  virtual absl::StatusOr<OptimizerState> StateToHost() const = 0;
  // Replaces the state (e.g. from a checkpoint) after the model's parameters have been loaded.
  virtual absl::Status LoadState(const OptimizerState& state) = 0;
  // Bytes of device (or host, on the CPU) memory the optimizer holds on this rank.
  virtual size_t state_bytes() const = 0;

  int64_t step() const { return step_; }
  const OptimizerConfig& config() const { return config_; }

 protected:
  Optimizer(const OptimizerConfig& config, BertModel* model) : config_(config), model_(model) {}
  // The tensors of the model's layout as optimizer segments (tensor = index in the layout).
  static std::vector<ParamSegment> LayoutSegments(const ParamLayout& layout);
  // Hyper-parameters of the next step (1-based) with the clipping factor for `grad_norm`.
  AdamWHyper NextHyper(float lr, double grad_norm) const;

  OptimizerConfig config_;
  BertModel* model_ = nullptr;
  int64_t step_ = 0;
};

}  // namespace lamina
