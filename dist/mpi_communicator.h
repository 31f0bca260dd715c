// The Communicator over MPI (Open MPI here): non-blocking collectives on host memory, polled
// with a deadline so that a missing peer ends the job instead of hanging it.
//
// Device buffers (built with CUDA) are staged: copied to pinned host memory (cudaMallocHost),
// reduced there, copied back. That costs two PCIe copies per collective but works with any MPI,
// and lets several ranks share one GPU. The device copy is synchronous (cudaMemcpy), so the
// caller must have finished writing the buffer (Backend::Synchronize()) before starting.
//
// A rank that times out first asks the other ranks, on a separate communicator, which
// collective they are waiting in; ranks that are waiting answer from their polling loop. It
// then prints the collective that timed out and the ranks that did not answer (dead, exited
// early, or busy outside the collectives), and calls MPI_Abort, which ends every rank.
#pragma once

#include <mpi.h>

#include <array>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "dist/communicator.h"

namespace lamina {

// What a collective is, for messages: "allreduce #12 (f32 x 1000, avg)".
struct CollectiveLabel {
  const char* kind = "";
  uint64_t sequence = 0;
  std::string detail;
  std::string ToString() const;
};

class MpiCommunicator final : public Communicator {
 public:
  // Initialises MPI when nobody has yet: under mpirun/srun this joins the job; started directly
  // it becomes a world of one (Open MPI's singleton mode). Finish() finalises MPI; a world of
  // one is also finalised at process exit.
  // Duplicates MPI_COMM_WORLD, so collectives here never match anyone else's messages.
  static absl::StatusOr<std::unique_ptr<MpiCommunicator>> Create();
  ~MpiCommunicator() override;

  std::string name() const override { return "mpi"; }
  int rank() const override { return rank_; }
  int world_size() const override { return world_size_; }
  int local_rank() const override { return local_rank_; }
  int local_size() const override { return local_size_; }

  absl::StatusOr<std::unique_ptr<Work>> StartAllReduce(CommBuffer buffer, ReduceOp op) override;
  absl::StatusOr<std::unique_ptr<Work>> StartBroadcast(CommBuffer buffer, int root) override;
  absl::StatusOr<std::unique_ptr<Work>> StartAllGather(CommBuffer send, CommBuffer recv) override;
  absl::StatusOr<std::unique_ptr<Work>> StartReduceScatter(CommBuffer send, CommBuffer recv, ReduceOp op) override;
  absl::StatusOr<std::unique_ptr<Work>> StartBarrier() override;

  [[noreturn]] void Fail(const absl::Status& status) override;
  absl::Status Finish() override;

  void set_timeout_seconds(double seconds) override { timeout_seconds_ = seconds; }
  double timeout_seconds() const override { return timeout_seconds_; }

  MPI_Comm comm() const { return comm_; }

 private:
  friend class MpiWork;
  class StagingPool;

  MpiCommunicator();
  // Polls `requests` until all complete; answers other ranks' roll calls meanwhile. Past the
  // timeout: prints what is known and aborts the job (never returns).
  absl::Status WaitFor(std::vector<MPI_Request>& requests, const CollectiveLabel& label);
  bool TestAll(std::vector<MPI_Request>& requests, absl::Status* status);
  void AnswerRollCalls();
  [[noreturn]] void AbortAfterTimeout(const CollectiveLabel& label, double waited_seconds);
  absl::Status CheckUsable(absl::string_view what) const;
  CollectiveLabel NextLabel(const char* kind, std::string detail);

  MPI_Comm comm_ = MPI_COMM_NULL;   // the collectives
  MPI_Comm watch_ = MPI_COMM_NULL;  // roll calls after a timeout
  MPI_Op bf16_sum_ = MPI_OP_NULL;
  int rank_ = 0;
  int world_size_ = 1;
  int local_rank_ = 0;
  int local_size_ = 1;
  double timeout_seconds_ = 600;
  uint64_t started_ = 0;
  // What this rank is doing, for roll-call answers: the sequence number of the collective it
  // waits in, 0 between collectives, kFinishing inside Finish().
  static constexpr int64_t kFinishing = -2;
  int64_t waiting_ = 0;
  bool finished_ = false;
  std::vector<std::array<int64_t, 1>> answers_;  // one send buffer per asking rank
  std::unique_ptr<StagingPool> staging_;
};

}  // namespace lamina
