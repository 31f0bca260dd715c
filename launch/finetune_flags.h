// Flags shared by `lamina finetune` and `lamina finetune-sweep` (defined in finetune_flags.cc; --data,
// --checkpoint, --out, --device and --vocab are the common ones of launch/common_flags.h).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "absl/flags/declare.h"
#include "absl/status/statusor.h"
#include "finetune/job.h"
#include "nlohmann/json.hpp"

ABSL_DECLARE_FLAG(std::string, task);
ABSL_DECLARE_FLAG(std::string, lr);
ABSL_DECLARE_FLAG(int64_t, epochs);
ABSL_DECLARE_FLAG(int64_t, batch);
ABSL_DECLARE_FLAG(int64_t, max_seq);
ABSL_DECLARE_FLAG(int64_t, seeds);
ABSL_DECLARE_FLAG(uint64_t, seed);
ABSL_DECLARE_FLAG(double, warmup_ratio);
ABSL_DECLARE_FLAG(double, weight_decay);
ABSL_DECLARE_FLAG(bool, predict_test);

namespace lamina {

// --config FILE for finetune and finetune-sweep: {"finetune": {KEY: VALUE, ...}}, where each key
// is one of `keys` (the subcommand's flags: "task", "lr" as a list of numbers, "seeds", "data",
// "checkpoint", ...), with `--set finetune.KEY=VALUE` applied; a flag given on the command line
// overrides its key. Sets the flags from the file and returns the resolved section (every key),
// for the output directory's config.json. Without --config, only the flags (and --set) count.
absl::StatusOr<nlohmann::json> ApplyFinetuneConfig(const std::vector<std::string>& keys);
// Writes {"finetune": section} to OUT/config.json (OUT created if missing).
absl::Status WriteFinetuneConfig(const std::string& out_dir, const nlohmann::json& section);

// The job the finetuning flags describe (--checkpoint and --out are left to the caller).
absl::StatusOr<FinetuneJob> FinetuneJobFromFlags();

}  // namespace lamina
