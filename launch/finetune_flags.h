// Flags shared by `lamina finetune` and `lamina finetune-sweep` (defined in finetune_flags.cc; --data,
// --checkpoint, --out, --device and --vocab are the common ones of launch/common_flags.h).
#pragma once

#include <cstdint>
#include <string>

#include "absl/flags/declare.h"
#include "absl/status/statusor.h"
#include "finetune/job.h"

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

// The job the finetuning flags describe (--checkpoint and --out are left to the caller).
absl::StatusOr<FinetuneJob> FinetuneJobFromFlags();

}  // namespace lamina
