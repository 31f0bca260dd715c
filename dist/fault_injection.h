// Deliberate failures for testing that a multi-rank job always ends, and ends loudly, when one
// rank goes wrong. A training loop calls InjectFault() at the top of every step; it does
// nothing unless LAMINA_FAULT_INJECT=RANK:STEP:KIND picks this rank and step.
#pragma once

#include <cstdint>
#include <optional>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "dist/communicator.h"

namespace lamina {

enum class FaultKind {
  kError,  // InjectFault returns an error, which the caller hands to Communicator::Fail
  kExit,   // the process exits with status 1 at once, as after an unhandled error
  kAbort,  // std::abort() (SIGABRT), as on a crash
  kKill,   // SIGKILL to itself, as when the OOM killer strikes
  kLeave,  // calls Finish() and exits 0 while the others still train (a rank that thinks it is done)
  kHang,   // sleeps forever outside the collectives (a stuck data loader or device)
};

struct FaultPlan {
  int rank = 0;
  int64_t step = 0;
  FaultKind kind = FaultKind::kError;
};

// Parses "RANK:STEP:KIND" with KIND one of error, exit, abort, kill, leave, hang.
absl::StatusOr<FaultPlan> ParseFaultPlan(absl::string_view spec);

// The plan in $LAMINA_FAULT_INJECT, nullopt when unset or empty.
absl::StatusOr<std::optional<FaultPlan>> FaultPlanFromEnv();

// Carries out `plan` when this is its rank and step; otherwise returns OK at once.
absl::Status InjectFault(const FaultPlan& plan, Communicator& comm, int64_t step);

}  // namespace lamina
