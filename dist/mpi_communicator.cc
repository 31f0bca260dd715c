#include "dist/mpi_communicator.h"

#include <algorithm>
#include <chrono>
#include <climits>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <deque>
#include <thread>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "core/status.h"
#include "dist/bf16_accumulate.h"

#if LAMINA_WITH_CUDA
#include <cuda_runtime.h>
#endif

namespace lamina {
namespace {

constexpr int kRollCallTag = 1;
constexpr int kAnswerTag = 2;
// All-reduce and broadcast are split into pieces of at most this many elements, since MPI
// counts are ints.
constexpr int64_t kMaxPieceElems = int64_t{1} << 30;

absl::Status MpiError(int code, absl::string_view what) {
  char text[MPI_MAX_ERROR_STRING];
  int length = 0;
  MPI_Error_string(code, text, &length);
  return absl::InternalError(absl::StrCat(what, " failed: ", absl::string_view(text, length)));
}

void Bf16SumOp(void* in, void* inout, int* length, MPI_Datatype*) {
  AccumulateBf16(static_cast<const uint16_t*>(in), static_cast<uint16_t*>(inout), *length);
}

// Only a world of one is finalised at exit. In a larger job MPI_Finalize waits for every rank,
// so a rank exiting on an error would hang there while the others wait for it in a collective;
// exiting without it instead makes the launcher end the job. Successful runs call Finish().
void FinalizeMpiAtExit() {
  int finalized = 0;
  MPI_Finalized(&finalized);
  if (finalized) return;
  int size = 0;
  MPI_Comm_size(MPI_COMM_WORLD, &size);
  if (size == 1) MPI_Finalize();
}

absl::Status EnsureMpiInitialized() {
  int initialized = 0;
  MPI_Initialized(&initialized);
  if (initialized) return absl::OkStatus();
  // Only the calling thread makes MPI calls (the polling loop runs on it).
  int provided = 0;
  int rc = MPI_Init_thread(nullptr, nullptr, MPI_THREAD_FUNNELED, &provided);
  if (rc != MPI_SUCCESS) return MpiError(rc, "MPI_Init_thread");
  std::atexit(FinalizeMpiAtExit);
  return absl::OkStatus();
}

// Reductions supported per dtype: MPI datatype and op for a sum.
absl::Status ReductionTypes(DType dtype, ReduceOp op, MPI_Op bf16_sum, MPI_Datatype* type, MPI_Op* mpi_op) {
  switch (dtype) {
    case DType::kF32:
      *type = MPI_FLOAT;
      *mpi_op = MPI_SUM;
      return absl::OkStatus();
    case DType::kBF16:
      *type = MPI_UINT16_T;
      *mpi_op = bf16_sum;
      return absl::OkStatus();
    case DType::kI32:
      if (op == ReduceOp::kAverage) return absl::InvalidArgumentError("average of i32 buffers is not supported");
      *type = MPI_INT32_T;
      *mpi_op = MPI_SUM;
      return absl::OkStatus();
    default:
      return absl::InvalidArgumentError(
          absl::StrCat("reductions support f32, bf16 and i32 buffers, not ", DTypeName(dtype)));
  }
}

void DivideInPlace(void* data, DType dtype, int64_t count, int divisor) {
  if (dtype == DType::kF32) {
    float* x = static_cast<float*>(data);
    const float d = static_cast<float>(divisor);
    for (int64_t i = 0; i < count; ++i) x[i] /= d;
  } else {
    DivideBf16(static_cast<uint16_t*>(data), count, static_cast<float>(divisor));
  }
}

std::string Describe(CommBuffer b) {
  return absl::StrCat(DTypeName(b.dtype), " x ", b.count, b.device == Device::kCpu ? "" : " on cuda");
}

bool Overlap(const CommBuffer& a, const CommBuffer& b) {
  const char* a0 = static_cast<const char*>(a.data);
  const char* b0 = static_cast<const char*>(b.data);
  return a.device == b.device && a0 < b0 + b.bytes() && b0 < a0 + a.bytes();
}

absl::Status CheckBuffer(const CommBuffer& b, absl::string_view what) {
  if (b.count < 0) return absl::InvalidArgumentError(absl::StrCat(what, ": negative count ", b.count));
  if (b.count > 0 && b.data == nullptr) return absl::InvalidArgumentError(absl::StrCat(what, ": null data"));
#if !LAMINA_WITH_CUDA
  if (b.device != Device::kCpu) {
    return absl::FailedPreconditionError(
        absl::StrCat(what, ": a device buffer needs a CUDA build of lamina (configure with -DLAMINA_CUDA=ON)"));
  }
#endif
  return absl::OkStatus();
}

// A blocking copy between a device buffer and host memory, device to host when `to_host`.
absl::Status StagingCopy(void* dst, const void* src, size_t bytes, bool to_host) {
#if LAMINA_WITH_CUDA
  cudaError_t err = cudaMemcpy(dst, src, bytes, to_host ? cudaMemcpyDeviceToHost : cudaMemcpyHostToDevice);
  if (err != cudaSuccess) {
    return absl::InternalError(
        absl::StrCat("staging copy to ", to_host ? "host" : "device", ": ", cudaGetErrorString(err)));
  }
  return absl::OkStatus();
#else
  (void)dst;
  (void)src;
  (void)bytes;
  (void)to_host;
  return absl::FailedPreconditionError("device buffers need a CUDA build");
#endif
}

absl::Status CopyToHost(void* host, const CommBuffer& b) { return StagingCopy(host, b.data, b.bytes(), true); }

absl::Status CopyToDevice(const CommBuffer& b, const void* host) { return StagingCopy(b.data, host, b.bytes(), false); }

}  // namespace

std::string CollectiveLabel::ToString() const {
  return absl::StrCat(kind, " #", sequence, detail.empty() ? "" : " (", detail, detail.empty() ? "" : ")");
}

// Pinned host buffers for staging device data, reused across collectives. A buffer is leased
// to one outstanding collective at a time.
class MpiCommunicator::StagingPool {
 public:
  struct Slot {
    void* data = nullptr;
    size_t bytes = 0;
    bool in_use = false;
  };
  ~StagingPool() {
#if LAMINA_WITH_CUDA
    for (Slot& s : slots_) cudaFreeHost(s.data);
#endif
  }
  absl::StatusOr<Slot*> Acquire(size_t bytes) {
    Slot* best = nullptr;
    for (Slot& s : slots_) {
      if (!s.in_use && s.bytes >= bytes && (best == nullptr || s.bytes < best->bytes)) best = &s;
    }
    if (best == nullptr) {
#if LAMINA_WITH_CUDA
      void* data = nullptr;
      cudaError_t err = cudaMallocHost(&data, std::max<size_t>(bytes, 1));
      if (err != cudaSuccess) {
        return absl::ResourceExhaustedError(
            absl::StrCat("cudaMallocHost of ", bytes, " staging bytes: ", cudaGetErrorString(err)));
      }
      slots_.push_back(Slot{data, bytes, false});
      best = &slots_.back();
#else
      return absl::FailedPreconditionError("device buffers need a CUDA build");
#endif
    }
    best->in_use = true;
    return best;
  }

