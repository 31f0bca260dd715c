#include "pretrain/config_changes.h"

#include <algorithm>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "checkpoint/checkpoint.h"

namespace lamina {
namespace {

// Keys whose change leaves the run's trajectory alone: what is logged, evaluated and kept, where
// it runs, how the global batch is split into micro-batches and ranks, and how gradients travel
// (the global batch's mean gradient is the same). Everything else is refused.
bool LeavesTrajectory(const std::string& key) {
  static const char* const kPrefixes[] = {"eval.", "checkpoint.", "run.log_every", "run.log_layer_norms",
                                          "run.max_bad_steps", "run.peak_tflops", "run.device", "run.attention",
                                          "run.grad_bucket_mb", "run.grad_bf16", "run.grad_overlap", "run.zero_stage",
                                          "run.steps", "data.prefetch", "batch.micro_batch"};
  return std::any_of(std::begin(kPrefixes), std::end(kPrefixes),
                     [&](const char* p) { return absl::StartsWith(key, p); });
}

}  // namespace

std::vector<ConfigChange> DiffResolvedConfigs(const nlohmann::json& checkpoint_config, const nlohmann::json& config) {
  std::vector<ConfigChange> changes;
  for (const JsonLeafChange& c : DiffJsonLeaves(checkpoint_config, config))
    changes.push_back({c.key, c.before.value_or("(absent)"), c.after.value_or("(absent)"), !LeavesTrajectory(c.key)});
  return changes;
}

absl::Status CheckResumeConfigChanges(const std::vector<ConfigChange>& changes, const std::vector<std::string>& allowed,
                                      const std::string& checkpoint) {
  std::vector<std::string> refused;
  for (const ConfigChange& c : changes) {
    if (!c.trajectory) continue;
    const bool named = std::any_of(allowed.begin(), allowed.end(), [&](const std::string& a) {
      return c.key == a || absl::StartsWith(c.key, absl::StrCat(a, "."));
    });
    if (!named) refused.push_back(absl::StrCat(c.key, " (checkpoint ", c.before, ", now ", c.after, ")"));
  }
  if (refused.empty()) return absl::OkStatus();
  return absl::FailedPreconditionError(absl::StrCat(
      "resuming from ", checkpoint, " with a config that changes the schedule, the data or the update rule: ",
      absl::StrJoin(refused, "; "),
      ". Resume with the checkpoint's config (its state.json's run_config), or accept the change with "
      "--allow_config_change=KEY[,KEY...] (a key, or a section such as schedule)"));
}

}  // namespace lamina
