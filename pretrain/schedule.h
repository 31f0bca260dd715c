// Learning-rate schedules. Every schedule accepts warmup_steps = 0, which means no warmup: the
// first update already uses the peak rate (training without warmup is what lamina studies).
//
// With s the 0-based optimizer step (LearningRate(s) is the rate of update number s + 1),
// W = warmup_steps, T = total_steps, lr the peak rate:
//   warmup (all schedules, s < W):  lr * (s + 1) / W          (update W is the first at the peak)
//   constant:                       lr
//   linear:                         end_lr + (lr - end_lr) * (T - s) / (T - W)          for W <= s < T
//   polynomial:                     end_lr + (lr - end_lr) * ((T - s) / (T - W))^power  for W <= s < T
//   inverse_sqrt:                   lr * sqrt(max(W, 1) / (s + 1))                      for s >= W
// linear and polynomial hold end_lr from s = T on. linear is polynomial with power 1 (BERT);
// the decay starts at the peak (s = W) and its last update (s = T - 1) still moves the weights.
// inverse_sqrt is fairseq's inverse_sqrt (peak at update W, then lr * sqrt(W / update)); with
// W = 0 it is lr / sqrt(s + 1), the same schedule as W = 1. docs/pretraining.md has the details.
#pragma once

#include <cstdint>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "nlohmann/json.hpp"

namespace lamina {

enum class ScheduleKind { kConstant, kLinear, kPolynomial, kInverseSqrt };

std::string ScheduleName(ScheduleKind kind);

struct ScheduleConfig {
  ScheduleKind kind = ScheduleKind::kLinear;
  double lr = 1e-4;           // peak learning rate
  int64_t warmup_steps = 0;
  int64_t total_steps = 0;    // needed by linear and polynomial; 0 = not given
  double end_lr = 0;          // linear and polynomial: the rate reached at total_steps
  double power = 1;           // polynomial only

  // The error names the key ("schedule.total_steps: ...").
  absl::Status Validate() const;
  // The keys that FromJson reads back (only those the schedule uses).
  nlohmann::json ToJson() const;
  // Reads a "schedule" object: name (required: constant, linear, polynomial, inverse_sqrt), lr
  // (required), warmup_steps, total_steps, end_lr (linear, polynomial), power (polynomial).
  // Unknown keys, keys the named schedule does not use, and wrongly typed values are errors.
  static absl::StatusOr<ScheduleConfig> FromJson(const nlohmann::json& j);

  // The learning rate of 0-based optimizer step `step` (>= 0). Validate() must have passed.
  double LearningRate(int64_t step) const;
};

}  // namespace lamina
