// Collective communication between the ranks of a data-parallel job.
//
// One Communicator per process, used from one thread; every rank calls the same collectives in
// the same order with matching sizes (MPI's rule, and NCCL's). Each collective has an asynchronous form, Start*(),
// returning a Work handle to Wait() on, so callers can overlap communication with compute, and a
// blocking form that starts and waits.
//
// Failure model. A Status returned here is a usage error (mismatched sizes, unsupported dtype)
// or an error reported by the transport; the other ranks are then likely blocked in the same
// collective, so the caller should pass it to Fail(), which prints "rank R failed: ..." and
// takes the whole job down. A collective that does not complete within timeout_seconds() (a peer died,
// exited early or is stuck outside the collectives) does not return at all: the rank prints
// which collective timed out and which ranks did not answer, then aborts the job, so no rank
// hangs. See docs/distributed.md.
//
// Implementations: MpiCommunicator (dist/mpi_communicator.h) over host memory, staging device
// buffers through pinned host memory when built with CUDA; the NCCL communicator
// (dist/nccl_communicator.h), reducing device buffers on the GPUs and handing host buffers to
// the MpiCommunicator it was bootstrapped from. SelectCommunicator() (dist/bootstrap.h) picks.
#pragma once

#include <cstdint>
#include <memory>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "core/dtype.h"
#include "core/tensor.h"

namespace lamina {

enum class ReduceOp { kSum, kAverage };

const char* ReduceOpName(ReduceOp op);

// A contiguous run of `count` elements on one device.
struct CommBuffer {
  void* data = nullptr;
  int64_t count = 0;
  DType dtype = DType::kF32;
  Device device = Device::kCpu;

  static CommBuffer Of(TensorView t) { return CommBuffer{t.data, t.numel(), t.dtype, t.device}; }
  size_t bytes() const { return static_cast<size_t>(count) * DTypeSize(dtype); }
};

// An outstanding collective. Wait() must be called (destroying an unfinished Work waits for it,
// because MPI may still be writing into the buffers).
class Work {
 public:
  virtual ~Work() = default;
  // Blocks until the collective is complete and its result is in the caller's buffer (for
  // device buffers: on the device; with NCCL, later work on the compute stream is also ordered
  // after it). Aborts the job on timeout (see above).
  virtual absl::Status Wait() = 0;
  // Makes progress without blocking; true once the transfer is complete (Wait() still has to be
  // called to finish it). Host MPI makes progress only inside MPI calls, so a caller overlapping
  // a long computation should call Test() now and then.
  virtual bool Test() = 0;
};

class Communicator {
 public:
  virtual ~Communicator() = default;

  virtual std::string name() const = 0;
  virtual int rank() const = 0;
  virtual int world_size() const = 0;
  // Rank among the processes of this node, and how many there are (GPU = local_rank).
  virtual int local_rank() const = 0;
  virtual int local_size() const = 0;

  // In-place all-reduce. Sums f32, bf16 and i32; averages f32 and bf16 (sum, then divide by
  // world_size()). bf16 is summed element by element as: convert both to f32, add, round back
  // to bf16 (round to nearest even), so every addition rounds once; the result depends on the
  // order the transport adds in, but is the same on every rank. (NCCL rounds in its own way and
  // may scale by 1/world_size() before summing for an average; also the same on every rank.)
  virtual absl::StatusOr<std::unique_ptr<Work>> StartAllReduce(CommBuffer buffer, ReduceOp op) = 0;
  // Copies root's buffer into every rank's buffer (any dtype).
  virtual absl::StatusOr<std::unique_ptr<Work>> StartBroadcast(CommBuffer buffer, int root) = 0;
  // recv (world_size() * send.count elements) = the concatenation of every rank's send, in rank
  // order. send may be the rank's own slot of recv (in place); otherwise they must not overlap.
  virtual absl::StatusOr<std::unique_ptr<Work>> StartAllGather(CommBuffer send, CommBuffer recv) = 0;
  // send holds world_size() * recv.count elements; rank r receives block r of the reduction.
  // Same dtypes and ops as all-reduce. recv may be the rank's own block of send (in place:
  // recv.data == send.data + rank() * recv.count elements); otherwise they must not overlap.
  virtual absl::StatusOr<std::unique_ptr<Work>> StartReduceScatter(CommBuffer send, CommBuffer recv,
                                                                   ReduceOp op) = 0;
  virtual absl::StatusOr<std::unique_ptr<Work>> StartBarrier() = 0;

  // Blocking forms.
  absl::Status AllReduce(CommBuffer buffer, ReduceOp op);
  absl::Status AllReduce(TensorView t, ReduceOp op) { return AllReduce(CommBuffer::Of(t), op); }
  absl::Status Broadcast(CommBuffer buffer, int root);
  absl::Status Broadcast(TensorView t, int root) { return Broadcast(CommBuffer::Of(t), root); }
  absl::Status AllGather(CommBuffer send, CommBuffer recv);
  absl::Status ReduceScatter(CommBuffer send, CommBuffer recv, ReduceOp op);
  absl::Status Barrier();
  // Replaces *text by root's text on every rank.
  absl::Status BroadcastString(std::string* text, int root);

  // Prints "rank R failed: <status>" to stderr and terminates every rank of the job with a
  // non-zero exit code. For errors after which the ranks cannot continue together.
  [[noreturn]] virtual void Fail(const absl::Status& status) = 0;

  // Ends a successful run: waits (under the timeout) until every rank has called Finish(), then
  // shuts the transport down; no collective may follow. Every rank must call it before exiting
  // with success. A rank of a multi-rank job that exits WITHOUT it, for example after printing
  // an error, makes mpirun/srun end the whole job at once, which is what an error should do.
  virtual absl::Status Finish() = 0;

  // How long one collective may wait for the other ranks before the job is aborted.
  virtual void set_timeout_seconds(double seconds) = 0;
  virtual double timeout_seconds() const = 0;

  // True when a collective on device buffers is ordered after the work already enqueued on the
  // compute stream (NCCL, with events), so the caller may start it without waiting for the
  // device; false when the transport reads device memory through the host (MPI staging), so
  // the caller must first finish the work that wrote the buffers.
  virtual bool orders_after_device_work() const { return false; }
};

// The default collective timeout: $LAMINA_COLLECTIVE_TIMEOUT_S seconds when set (a positive
// number), else 600 s, which a healthy step never comes near but which still ends a hung job.
absl::StatusOr<double> CollectiveTimeoutFromEnv();

}  // namespace lamina
