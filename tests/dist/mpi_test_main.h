// The main() of a GoogleTest binary that runs as every rank of an mpirun job: bootstrap, run the
// tests with `*comm` set, then exit with the same code on every rank (non-zero when any rank
// had a failing test).
#pragma once

#include <cstdio>
#include <string>

#include "dist/bootstrap.h"
#include "gtest/gtest.h"

namespace lamina {

inline int RunMpiTests(int argc, char** argv, Communicator** comm) {
  testing::InitGoogleTest(&argc, argv);
  absl::StatusOr<Distributed> d = Bootstrap();
  if (!d.ok()) {
    std::fprintf(stderr, "bootstrap failed: %s\n", std::string(d.status().message()).c_str());
    return 1;
  }
  *comm = d->comm.get();
  std::fprintf(stderr, "%s\n", d->world.ToString().c_str());
  int32_t failed = RUN_ALL_TESTS() != 0 ? 1 : 0;
  absl::Status s = d->comm->AllReduce(CommBuffer{&failed, 1, DType::kI32, Device::kCpu}, ReduceOp::kSum);
  if (!s.ok()) d->comm->Fail(s);
  if (failed != 0) std::fprintf(stderr, "rank %d: %d rank(s) failed tests\n", d->world.rank, failed);
  s = d->comm->Finish();
  return failed != 0 || !s.ok() ? 1 : 0;
}

}  // namespace lamina
