#include "dist/nccl_communicator.h"

#include <cuda_runtime.h>
#include <nccl.h>

#include <chrono>
#include <cstdio>
#include <cstring>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "absl/functional/function_ref.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "core/buffer.h"
#include "core/status.h"
#include "dist/bootstrap.h"
#include "dist/consistency.h"

namespace lamina {
namespace {

using Clock = std::chrono::steady_clock;

double SecondsSince(Clock::time_point start) { return std::chrono::duration<double>(Clock::now() - start).count(); }

absl::Status CudaError(cudaError_t err, absl::string_view what) {
  return absl::InternalError(absl::StrCat(what, ": ", cudaGetErrorString(err)));
}

// NCCL's text for a result, with its last error message, which says more (which peer, which call).
std::string NcclText(ncclResult_t result, ncclComm_t comm) {
  std::string text = ncclGetErrorString(result);
  const char* last = ncclGetLastError(comm);
  if (last != nullptr && *last != '\0') absl::StrAppend(&text, " (", last, ")");
  return text;
}

// Between polls: spin first, since most collectives end within a millisecond of being waited
// for; then short sleeps, so that a long wait does not take a core from the data loader.
void Pause(double waited_seconds) {
  if (waited_seconds < 1e-3) {
    std::this_thread::yield();
  } else {
    std::this_thread::sleep_for(std::chrono::microseconds(50));
  }
}

absl::StatusOr<ncclDataType_t> ReductionType(DType dtype, ReduceOp op) {
  switch (dtype) {
    case DType::kF32: return ncclFloat32;
    case DType::kBF16: return ncclBfloat16;
    case DType::kI32:
      if (op == ReduceOp::kAverage) return absl::InvalidArgumentError("average of i32 buffers is not supported");
      return ncclInt32;
    default:
      return absl::InvalidArgumentError(
          absl::StrCat("reductions support f32, bf16 and i32 buffers, not ", DTypeName(dtype)));
  }
}

ncclRedOp_t NcclOp(ReduceOp op) { return op == ReduceOp::kSum ? ncclSum : ncclAvg; }

std::string Describe(const CommBuffer& b) { return absl::StrCat(DTypeName(b.dtype), " x ", b.count); }

bool Overlap(const CommBuffer& a, const CommBuffer& b) {
  const char* a0 = static_cast<const char*>(a.data);
  const char* b0 = static_cast<const char*>(b.data);
  return a0 < b0 + b.bytes() && b0 < a0 + a.bytes();
}

absl::Status CheckBuffer(const CommBuffer& b, absl::string_view what) {
  if (b.count < 0) return absl::InvalidArgumentError(absl::StrCat(what, ": negative count ", b.count));
  if (b.count > 0 && b.data == nullptr) return absl::InvalidArgumentError(absl::StrCat(what, ": null data"));
  return absl::OkStatus();
}

absl::Status CheckPair(const CommBuffer& send, const CommBuffer& recv, absl::string_view what) {
  RETURN_IF_ERROR(CheckBuffer(send, absl::StrCat(what, " send")));
  RETURN_IF_ERROR(CheckBuffer(recv, absl::StrCat(what, " recv")));
  if (send.dtype != recv.dtype || send.device != recv.device) {
    return absl::InvalidArgumentError(absl::StrCat(what, " send ", Describe(send), " on ", DeviceName(send.device),
                                                   " and recv ", Describe(recv), " on ", DeviceName(recv.device),
                                                   " differ in dtype or device"));
  }
  return absl::OkStatus();
}

// "GPU-8c3d6a4e-...", the form nvidia-smi -L prints.
std::string UuidText(const char (&bytes)[16]) {
  std::string text = "GPU-";
  for (int i = 0; i < 16; ++i) {
    absl::StrAppendFormat(&text, "%02x", static_cast<unsigned char>(bytes[i]));
    if (i == 3 || i == 5 || i == 7 || i == 9) text += '-';
  }
  return text;
}

}  // namespace

class NcclCommunicator;

// One started collective on device buffers: the event recorded after it on the communication
// stream.
class NcclWork final : public Work {
 public:
  NcclWork(NcclCommunicator* comm, std::string what, cudaEvent_t done) : comm_(comm), what_(std::move(what)), done_(done) {}
  ~NcclWork() override;
  absl::Status Wait() override;
  bool Test() override;
  const std::string& what() const { return what_; }

