// The Communicator over NCCL: collectives on device buffers run on the GPUs (NVLink, InfiniBand,
// ...) instead of being staged through host memory.
//
// Set-up. It is made from the MpiCommunicator that Bootstrap() created, and keeps and owns it:
// rank 0 creates an ncclUniqueId, MPI broadcasts it, and every rank joins on its current CUDA
// device (the one Bootstrap() bound: local rank). NCCL refuses two ranks on one GPU, so that is
// checked first, on every rank, and refused with an error that suggests `--comm mpi`.
//
// Ordering. Collectives run on a communication stream of their own (cudaStreamNonBlocking),
// ordered after the caller's compute stream with CUDA events: Start*() records an event on the
// compute stream, makes the communication stream wait for it, enqueues the NCCL operation there
// and records a `done` event. A collective thus sees everything queued on the compute stream
// before Start*() without the host waiting for it; data written any other way (a synchronous
// cudaMemcpy from pageable memory, another stream) must be complete before Start*(). Until the
// Work is waited for, the buffers belong to the collective: do not queue work touching them.
// Work::Test() asks whether `done` has passed. Work::Wait() polls it, then also makes the compute
// stream wait for `done`, so compute queued after Wait() is ordered after the collective. Hence
// orders_after_device_work() is true: callers need not synchronise the device first.
//
// Host buffers (the trainer's loss sum, a stop flag) and Barrier() go to the MPI communicator.
//
// Failures. NCCL runs in non-blocking mode, so no NCCL call can hold the host forever: Wait()
// polls the done event and ncclCommGetAsyncError; on an asynchronous error, or once
// timeout_seconds() have passed (a peer died, exited early or is stuck), it prints
// "rank R: <collective> on <N> bytes timed out after S s" (or "... failed: <NCCL error>"), aborts
// the NCCL communicator and ends the job through the MPI communicator's Fail(). The same deadline
// bounds joining NCCL and Finish(). Fail() aborts NCCL, then fails through MPI.
#pragma once

#include <memory>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "dist/communicator.h"
#include "dist/mpi_communicator.h"

namespace lamina {

// OK when this process could run the NCCL communicator (a CUDA build, a visible GPU); else why
// not: UnavailableError("this build has no CUDA/NCCL"), or FailedPreconditionError without a
// GPU. A quick local check for start-up; MakeNcclCommunicator() checks everything.
absl::Status NcclAvailable();

// Makes the NCCL communicator from the job's MPI communicator; collective (every rank calls it).
// `compute_stream` is the cudaStream_t the caller computes on: Backend::native_stream() of a
// CUDA backend created after Bootstrap() bound the GPU (null, as the CPU backend gives, is
// refused). On success the new communicator owns the MPI one and *mpi is null; on error *mpi is
// untouched, so the caller can still Fail() through it.
//
// FailedPreconditionError and UnavailableError mean NCCL cannot work for this job (no CUDA build,
// a rank without a GPU or a compute stream, two ranks on one GPU): every rank gets the same
// error, naming the first rank concerned, before NCCL starts, so the ranks can all fall back to
// MPI together. Other errors come from CUDA or NCCL; pass them to Fail().
absl::StatusOr<std::unique_ptr<Communicator>> MakeNcclCommunicator(std::unique_ptr<MpiCommunicator>* mpi,
                                                                   void* compute_stream);

}  // namespace lamina
