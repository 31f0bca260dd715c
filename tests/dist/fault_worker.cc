// A miniature training loop for the fault tests: each step it "computes" for a few
// milliseconds and averages a gradient buffer over the ranks. LAMINA_FAULT_INJECT makes one
// rank fail at one step; run_fault_case.sh checks that the whole job then ends, non-zero, in
// bounded time, naming the rank.
#include <chrono>
#include <cstdio>
#include <thread>
#include <vector>

#include "dist/bootstrap.h"
#include "dist/fault_injection.h"
#include "dist/grad_sync.h"

int main() {
  using namespace lamina;
  absl::StatusOr<Distributed> d = Bootstrap();
  if (!d.ok()) {
    std::fprintf(stderr, "bootstrap failed: %s\n", std::string(d.status().message()).c_str());
    return 1;
  }
  Communicator& comm = *d->comm;
  absl::StatusOr<std::optional<FaultPlan>> plan = FaultPlanFromEnv();
  if (!plan.ok()) comm.Fail(plan.status());
  std::vector<float> grads(100000, 1.0f);
  std::unique_ptr<Backend> backend = MakeCpuBackend();
  auto sync = GradientSync::Create(&comm, backend.get(), CpuF32(grads.data(), Shape{static_cast<int64_t>(grads.size())}),
                                   {.bucket_mb = 0.1});
  if (!sync.ok()) comm.Fail(sync.status());
  constexpr int kSteps = 20;
  for (int step = 0; step < kSteps; ++step) {
    if (plan->has_value()) {
      absl::Status injected = InjectFault(**plan, comm, step);
      if (!injected.ok()) comm.Fail(injected);
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
    absl::Status s = (*sync)->Run();
    if (!s.ok()) comm.Fail(s);
  }
  absl::Status s = comm.Finish();
  if (!s.ok()) {
    std::fprintf(stderr, "finish failed: %s\n", std::string(s.message()).c_str());
    return 1;
  }
  std::fprintf(stderr, "rank %d completed %d steps\n", d->world.rank, kSteps);
  return 0;
}