 private:
  NcclCommunicator* comm_;
  std::string what_;  // "allreduce #3 (f32 x 1024, sum) on 4096 bytes", for messages
  cudaEvent_t done_;
  bool finished_ = false;
  absl::Status status_;
};

class NcclCommunicator final : public Communicator {
 public:
  static absl::StatusOr<std::unique_ptr<Communicator>> Create(std::unique_ptr<MpiCommunicator>* mpi,
                                                              void* compute_stream);
  ~NcclCommunicator() override;

  std::string name() const override { return "nccl"; }
  int rank() const override { return rank_; }
  int world_size() const override { return mpi_->world_size(); }
  int local_rank() const override { return mpi_->local_rank(); }
  int local_size() const override { return mpi_->local_size(); }

  absl::StatusOr<std::unique_ptr<Work>> StartAllReduce(CommBuffer buffer, ReduceOp op) override;
  absl::StatusOr<std::unique_ptr<Work>> StartBroadcast(CommBuffer buffer, int root) override;
  absl::StatusOr<std::unique_ptr<Work>> StartAllGather(CommBuffer send, CommBuffer recv) override;
  absl::StatusOr<std::unique_ptr<Work>> StartReduceScatter(CommBuffer send, CommBuffer recv, ReduceOp op) override;
  absl::StatusOr<std::unique_ptr<Work>> StartBarrier() override;

  [[noreturn]] void Fail(const absl::Status& status) override;
  absl::Status Finish() override;

  void set_timeout_seconds(double seconds) override {
    timeout_seconds_ = seconds;
    mpi_->set_timeout_seconds(seconds);
  }
  double timeout_seconds() const override { return timeout_seconds_; }
  bool orders_after_device_work() const override { return true; }

 private:
  friend class NcclWork;

  NcclCommunicator(cudaStream_t compute, int rank, double timeout_seconds)
      : compute_(compute), rank_(rank), timeout_seconds_(timeout_seconds) {}

  // What this rank can check alone: a GPU, the compute stream on it; creates the communication
  // stream and event; rank 0 makes the NCCL id. Fills *gpu with the device's UUID.
  absl::Status PrepareLocally(ncclUniqueId* id, std::string* gpu);
  // ncclCommInitRankConfig in non-blocking mode, polled under the timeout.
  absl::Status Join(const ncclUniqueId& id, int world_size);

  absl::Status CheckUsable(absl::string_view what) const;
  std::string NextLabel(const char* kind, const std::string& detail, size_t bytes);
  // Orders the communication stream after the compute stream, runs `op` (an NCCL call on the
  // communication stream; skipped for an empty buffer) and records the done event after it.
  absl::StatusOr<std::unique_ptr<Work>> Enqueue(std::string what, size_t bytes,
                                                absl::FunctionRef<ncclResult_t()> op);
  // Polls until `done` has passed, then orders the compute stream after it. Aborts the job on an
  // NCCL or CUDA error or past the timeout.
  absl::Status WaitFor(cudaEvent_t done, const std::string& what);
  // After an NCCL call answered ncclInProgress: polls until NCCL has finished issuing it (a
  // non-blocking communicator must not be called again before). Aborts the job like WaitFor.
  void AwaitIssued(const std::string& what);
  // The communicator's asynchronous error, ncclSuccess when there is none.
  ncclResult_t AsyncError() const;
  // Prints "rank R: <what> <how>", aborts NCCL and ends the job through MPI.
  [[noreturn]] void AbortJob(const std::string& what, const std::string& how);
  [[noreturn]] void AbortJobAfter(const std::string& what, double waited_seconds);
  void AbortNccl();