 private:
  std::deque<Slot> slots_;  // stable addresses: leases point into it
};

// One started collective: its MPI requests and what to do once they complete (divide for an
// average, copy staged data back to the device, return the staging buffer).
class MpiWork final : public Work {
 public:
  MpiWork(MpiCommunicator* comm, CollectiveLabel label) : comm_(comm), label_(std::move(label)) {}
  ~MpiWork() override {
    if (!finished_) Wait().IgnoreError();
  }

  absl::Status Wait() override {
    if (finished_) return status_;
    finished_ = true;
    status_ = comm_->WaitFor(requests_, label_);
    if (status_.ok()) status_ = Finish();
    if (staging_ != nullptr) staging_->in_use = false;
    return status_;
  }

  bool Test() override {
    if (finished_) return true;
    absl::Status status;
    bool done = comm_->TestAll(requests_, &status);
    return done || !status.ok();
  }

  std::vector<MPI_Request> requests_;
  // Post-processing, set by the Start* function.
  void* divide_data_ = nullptr;  // host data to divide by world size (average)
  DType divide_dtype_ = DType::kF32;
  int64_t divide_count_ = 0;
  CommBuffer copy_back_{};        // device destination of staged data
  const void* copy_back_from_ = nullptr;
  MpiCommunicator::StagingPool::Slot* staging_ = nullptr;
  // An in-place reduce-scatter on host memory receives into `scratch_`, since MPI must not
  // write into the send buffer it reads; the result is copied to `copy_scratch_to_` at the end.
  std::vector<char> scratch_;
  void* copy_scratch_to_ = nullptr;

