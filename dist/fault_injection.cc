#include "dist/fault_injection.h"

#include <signal.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <vector>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"

namespace lamina {

absl::StatusOr<FaultPlan> ParseFaultPlan(absl::string_view spec) {
  std::vector<absl::string_view> parts = absl::StrSplit(spec, ':');
  FaultPlan plan;
  const auto bad = [&](absl::string_view why) {
    return absl::InvalidArgumentError(absl::StrCat("LAMINA_FAULT_INJECT=", spec, ": ", why,
                                                   " (expected RANK:STEP:KIND, KIND one of error, exit, abort, "
                                                   "kill, leave, hang)"));
  };
  if (parts.size() != 3) return bad("not three fields");
  if (!absl::SimpleAtoi(parts[0], &plan.rank) || plan.rank < 0) return bad("bad rank");
  if (!absl::SimpleAtoi(parts[1], &plan.step) || plan.step < 0) return bad("bad step");
  const absl::string_view kind = parts[2];
  if (kind == "error") {
    plan.kind = FaultKind::kError;
  } else if (kind == "exit") {
    plan.kind = FaultKind::kExit;
  } else if (kind == "abort") {
    plan.kind = FaultKind::kAbort;
  } else if (kind == "kill") {
    plan.kind = FaultKind::kKill;
  } else if (kind == "leave") {
    plan.kind = FaultKind::kLeave;
  } else if (kind == "hang") {
    plan.kind = FaultKind::kHang;
  } else {
    return bad(absl::StrCat("unknown kind '", kind, "'"));
  }
  return plan;
}

absl::StatusOr<std::optional<FaultPlan>> FaultPlanFromEnv() {
  const char* spec = std::getenv("LAMINA_FAULT_INJECT");
  if (spec == nullptr || *spec == '\0') return std::nullopt;
  auto plan = ParseFaultPlan(spec);
  if (!plan.ok()) return plan.status();
  return std::optional<FaultPlan>(*plan);
}

absl::Status InjectFault(const FaultPlan& plan, Communicator& comm, int64_t step) {
  if (plan.rank != comm.rank() || plan.step != step) return absl::OkStatus();
  std::fprintf(stderr, "rank %d: injecting fault at step %lld\n", comm.rank(), static_cast<long long>(step));
  std::fflush(stderr);
  switch (plan.kind) {
    case FaultKind::kError:
      return absl::InternalError(absl::StrCat("injected error at step ", step));
    case FaultKind::kExit:
      std::_Exit(1);
    case FaultKind::kAbort:
      std::abort();
    case FaultKind::kKill:
      kill(getpid(), SIGKILL);
      break;
    case FaultKind::kLeave: {
      absl::Status finished = comm.Finish();
      std::_Exit(finished.ok() ? 0 : 1);
    }
    case FaultKind::kHang:
      for (;;) pause();
  }
  return absl::OkStatus();
}

}  // namespace lamina