  std::unique_ptr<MpiCommunicator> mpi_;  // set last in Create(): the communicator is usable from then on
  ncclComm_t comm_ = nullptr;
  cudaStream_t compute_;
  cudaStream_t stream_ = nullptr;  // the communication stream
  cudaEvent_t ready_ = nullptr;    // recorded on the compute stream by each Start*()
  int rank_;
  double timeout_seconds_;
  uint64_t started_ = 0;
  bool finished_ = false;
};

NcclWork::~NcclWork() {
  if (!finished_) Wait().IgnoreError();
  cudaEventDestroy(done_);
}

absl::Status NcclWork::Wait() {
  if (finished_) return status_;
  finished_ = true;
  status_ = comm_->WaitFor(done_, what_);
  return status_;
}

bool NcclWork::Test() {
  if (finished_) return true;
  const cudaError_t state = cudaEventQuery(done_);
  // Anything but "not ready" ends the wait: done, or an error that Wait() reports.
  if (state != cudaErrorNotReady) return true;
  const ncclResult_t async = comm_->AsyncError();
  return async != ncclSuccess && async != ncclInProgress;
}

absl::StatusOr<std::unique_ptr<Communicator>> NcclCommunicator::Create(std::unique_ptr<MpiCommunicator>* mpi,
                                                                       void* compute_stream) {
  MpiCommunicator& m = **mpi;
  std::unique_ptr<NcclCommunicator> c(
      new NcclCommunicator(static_cast<cudaStream_t>(compute_stream), m.rank(), m.timeout_seconds()));
  ncclUniqueId id;
  std::memset(&id, 0, sizeof(id));
  std::string gpu;
  // Every rank learns about every rank's problem before any of them starts NCCL, which would
  // otherwise wait for the missing ranks.
  RETURN_IF_ERROR(AgreeOnStatus(m, c->PrepareLocally(&id, &gpu)));

  constexpr int64_t kUuidUnits = 8;  // 16 bytes as u16
  std::vector<char> uuids(16 * m.world_size());
  std::memcpy(uuids.data() + 16 * m.rank(), gpu.data(), 16);
  RETURN_IF_ERROR(m.AllGather(CommBuffer{uuids.data() + 16 * m.rank(), kUuidUnits, DType::kU16, Device::kCpu},
                              CommBuffer{uuids.data(), kUuidUnits * m.world_size(), DType::kU16, Device::kCpu}));
  std::vector<std::string> gpu_ids;
  for (int r = 0; r < m.world_size(); ++r) {
    char bytes[16];
    std::memcpy(bytes, uuids.data() + 16 * r, 16);
    gpu_ids.push_back(UuidText(bytes));
  }
  RETURN_IF_ERROR(CheckOneRankPerGpu(gpu_ids));

  static_assert(sizeof(ncclUniqueId) % 2 == 0);
  RETURN_IF_ERROR(m.Broadcast(CommBuffer{&id, sizeof(id) / 2, DType::kU16, Device::kCpu}, 0));
  RETURN_IF_ERROR(c->Join(id, m.world_size()));
  c->mpi_ = std::move(*mpi);
  return std::unique_ptr<Communicator>(std::move(c));
}

absl::Status NcclCommunicator::PrepareLocally(ncclUniqueId* id, std::string* gpu) {
  int count = 0;
  cudaError_t err = cudaGetDeviceCount(&count);
  if (err != cudaSuccess || count == 0) {
    cudaGetLastError();
    return absl::FailedPreconditionError(absl::StrCat(
        "no CUDA device is visible (", err == cudaSuccess ? "none found" : cudaGetErrorString(err), ")"));
  }
  if (compute_ == nullptr) {
    return absl::FailedPreconditionError("no CUDA compute stream (the CPU backend computes on the host)");
  }
  int device = 0;
  err = cudaGetDevice(&device);
  if (err != cudaSuccess) return CudaError(err, "cudaGetDevice");
  int stream_device = 0;
  err = cudaStreamGetDevice(compute_, &stream_device);
  if (err != cudaSuccess) return CudaError(err, "cudaStreamGetDevice of the compute stream");
  if (stream_device != device) {
    return absl::FailedPreconditionError(absl::StrCat(
        "the compute stream is on GPU ", stream_device, " but this rank is bound to GPU ", device,
        "; create the backend after Bootstrap() has bound the GPU"));
  }
  cudaDeviceProp props;
  err = cudaGetDeviceProperties(&props, device);
  if (err != cudaSuccess) return CudaError(err, "cudaGetDeviceProperties");
  gpu->assign(props.uuid.bytes, 16);
  err = cudaStreamCreateWithFlags(&stream_, cudaStreamNonBlocking);
  if (err != cudaSuccess) return CudaError(err, "cudaStreamCreateWithFlags");
  err = cudaEventCreateWithFlags(&ready_, cudaEventDisableTiming);
  if (err != cudaSuccess) return CudaError(err, "cudaEventCreateWithFlags");
  if (rank_ == 0) {
    const ncclResult_t result = ncclGetUniqueId(id);
    if (result != ncclSuccess) {
      return absl::InternalError(absl::StrCat("ncclGetUniqueId: ", NcclText(result, nullptr)));
    }
  }
  return absl::OkStatus();
}

absl::Status NcclCommunicator::Join(const ncclUniqueId& id, int world_size) {
  ncclConfig_t config = NCCL_CONFIG_INITIALIZER;
  // Non-blocking: no NCCL call holds the host, so a missing peer ends in the timeout, not a hang.
  config.blocking = 0;
  const ncclResult_t result = ncclCommInitRankConfig(&comm_, world_size, id, rank_, &config);
  if (result != ncclSuccess && result != ncclInProgress) {
    return absl::InternalError(absl::StrCat("ncclCommInitRankConfig: ", NcclText(result, comm_)));
  }
  const Clock::time_point start = Clock::now();
  for (;;) {
    const ncclResult_t state = AsyncError();
    if (state == ncclSuccess) return absl::OkStatus();
    if (state != ncclInProgress) {
      return absl::InternalError(absl::StrCat("joining NCCL (ncclCommInitRankConfig): ", NcclText(state, comm_)));
    }
    const double waited = SecondsSince(start);
    if (waited > timeout_seconds_) {
      return absl::DeadlineExceededError(absl::StrFormat(
          "joining NCCL timed out after %.1f s (LAMINA_COLLECTIVE_TIMEOUT_S): not every rank joined; with several "
          "nodes, check that they reach each other (NCCL_SOCKET_IFNAME, NCCL_DEBUG=INFO)",
          waited));
    }
    Pause(waited);
  }
}

NcclCommunicator::~NcclCommunicator() {
  // Not finished means an error path: abort, since an orderly ncclCommDestroy could wait for
  // peers that will not come.
  AbortNccl();
  if (ready_ != nullptr) cudaEventDestroy(ready_);
  if (stream_ != nullptr) cudaStreamDestroy(stream_);
}

void NcclCommunicator::AbortNccl() {
  if (comm_ == nullptr) return;
  ncclCommAbort(comm_);
  comm_ = nullptr;
}

ncclResult_t NcclCommunicator::AsyncError() const {
  if (comm_ == nullptr) return ncclSuccess;
  ncclResult_t state = ncclSuccess;
  const ncclResult_t result = ncclCommGetAsyncError(comm_, &state);
  return result != ncclSuccess ? result : state;
}

void NcclCommunicator::AbortJob(const std::string& what, const std::string& how) {
  // Printed before aborting NCCL, which has been known to hang in some versions.
  std::fprintf(stderr, "rank %d: %s %s; aborting the job\n", rank_, what.c_str(), how.c_str());
  std::fflush(stderr);
  AbortNccl();
  mpi_->Fail(absl::AbortedError(absl::StrCat("NCCL ", what, " did not complete")));
}

void NcclCommunicator::AbortJobAfter(const std::string& what, double waited_seconds) {
  AbortJob(what, absl::StrFormat("timed out after %.1f s (LAMINA_COLLECTIVE_TIMEOUT_S=%g): another rank died, exited "
                                 "early, or is stuck outside the collectives",
                                 waited_seconds, timeout_seconds_));
}

absl::Status NcclCommunicator::CheckUsable(absl::string_view what) const {
  if (finished_) return absl::FailedPreconditionError(absl::StrCat(what, " after Finish()"));
  return absl::OkStatus();
}

std::string NcclCommunicator::NextLabel(const char* kind, const std::string& detail, size_t bytes) {
  return absl::StrCat(CollectiveLabel{kind, ++started_, detail}.ToString(), " on ", bytes, " bytes");
}

absl::StatusOr<std::unique_ptr<Work>> NcclCommunicator::Enqueue(std::string what, size_t bytes,
                                                                absl::FunctionRef<ncclResult_t()> op) {
  // Recording `ready_` again is safe: cudaStreamWaitEvent takes the record made just before it.
  cudaError_t err = cudaEventRecord(ready_, compute_);
  if (err == cudaSuccess) err = cudaStreamWaitEvent(stream_, ready_, 0);
  if (err != cudaSuccess) return CudaError(err, "ordering the communication stream after the compute stream");
  cudaEvent_t done = nullptr;
  err = cudaEventCreateWithFlags(&done, cudaEventDisableTiming);
  if (err != cudaSuccess) return CudaError(err, "cudaEventCreateWithFlags");
  // From here on the Work owns the event.
  auto work = std::make_unique<NcclWork>(this, std::move(what), done);
  if (bytes > 0) {
    const ncclResult_t result = op();
    if (result == ncclInProgress) {
      AwaitIssued(work->what());
    } else if (result != ncclSuccess) {
      return absl::InternalError(absl::StrCat(work->what(), ": ", NcclText(result, comm_)));
    }
  }
  err = cudaEventRecord(done, stream_);
  if (err != cudaSuccess) return CudaError(err, "cudaEventRecord on the communication stream");
  return std::unique_ptr<Work>(std::move(work));
}

void NcclCommunicator::AwaitIssued(const std::string& what) {
  const Clock::time_point start = Clock::now();
  for (;;) {
    const ncclResult_t state = AsyncError();
    if (state == ncclSuccess) return;
    if (state != ncclInProgress) AbortJob(what, absl::StrCat("failed: ", NcclText(state, comm_)));
    const double waited = SecondsSince(start);
    if (waited > timeout_seconds_) AbortJobAfter(what, waited);
    Pause(waited);
  }
}

absl::Status NcclCommunicator::WaitFor(cudaEvent_t done, const std::string& what) {
  const Clock::time_point start = Clock::now();
  for (;;) {
    const cudaError_t state = cudaEventQuery(done);
    if (state == cudaSuccess) break;
    if (state != cudaErrorNotReady) AbortJob(what, absl::StrCat("failed: ", cudaGetErrorString(state)));
    const ncclResult_t async = AsyncError();
    if (async != ncclSuccess && async != ncclInProgress) {
      AbortJob(what, absl::StrCat("failed: ", NcclText(async, comm_)));
    }
    const double waited = SecondsSince(start);
    if (waited > timeout_seconds_) AbortJobAfter(what, waited);
    Pause(waited);
  }
  const cudaError_t err = cudaStreamWaitEvent(compute_, done, 0);
  if (err != cudaSuccess) return CudaError(err, "ordering the compute stream after the collective");
  return absl::OkStatus();
}

void NcclCommunicator::Fail(const absl::Status& status) {
  AbortNccl();
  mpi_->Fail(status);
}

absl::Status NcclCommunicator::Finish() {
  if (finished_) return absl::FailedPreconditionError("Finish() called twice");
  const std::string what = absl::StrCat("finish #", ++started_, " (NCCL)");
  // Collectives that were started but never waited for end first.
  const Clock::time_point start = Clock::now();
  for (;;) {
    const cudaError_t state = cudaStreamQuery(stream_);
    if (state == cudaSuccess) break;
    if (state != cudaErrorNotReady) AbortJob(what, absl::StrCat("failed: ", cudaGetErrorString(state)));
    const double waited = SecondsSince(start);
    if (waited > timeout_seconds_) AbortJobAfter(what, waited);
    Pause(waited);
  }
  ncclResult_t result = ncclCommFinalize(comm_);
  if (result == ncclInProgress) {
    AwaitIssued(what);
  } else if (result != ncclSuccess) {
    return absl::InternalError(absl::StrCat("ncclCommFinalize: ", NcclText(result, comm_)));
  }
  result = ncclCommDestroy(comm_);
  comm_ = nullptr;
  if (result != ncclSuccess) return absl::InternalError(absl::StrCat("ncclCommDestroy: ", ncclGetErrorString(result)));
  finished_ = true;
  return mpi_->Finish();
}

absl::StatusOr<std::unique_ptr<Work>> NcclCommunicator::StartAllReduce(CommBuffer buffer, ReduceOp op) {
  RETURN_IF_ERROR(CheckUsable("all-reduce"));
  if (buffer.device == Device::kCpu) return mpi_->StartAllReduce(buffer, op);
  RETURN_IF_ERROR(CheckBuffer(buffer, "all-reduce"));
  ASSIGN_OR_RETURN(const ncclDataType_t type, ReductionType(buffer.dtype, op));
  return Enqueue(NextLabel("allreduce", absl::StrCat(Describe(buffer), ", ", ReduceOpName(op)), buffer.bytes()),
                 buffer.bytes(), [&] {
                   return ncclAllReduce(buffer.data, buffer.data, static_cast<size_t>(buffer.count), type,
                                        NcclOp(op), comm_, stream_);
                 });
}

absl::StatusOr<std::unique_ptr<Work>> NcclCommunicator::StartBroadcast(CommBuffer buffer, int root) {
  RETURN_IF_ERROR(CheckUsable("broadcast"));
  if (buffer.device == Device::kCpu) return mpi_->StartBroadcast(buffer, root);
  RETURN_IF_ERROR(CheckBuffer(buffer, "broadcast"));
  if (root < 0 || root >= world_size()) {
    return absl::InvalidArgumentError(absl::StrCat("broadcast root ", root, " is not a rank of ", world_size()));
  }
  return Enqueue(NextLabel("broadcast", absl::StrCat(Describe(buffer), ", root ", root), buffer.bytes()),
                 buffer.bytes(), [&] {
                   return ncclBroadcast(buffer.data, buffer.data, buffer.bytes(), ncclUint8, root, comm_, stream_);
                 });
}

absl::StatusOr<std::unique_ptr<Work>> NcclCommunicator::StartAllGather(CommBuffer send, CommBuffer recv) {
  RETURN_IF_ERROR(CheckUsable("all-gather"));
  RETURN_IF_ERROR(CheckPair(send, recv, "all-gather"));
  if (send.device == Device::kCpu) return mpi_->StartAllGather(send, recv);
  if (recv.count != send.count * world_size()) {
    return absl::InvalidArgumentError(absl::StrCat("all-gather recv has ", recv.count, " elements, expected ",
                                                   send.count, " x ", world_size(), " ranks"));
  }
  // NCCL gathers in place when send is this rank's slot of recv.
  const bool in_place = send.data == static_cast<char*>(recv.data) + send.bytes() * rank_;
  if (!in_place && Overlap(send, recv)) {
    return absl::InvalidArgumentError("all-gather send overlaps recv without being this rank's slot of it");
  }
  return Enqueue(NextLabel("allgather", Describe(send), recv.bytes()), recv.bytes(), [&] {
    return ncclAllGather(send.data, recv.data, send.bytes(), ncclUint8, comm_, stream_);
  });
}

absl::StatusOr<std::unique_ptr<Work>> NcclCommunicator::StartReduceScatter(CommBuffer send, CommBuffer recv,
                                                                           ReduceOp op) {
  RETURN_IF_ERROR(CheckUsable("reduce-scatter"));
  RETURN_IF_ERROR(CheckPair(send, recv, "reduce-scatter"));
  if (send.device == Device::kCpu) return mpi_->StartReduceScatter(send, recv, op);
  if (send.count != recv.count * world_size()) {
    return absl::InvalidArgumentError(absl::StrCat("reduce-scatter send has ", send.count, " elements, expected ",
                                                   recv.count, " x ", world_size(), " ranks"));
  }
  // NCCL reduces in place when recv is this rank's block of send.
  const bool in_place = recv.data == static_cast<char*>(send.data) + recv.bytes() * rank_;
  if (!in_place && Overlap(send, recv)) {
    return absl::InvalidArgumentError("reduce-scatter recv overlaps send without being this rank's block of it");
  }
  ASSIGN_OR_RETURN(const ncclDataType_t type, ReductionType(send.dtype, op));
  return Enqueue(
      NextLabel("reducescatter", absl::StrCat(Describe(recv), " per rank, ", ReduceOpName(op)), send.bytes()),
      send.bytes(), [&] {
        return ncclReduceScatter(send.data, recv.data, static_cast<size_t>(recv.count), type, NcclOp(op), comm_,
                                 stream_);
      });
}

absl::StatusOr<std::unique_ptr<Work>> NcclCommunicator::StartBarrier() {
  RETURN_IF_ERROR(CheckUsable("barrier"));
  return mpi_->StartBarrier();
}

absl::Status NcclAvailable() {
  if (!CudaAvailable()) return absl::FailedPreconditionError("no CUDA device is visible");
  return absl::OkStatus();
}

absl::StatusOr<std::unique_ptr<Communicator>> MakeNcclCommunicator(std::unique_ptr<MpiCommunicator>* mpi,
                                                                   void* compute_stream) {
  if (mpi == nullptr || *mpi == nullptr) return absl::InvalidArgumentError("MakeNcclCommunicator: no MPI communicator");
  return NcclCommunicator::Create(mpi, compute_stream);
}

}  // namespace lamina