 private:
  absl::Status Finish() {
    if (divide_data_ != nullptr) DivideInPlace(divide_data_, divide_dtype_, divide_count_, comm_->world_size());
    if (copy_back_from_ != nullptr) RETURN_IF_ERROR(CopyToDevice(copy_back_, copy_back_from_));
    if (copy_scratch_to_ != nullptr) std::memcpy(copy_scratch_to_, scratch_.data(), scratch_.size());
    return absl::OkStatus();
  }

  MpiCommunicator* comm_;
  CollectiveLabel label_;
  bool finished_ = false;
  absl::Status status_;
};

MpiCommunicator::MpiCommunicator() : staging_(std::make_unique<StagingPool>()) {}

absl::StatusOr<std::unique_ptr<MpiCommunicator>> MpiCommunicator::Create() {
  RETURN_IF_ERROR(EnsureMpiInitialized());
  ASSIGN_OR_RETURN(double timeout, CollectiveTimeoutFromEnv());
  std::unique_ptr<MpiCommunicator> c(new MpiCommunicator());
  c->timeout_seconds_ = timeout;
  int rc = MPI_Comm_dup(MPI_COMM_WORLD, &c->comm_);
  if (rc != MPI_SUCCESS) return MpiError(rc, "MPI_Comm_dup");
  rc = MPI_Comm_dup(MPI_COMM_WORLD, &c->watch_);
  if (rc != MPI_SUCCESS) return MpiError(rc, "MPI_Comm_dup");
  // Errors come back as return codes and become Status, instead of MPI aborting on its own.
  MPI_Comm_set_errhandler(c->comm_, MPI_ERRORS_RETURN);
  MPI_Comm_set_errhandler(c->watch_, MPI_ERRORS_RETURN);
  MPI_Comm_rank(c->comm_, &c->rank_);
  MPI_Comm_size(c->comm_, &c->world_size_);
  MPI_Comm node = MPI_COMM_NULL;
  rc = MPI_Comm_split_type(c->comm_, MPI_COMM_TYPE_SHARED, c->rank_, MPI_INFO_NULL, &node);
  if (rc != MPI_SUCCESS) return MpiError(rc, "MPI_Comm_split_type");
  MPI_Comm_rank(node, &c->local_rank_);
  MPI_Comm_size(node, &c->local_size_);
  MPI_Comm_free(&node);
  rc = MPI_Op_create(&Bf16SumOp, /*commute=*/1, &c->bf16_sum_);
  if (rc != MPI_SUCCESS) return MpiError(rc, "MPI_Op_create");
  c->answers_.resize(c->world_size_);
  return c;
}

MpiCommunicator::~MpiCommunicator() {
  int finalized = 0;
  MPI_Finalized(&finalized);
  if (finalized) return;
  if (bf16_sum_ != MPI_OP_NULL) MPI_Op_free(&bf16_sum_);
  if (watch_ != MPI_COMM_NULL) MPI_Comm_free(&watch_);
  if (comm_ != MPI_COMM_NULL) MPI_Comm_free(&comm_);
}

absl::Status MpiCommunicator::CheckUsable(absl::string_view what) const {
  if (finished_) return absl::FailedPreconditionError(absl::StrCat(what, " after Finish()"));
  return absl::OkStatus();
}

CollectiveLabel MpiCommunicator::NextLabel(const char* kind, std::string detail) {
  return CollectiveLabel{kind, ++started_, std::move(detail)};
}

bool MpiCommunicator::TestAll(std::vector<MPI_Request>& requests, absl::Status* status) {
  int done = 0;
  int rc = MPI_Testall(static_cast<int>(requests.size()), requests.data(), &done, MPI_STATUSES_IGNORE);
  if (rc != MPI_SUCCESS) {
    *status = MpiError(rc, "MPI_Testall");
    return false;
  }
  AnswerRollCalls();
  return done != 0;
}

absl::Status MpiCommunicator::WaitFor(std::vector<MPI_Request>& requests, const CollectiveLabel& label) {
  using Clock = std::chrono::steady_clock;
  const Clock::time_point start = Clock::now();
  if (waiting_ != kFinishing) waiting_ = static_cast<int64_t>(label.sequence);
  absl::Status status;
  for (int64_t polls = 0;; ++polls) {
    if (TestAll(requests, &status)) break;
    if (!status.ok()) break;
    const double waited = std::chrono::duration<double>(Clock::now() - start).count();
    if (waited > timeout_seconds_) AbortAfterTimeout(label, waited);
    // MPI progresses only inside MPI calls, so poll without pause while the transfer is likely
    // under way (Open MPI yields the core itself when oversubscribed); a longer wait means a
    // peer is still computing, so stop burning a core on it.
    if (waited > 0.2) std::this_thread::sleep_for(std::chrono::microseconds(100));
  }
  if (waiting_ != kFinishing) waiting_ = 0;
  return status.ok() ? status : Annotate(status, label.ToString());
}

void MpiCommunicator::AnswerRollCalls() {
  if (world_size_ == 1) return;
  for (;;) {
    int pending = 0;
    MPI_Status probe;
    if (MPI_Iprobe(MPI_ANY_SOURCE, kRollCallTag, watch_, &pending, &probe) != MPI_SUCCESS || !pending) return;
    int64_t asked_about = 0;
    MPI_Recv(&asked_about, 1, MPI_INT64_T, probe.MPI_SOURCE, kRollCallTag, watch_, MPI_STATUS_IGNORE);
    // The asking rank aborts the job right after, so the send need not be waited on.
    std::array<int64_t, 1>& answer = answers_[probe.MPI_SOURCE];
    answer[0] = waiting_;
    MPI_Request request;
    if (MPI_Isend(answer.data(), 1, MPI_INT64_T, probe.MPI_SOURCE, kAnswerTag, watch_, &request) == MPI_SUCCESS) {
      MPI_Request_free(&request);
    }
  }
}

void MpiCommunicator::AbortAfterTimeout(const CollectiveLabel& label, double waited_seconds) {
  // Roll call: every rank waiting in a collective answers with its sequence number within the
  // grace period; the silent ones are the likely culprits.
  int64_t question = static_cast<int64_t>(label.sequence);
  for (int r = 0; r < world_size_; ++r) {
    if (r == rank_) continue;
    MPI_Request request;
    if (MPI_Isend(&question, 1, MPI_INT64_T, r, kRollCallTag, watch_, &request) == MPI_SUCCESS) {
      MPI_Request_free(&request);
    }
  }
  constexpr int64_t kSilent = -1;
  std::vector<int64_t> answer(world_size_, kSilent);
  answer[rank_] = static_cast<int64_t>(label.sequence);
  const double grace = std::clamp(timeout_seconds_ / 4, 1.0, 5.0);
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::duration<double>(grace);
  int answered = 1;
  while (answered < world_size_ && std::chrono::steady_clock::now() < deadline) {
    AnswerRollCalls();
    int pending = 0;
    MPI_Status probe;
    if (MPI_Iprobe(MPI_ANY_SOURCE, kAnswerTag, watch_, &pending, &probe) == MPI_SUCCESS && pending) {
      int64_t sequence = 0;
      MPI_Recv(&sequence, 1, MPI_INT64_T, probe.MPI_SOURCE, kAnswerTag, watch_, MPI_STATUS_IGNORE);
      if (answer[probe.MPI_SOURCE] == kSilent) ++answered;
      answer[probe.MPI_SOURCE] = sequence;
    } else {
      std::this_thread::sleep_for(std::chrono::milliseconds(1));
    }
  }
  std::vector<int> silent;
  std::vector<std::string> waiting;
  for (int r = 0; r < world_size_; ++r) {
    if (r == rank_) continue;
    if (answer[r] == kSilent) {
      silent.push_back(r);
    } else if (answer[r] == kFinishing) {
      waiting.push_back(absl::StrCat(r, " (already finished: it called Finish())"));
    } else if (answer[r] == 0) {
      waiting.push_back(absl::StrCat(r, " (between collectives)"));
    } else {
      waiting.push_back(absl::StrCat(r, " (in #", answer[r], ")"));
    }
  }
  std::string message =
      std::strcmp(label.kind, "finish") == 0
          ? absl::StrFormat("rank %d: finished, but the other ranks did not call Finish() within %.0f s", rank_,
                            waited_seconds)
          : absl::StrFormat("rank %d: %s timed out after %.0f s waiting for the other ranks", rank_,
                            label.ToString(), waited_seconds);
  if (!silent.empty()) {
    absl::StrAppend(&message, "; no answer from rank", silent.size() > 1 ? "s " : " ", absl::StrJoin(silent, ", "),
                    " (dead, exited early, or stuck outside the collectives)");
  }
  if (!waiting.empty()) absl::StrAppend(&message, "; still waiting: rank ", absl::StrJoin(waiting, ", rank "));
  absl::StrAppend(&message, "; aborting the job (LAMINA_COLLECTIVE_TIMEOUT_S=", timeout_seconds_, ")");
  std::fprintf(stderr, "%s\n", message.c_str());
  std::fflush(stderr);
  MPI_Abort(MPI_COMM_WORLD, 1);
  std::_Exit(1);
}

void MpiCommunicator::Fail(const absl::Status& status) {
  std::fprintf(stderr, "rank %d failed: %s\n", rank_, std::string(status.message()).c_str());
  std::fflush(stderr);
  MPI_Abort(MPI_COMM_WORLD, 1);
  std::_Exit(1);
}

absl::Status MpiCommunicator::Finish() {
  if (finished_) return absl::FailedPreconditionError("Finish() called twice");
  // The barrier runs on the roll-call communicator: on the collectives' one, an early Finish()
  // would be matched against the other ranks' pending collectives.
  const CollectiveLabel label{"finish", ++started_, ""};
  waiting_ = kFinishing;
  std::vector<MPI_Request> requests(1);
  int rc = MPI_Ibarrier(watch_, requests.data());
  if (rc != MPI_SUCCESS) return MpiError(rc, "MPI_Ibarrier");
  RETURN_IF_ERROR(WaitFor(requests, label));
  finished_ = true;
  MPI_Op_free(&bf16_sum_);
  MPI_Comm_free(&watch_);
  MPI_Comm_free(&comm_);
  int finalized = 0;
  MPI_Finalized(&finalized);
  if (!finalized) {
    rc = MPI_Finalize();
    if (rc != MPI_SUCCESS) return MpiError(rc, "MPI_Finalize");
  }
  return absl::OkStatus();
}

absl::StatusOr<std::unique_ptr<Work>> MpiCommunicator::StartAllReduce(CommBuffer buffer, ReduceOp op) {
  RETURN_IF_ERROR(CheckUsable("all-reduce"));
  RETURN_IF_ERROR(CheckBuffer(buffer, "all-reduce"));
  MPI_Datatype type;
  MPI_Op mpi_op;
  RETURN_IF_ERROR(ReductionTypes(buffer.dtype, op, bf16_sum_, &type, &mpi_op));
  auto work = std::make_unique<MpiWork>(
      this, NextLabel("allreduce", absl::StrCat(Describe(buffer), ", ", ReduceOpName(op))));
  void* host = buffer.data;
  if (buffer.device != Device::kCpu) {
    ASSIGN_OR_RETURN(work->staging_, staging_->Acquire(buffer.bytes()));
    host = work->staging_->data;
    RETURN_IF_ERROR(CopyToHost(host, buffer));
    work->copy_back_ = buffer;
    work->copy_back_from_ = host;
  }
  if (op == ReduceOp::kAverage && world_size_ > 1) {
    work->divide_data_ = host;
    work->divide_dtype_ = buffer.dtype;
    work->divide_count_ = buffer.count;
  }
  const size_t elem = DTypeSize(buffer.dtype);
  for (int64_t begin = 0; begin < buffer.count || (begin == 0 && buffer.count == 0); begin += kMaxPieceElems) {
    const int64_t n = std::min(kMaxPieceElems, buffer.count - begin);
    MPI_Request request;
    int rc = MPI_Iallreduce(MPI_IN_PLACE, static_cast<char*>(host) + begin * elem, static_cast<int>(n), type, mpi_op,
                            comm_, &request);
    if (rc != MPI_SUCCESS) return MpiError(rc, "MPI_Iallreduce");
    work->requests_.push_back(request);
    if (buffer.count == 0) break;
  }
  return std::unique_ptr<Work>(std::move(work));
}

absl::StatusOr<std::unique_ptr<Work>> MpiCommunicator::StartBroadcast(CommBuffer buffer, int root) {
  RETURN_IF_ERROR(CheckUsable("broadcast"));
  RETURN_IF_ERROR(CheckBuffer(buffer, "broadcast"));
  if (root < 0 || root >= world_size_) {
    return absl::InvalidArgumentError(absl::StrCat("broadcast root ", root, " is not a rank of ", world_size_));
  }
  auto work = std::make_unique<MpiWork>(this, NextLabel("broadcast", absl::StrCat(Describe(buffer), ", root ", root)));
  void* host = buffer.data;
  if (buffer.device != Device::kCpu) {
    ASSIGN_OR_RETURN(work->staging_, staging_->Acquire(buffer.bytes()));
    host = work->staging_->data;
    if (rank_ == root) {
      RETURN_IF_ERROR(CopyToHost(host, buffer));
    } else {
      work->copy_back_ = buffer;
      work->copy_back_from_ = host;
    }
  }
  const int64_t bytes = static_cast<int64_t>(buffer.bytes());
  for (int64_t begin = 0; begin < bytes || (begin == 0 && bytes == 0); begin += kMaxPieceElems) {
    const int64_t n = std::min(kMaxPieceElems, bytes - begin);
    MPI_Request request;
    int rc = MPI_Ibcast(static_cast<char*>(host) + begin, static_cast<int>(n), MPI_BYTE, root, comm_, &request);
    if (rc != MPI_SUCCESS) return MpiError(rc, "MPI_Ibcast");
    work->requests_.push_back(request);
    if (bytes == 0) break;
  }
  return std::unique_ptr<Work>(std::move(work));
}

absl::StatusOr<std::unique_ptr<Work>> MpiCommunicator::StartAllGather(CommBuffer send, CommBuffer recv) {
  RETURN_IF_ERROR(CheckUsable("all-gather"));
  RETURN_IF_ERROR(CheckBuffer(send, "all-gather send"));
  RETURN_IF_ERROR(CheckBuffer(recv, "all-gather recv"));
  if (send.dtype != recv.dtype || send.device != recv.device) {
    return absl::InvalidArgumentError(
        absl::StrCat("all-gather send ", Describe(send), " and recv ", Describe(recv), " differ in dtype or device"));
  }
  if (recv.count != send.count * world_size_) {
    return absl::InvalidArgumentError(absl::StrCat("all-gather recv has ", recv.count, " elements, expected ",
                                                   send.count, " x ", world_size_, " ranks"));
  }
  const size_t slot_bytes = send.bytes();
  if (slot_bytes * world_size_ > static_cast<size_t>(INT_MAX)) {
    return absl::InvalidArgumentError(absl::StrCat("all-gather of ", recv.bytes(), " bytes is too large"));
  }
  char* own_slot = static_cast<char*>(recv.data) + slot_bytes * rank_;
  const bool in_place = send.data == own_slot;
  if (!in_place && Overlap(send, recv)) {
    return absl::InvalidArgumentError("all-gather send overlaps recv without being this rank's slot of it");
  }
  auto work = std::make_unique<MpiWork>(this, NextLabel("allgather", Describe(send)));
  char* host = static_cast<char*>(recv.data);
  // Always gather in place on the host: the rank's own block is put in its slot first.
  if (recv.device != Device::kCpu) {
    ASSIGN_OR_RETURN(work->staging_, staging_->Acquire(recv.bytes()));
    host = static_cast<char*>(work->staging_->data);
    RETURN_IF_ERROR(CopyToHost(host + slot_bytes * rank_, send));
    work->copy_back_ = recv;
    work->copy_back_from_ = host;
  } else if (!in_place && slot_bytes > 0) {
    std::memcpy(own_slot, send.data, slot_bytes);
  }
  MPI_Request request;
  int rc = MPI_Iallgather(MPI_IN_PLACE, 0, MPI_DATATYPE_NULL, host, static_cast<int>(slot_bytes), MPI_BYTE, comm_,
                          &request);
  if (rc != MPI_SUCCESS) return MpiError(rc, "MPI_Iallgather");
  work->requests_.push_back(request);
  return std::unique_ptr<Work>(std::move(work));
}

absl::StatusOr<std::unique_ptr<Work>> MpiCommunicator::StartReduceScatter(CommBuffer send, CommBuffer recv,
                                                                          ReduceOp op) {
  RETURN_IF_ERROR(CheckUsable("reduce-scatter"));
  RETURN_IF_ERROR(CheckBuffer(send, "reduce-scatter send"));
  RETURN_IF_ERROR(CheckBuffer(recv, "reduce-scatter recv"));
  if (send.dtype != recv.dtype || send.device != recv.device) {
    return absl::InvalidArgumentError(absl::StrCat("reduce-scatter send ", Describe(send), " and recv ",
                                                   Describe(recv), " differ in dtype or device"));
  }
  if (send.count != recv.count * world_size_) {
    return absl::InvalidArgumentError(absl::StrCat("reduce-scatter send has ", send.count, " elements, expected ",
                                                   recv.count, " x ", world_size_, " ranks"));
  }
  if (send.count > INT_MAX) {
    return absl::InvalidArgumentError(absl::StrCat("reduce-scatter of ", send.count, " elements is too large"));
  }
  const bool in_place = recv.data == static_cast<char*>(send.data) + recv.bytes() * rank_;
  if (!in_place && Overlap(send, recv)) {
    return absl::InvalidArgumentError("reduce-scatter recv overlaps send without being this rank's block of it");
  }
  MPI_Datatype type;
  MPI_Op mpi_op;
  RETURN_IF_ERROR(ReductionTypes(send.dtype, op, bf16_sum_, &type, &mpi_op));
  auto work = std::make_unique<MpiWork>(
      this, NextLabel("reducescatter", absl::StrCat(Describe(recv), " per rank, ", ReduceOpName(op))));
  const void* host_send = send.data;
  void* host_recv = recv.data;
  if (send.device != Device::kCpu) {
    ASSIGN_OR_RETURN(work->staging_, staging_->Acquire(send.bytes() + recv.bytes()));
    char* base = static_cast<char*>(work->staging_->data);
    RETURN_IF_ERROR(CopyToHost(base, send));
    host_send = base;
    host_recv = base + send.bytes();
    work->copy_back_ = recv;
    work->copy_back_from_ = host_recv;
  } else if (in_place && recv.count > 0) {
    work->scratch_.resize(recv.bytes());
    host_recv = work->scratch_.data();
    work->copy_scratch_to_ = recv.data;
  }
  if (op == ReduceOp::kAverage && world_size_ > 1) {
    work->divide_data_ = host_recv;
    work->divide_dtype_ = recv.dtype;
    work->divide_count_ = recv.count;
  }
  MPI_Request request;
  int rc = MPI_Ireduce_scatter_block(host_send, host_recv, static_cast<int>(recv.count), type, mpi_op, comm_,
                                     &request);
  if (rc != MPI_SUCCESS) return MpiError(rc, "MPI_Ireduce_scatter_block");
  work->requests_.push_back(request);
  return std::unique_ptr<Work>(std::move(work));
}

absl::StatusOr<std::unique_ptr<Work>> MpiCommunicator::StartBarrier() {
  RETURN_IF_ERROR(CheckUsable("barrier"));
  auto work = std::make_unique<MpiWork>(this, NextLabel("barrier", ""));
  MPI_Request request;
  int rc = MPI_Ibarrier(comm_, &request);
  if (rc != MPI_SUCCESS) return MpiError(rc, "MPI_Ibarrier");
  work->requests_.push_back(request);
  return std::unique_ptr<Work>(std::move(work));
}

}  // namespace lamina
