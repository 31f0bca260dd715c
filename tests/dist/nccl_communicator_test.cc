// The NCCL communicator as a world of one (Open MPI singleton, no mpirun): the collectives on
// device buffers, in place and out of place, their ordering after the compute stream, host
// buffers handed to MPI, the timeout; and, on any machine, what selecting NCCL does where it
// cannot work (no CUDA build, no GPU, ranks sharing a GPU). The GPU tests skip themselves
// without a CUDA build and a GPU.
#include <chrono>
#include <cstring>
#include <thread>
#include <vector>

#include "core/bf16.h"
#include "core/buffer.h"
#include "dist/bootstrap.h"
#include "dist/mpi_communicator.h"
#include "dist/nccl_communicator.h"
#include "gtest/gtest.h"

#if LAMINA_WITH_CUDA
#include <cuda_runtime.h>
#endif

namespace lamina {
namespace {

#if LAMINA_WITH_CUDA
constexpr bool kCudaBuild = true;
#else
constexpr bool kCudaBuild = false;
#endif

bool Contains(absl::string_view text, absl::string_view part) { return text.find(part) != absl::string_view::npos; }

// ---- Without a GPU (and with one): choosing the communicator ----

TEST(SelectCommunicatorTest, UnknownChoiceIsRefused) {
  absl::StatusOr<Distributed> d = Bootstrap({.comm = "gloo"});
  ASSERT_FALSE(d.ok());
  EXPECT_EQ(d.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_TRUE(Contains(d.status().message(), "expected auto, nccl or mpi")) << d.status();
}

TEST(SelectCommunicatorTest, NcclWhereItCannotRunIsAClearError) {
  if (CudaAvailable()) GTEST_SKIP() << "a GPU is present: NCCL can run here";
  // At start-up already ...
  absl::StatusOr<Distributed> d = Bootstrap({.comm = "nccl"});
  ASSERT_FALSE(d.ok());
  EXPECT_TRUE(Contains(d.status().message(), "--comm nccl: ")) << d.status();
  EXPECT_TRUE(Contains(d.status().message(), kCudaBuild ? "no CUDA device" : "this build has no CUDA/NCCL"))
      << d.status();
  EXPECT_TRUE(Contains(d.status().message(), "--comm mpi")) << d.status();
  // ... and when selecting, in case the choice was made otherwise; the MPI communicator stays
  // in place for Fail().
  d = Bootstrap({.comm = "mpi"});
  ASSERT_TRUE(d.ok()) << d.status();
  d->comm_choice = "nccl";
  absl::Status s = SelectCommunicator(&*d, nullptr);
  EXPECT_FALSE(s.ok());
  EXPECT_TRUE(absl::IsFailedPrecondition(s) || absl::IsUnavailable(s)) << s;
  ASSERT_NE(d->comm, nullptr);
  EXPECT_EQ(d->comm->name(), "mpi");
}

TEST(SelectCommunicatorTest, AutoFallsBackToMpiWithoutAGpuStream) {
  // A null compute stream is what the CPU backend gives, GPU or not.
  absl::StatusOr<Distributed> d = Bootstrap({.comm = "auto"});
  ASSERT_TRUE(d.ok()) << d.status();
  EXPECT_EQ(d->comm_choice, "auto");
  ASSERT_TRUE(SelectCommunicator(&*d, nullptr).ok());
  EXPECT_EQ(d->comm->name(), "mpi");
  // Still a working communicator.
  float x = 2.5f;
  ASSERT_TRUE(d->comm->AllReduce(CommBuffer{&x, 1, DType::kF32, Device::kCpu}, ReduceOp::kSum).ok());
  EXPECT_EQ(x, 2.5f);
}

TEST(SelectCommunicatorTest, MpiIsKept) {
  absl::StatusOr<Distributed> d = Bootstrap({.comm = "mpi"});
  ASSERT_TRUE(d.ok()) << d.status();
  ASSERT_TRUE(SelectCommunicator(&*d, nullptr).ok());
  EXPECT_EQ(d->comm->name(), "mpi");
}

TEST(MakeNcclCommunicatorTest, KeepsTheMpiCommunicatorOnError) {
  absl::StatusOr<std::unique_ptr<MpiCommunicator>> mpi = MpiCommunicator::Create();
  ASSERT_TRUE(mpi.ok()) << mpi.status();
  // No compute stream: refused before NCCL starts, on any machine.
  absl::StatusOr<std::unique_ptr<Communicator>> nccl = MakeNcclCommunicator(&*mpi, nullptr);
  ASSERT_FALSE(nccl.ok());
  EXPECT_TRUE(absl::IsFailedPrecondition(nccl.status()) || absl::IsUnavailable(nccl.status())) << nccl.status();
  if (CudaAvailable()) {
    EXPECT_EQ(nccl.status().message(), "rank 0: no CUDA compute stream (the CPU backend computes on the host)");
  }
  EXPECT_NE(*mpi, nullptr);
}

TEST(NcclAvailableTest, SaysWhy) {
  absl::Status s = NcclAvailable();
  if (!kCudaBuild) {
    EXPECT_EQ(s, absl::UnavailableError("this build has no CUDA/NCCL"));
  } else if (!CudaAvailable()) {
    EXPECT_TRUE(absl::IsFailedPrecondition(s)) << s;
  } else {
    EXPECT_TRUE(s.ok()) << s;
  }
}

TEST(CheckOneRankPerGpuTest, NamesTheRanksSharingAGpu) {
  EXPECT_TRUE(CheckOneRankPerGpu({"GPU-a"}).ok());
  EXPECT_TRUE(CheckOneRankPerGpu({"GPU-a", "GPU-b", "GPU-c"}).ok());
  absl::Status s = CheckOneRankPerGpu({"GPU-a", "GPU-b", "GPU-c", "GPU-b"});
  EXPECT_TRUE(absl::IsFailedPrecondition(s)) << s;
  EXPECT_TRUE(Contains(s.message(), "ranks 1 and 3 share one GPU (GPU-b)")) << s;
  EXPECT_TRUE(Contains(s.message(), "--comm mpi")) << s;
}

// ---- With a GPU: a world of one ----

#if LAMINA_WITH_CUDA

#define CUDA_OK(expr) ASSERT_EQ((expr), cudaSuccess) << #expr

// Makes `stream` busy for `ms` milliseconds (a host function on the stream), so that what is
// queued after it visibly waits.
void Stall(cudaStream_t stream, int ms) {
  static int stall_ms;
  stall_ms = ms;
  ASSERT_EQ(cudaLaunchHostFunc(
                stream, [](void*) { std::this_thread::sleep_for(std::chrono::milliseconds(stall_ms)); }, nullptr),
            cudaSuccess);
}

class NcclCommunicatorTest : public testing::Test {
 protected:
  void SetUp() override {
    if (!CudaAvailable()) GTEST_SKIP() << "needs a GPU";
    CUDA_OK(cudaStreamCreateWithFlags(&compute_, cudaStreamNonBlocking));
    absl::StatusOr<std::unique_ptr<MpiCommunicator>> mpi = MpiCommunicator::Create();
    ASSERT_TRUE(mpi.ok()) << mpi.status();
    absl::StatusOr<std::unique_ptr<Communicator>> nccl = MakeNcclCommunicator(&*mpi, compute_);
    ASSERT_TRUE(nccl.ok()) << nccl.status();
    comm_ = std::move(nccl).value();
  }
  void TearDown() override {
    // Not Finish(): it would finalise MPI for the rest of the process. Destroying aborts NCCL.
    comm_.reset();
    buffers_.clear();
    if (compute_ != nullptr) cudaStreamDestroy(compute_);
  }

  // A device copy of `host`, written through the compute stream.
  template <typename T>
  CommBuffer ToDevice(const std::vector<T>& host, DType dtype) {
    absl::StatusOr<Buffer> b = Buffer::Allocate(Device::kCuda, std::max<size_t>(1, host.size() * sizeof(T)));
    EXPECT_TRUE(b.ok()) << b.status();
    EXPECT_EQ(cudaMemcpyAsync(b->data(), host.data(), host.size() * sizeof(T), cudaMemcpyHostToDevice, compute_),
              cudaSuccess);
    EXPECT_EQ(cudaStreamSynchronize(compute_), cudaSuccess);
    buffers_.push_back(std::move(b).value());
    return CommBuffer{buffers_.back().data(), static_cast<int64_t>(host.size()), dtype, Device::kCuda};
  }
  // The device data, read through the compute stream (ordered after a waited collective).
  template <typename T>
  std::vector<T> ToHost(const CommBuffer& b) {
    std::vector<T> host(b.count);
    EXPECT_EQ(cudaMemcpyAsync(host.data(), b.data, b.bytes(), cudaMemcpyDeviceToHost, compute_), cudaSuccess);
    EXPECT_EQ(cudaStreamSynchronize(compute_), cudaSuccess);
    return host;
  }

  cudaStream_t compute_ = nullptr;
  std::unique_ptr<Communicator> comm_;
  std::vector<Buffer> buffers_;
};

TEST_F(NcclCommunicatorTest, DescribesItself) {
  EXPECT_EQ(comm_->name(), "nccl");
  EXPECT_EQ(comm_->rank(), 0);
  EXPECT_EQ(comm_->world_size(), 1);
  EXPECT_EQ(comm_->local_rank(), 0);
  EXPECT_EQ(comm_->local_size(), 1);
  EXPECT_TRUE(comm_->orders_after_device_work());
}

TEST_F(NcclCommunicatorTest, AllReduceF32Bf16I32SumAndAverage) {
  const int64_t n = 100003;
  std::vector<float> f(n);
  std::vector<uint16_t> b(n);
  std::vector<int32_t> i(n);
  for (int64_t k = 0; k < n; ++k) {
    f[k] = static_cast<float>(k % 17) * 0.25f - 2.0f;
    b[k] = FloatToBf16Bits(f[k]);
    i[k] = static_cast<int32_t>(k) - 50;
  }
  for (ReduceOp op : {ReduceOp::kSum, ReduceOp::kAverage}) {
    CommBuffer df = ToDevice(f, DType::kF32), db = ToDevice(b, DType::kBF16);
    // Both in flight at once, waited for in reverse order.
    auto wf = comm_->StartAllReduce(df, op);
    auto wb = comm_->StartAllReduce(db, op);
    ASSERT_TRUE(wf.ok() && wb.ok()) << wf.status() << wb.status();
    ASSERT_TRUE((*wb)->Wait().ok());
    ASSERT_TRUE((*wf)->Wait().ok());
    EXPECT_EQ(ToHost<float>(df), f) << ReduceOpName(op);
    EXPECT_EQ(ToHost<uint16_t>(db), b) << ReduceOpName(op);
  }
  CommBuffer di = ToDevice(i, DType::kI32);
  ASSERT_TRUE(comm_->AllReduce(di, ReduceOp::kSum).ok());
  EXPECT_EQ(ToHost<int32_t>(di), i);
  EXPECT_EQ(comm_->AllReduce(di, ReduceOp::kAverage).code(), absl::StatusCode::kInvalidArgument);
  // An empty buffer is a valid collective.
  ASSERT_TRUE(comm_->AllReduce(CommBuffer{nullptr, 0, DType::kF32, Device::kCuda}, ReduceOp::kSum).ok());
}

TEST_F(NcclCommunicatorTest, BroadcastAnyDtype) {
  std::vector<uint16_t> h = {1, 2, 3, 65535, 7};  // f16 travels as bytes
  CommBuffer d = ToDevice(h, DType::kF16);
  ASSERT_TRUE(comm_->Broadcast(d, 0).ok());
  EXPECT_EQ(ToHost<uint16_t>(d), h);
  EXPECT_EQ(comm_->Broadcast(d, 1).code(), absl::StatusCode::kInvalidArgument);
}

TEST_F(NcclCommunicatorTest, AllGatherSeparateAndInPlace) {
  std::vector<float> h = {1.5f, -2.0f, 3.0f};
  CommBuffer send = ToDevice(h, DType::kF32);
  CommBuffer recv = ToDevice(std::vector<float>(3, 0.0f), DType::kF32);
  ASSERT_TRUE(comm_->AllGather(send, recv).ok());
  EXPECT_EQ(ToHost<float>(recv), h);
  ASSERT_TRUE(comm_->AllGather(send, send).ok());  // world of one: the rank's slot is all of recv
  EXPECT_EQ(ToHost<float>(send), h);
  CommBuffer shifted{static_cast<float*>(recv.data) + 1, 2, DType::kF32, Device::kCuda};
  EXPECT_EQ(comm_->AllGather(shifted, CommBuffer{recv.data, 2, DType::kF32, Device::kCuda}).code(),
            absl::StatusCode::kInvalidArgument);
}

TEST_F(NcclCommunicatorTest, ReduceScatterSeparateAndInPlace) {
  std::vector<float> h = {0.5f, 1.0f, -4.0f, 8.0f};
  for (ReduceOp op : {ReduceOp::kSum, ReduceOp::kAverage}) {
    CommBuffer send = ToDevice(h, DType::kF32);
    CommBuffer recv = ToDevice(std::vector<float>(4, 0.0f), DType::kF32);
    ASSERT_TRUE(comm_->ReduceScatter(send, recv, op).ok());
    EXPECT_EQ(ToHost<float>(recv), h) << ReduceOpName(op);
    ASSERT_TRUE(comm_->ReduceScatter(send, send, op).ok());  // recv = this rank's block of send
    EXPECT_EQ(ToHost<float>(send), h) << ReduceOpName(op);
    std::vector<uint16_t> h16 = {FloatToBf16Bits(0.5f), FloatToBf16Bits(-3.0f)};
    CommBuffer send16 = ToDevice(h16, DType::kBF16);
    ASSERT_TRUE(comm_->ReduceScatter(send16, send16, op).ok());
    EXPECT_EQ(ToHost<uint16_t>(send16), h16) << ReduceOpName(op);
  }
  CommBuffer send = ToDevice(h, DType::kF32);
  CommBuffer overlapping{static_cast<float*>(send.data) + 1, 3, DType::kF32, Device::kCuda};
  EXPECT_EQ(comm_->ReduceScatter(CommBuffer{send.data, 3, DType::kF32, Device::kCuda}, overlapping, ReduceOp::kSum)
                .code(),
            absl::StatusCode::kInvalidArgument);
}

TEST_F(NcclCommunicatorTest, HostBuffersGoThroughMpi) {
  float loss = 3.25f;
  ASSERT_TRUE(comm_->AllReduce(CommBuffer{&loss, 1, DType::kF32, Device::kCpu}, ReduceOp::kSum).ok());
  EXPECT_EQ(loss, 3.25f);
  int32_t stop = 1;
  ASSERT_TRUE(comm_->AllReduce(CommBuffer{&stop, 1, DType::kI32, Device::kCpu}, ReduceOp::kSum).ok());
  EXPECT_EQ(stop, 1);
  std::vector<float> send = {1, 2}, recv(2);
  ASSERT_TRUE(comm_->AllGather(CommBuffer{send.data(), 2, DType::kF32, Device::kCpu},
                               CommBuffer{recv.data(), 2, DType::kF32, Device::kCpu}).ok());
  EXPECT_EQ(recv, send);
  std::string text = "from rank 0";
  ASSERT_TRUE(comm_->BroadcastString(&text, 0).ok());
  EXPECT_EQ(text, "from rank 0");
  ASSERT_TRUE(comm_->Barrier().ok());
  // Host and device halves of one collective do not mix.
  CommBuffer d = ToDevice(send, DType::kF32);
  EXPECT_EQ(comm_->AllGather(CommBuffer{send.data(), 2, DType::kF32, Device::kCpu}, d).code(),
            absl::StatusCode::kInvalidArgument);
}

TEST_F(NcclCommunicatorTest, CollectiveIsOrderedAfterTheComputeStream) {
  // The compute stream is held up, then zeroes the input: a collective started meanwhile must
  // see the zeros, not the ones that were there when Start was called.
  const int64_t n = 1 << 20;
  CommBuffer send = ToDevice(std::vector<float>(n, 1.0f), DType::kF32);
  CommBuffer recv = ToDevice(std::vector<float>(n, 7.0f), DType::kF32);
  Stall(compute_, 300);
  CUDA_OK(cudaMemsetAsync(send.data, 0, send.bytes(), compute_));
  auto work = comm_->StartAllGather(send, recv);
  ASSERT_TRUE(work.ok()) << work.status();
  EXPECT_FALSE((*work)->Test());  // still behind the stalled compute stream
  ASSERT_TRUE((*work)->Wait().ok());
  EXPECT_TRUE((*work)->Test());
  // Wait() also ordered the compute stream after the collective: this copy reads the result.
  EXPECT_EQ(ToHost<float>(recv), std::vector<float>(n, 0.0f));
}

TEST_F(NcclCommunicatorTest, TimeoutComesFromTheMpiCommunicatorAndCanBeSet) {
  absl::StatusOr<double> from_env = CollectiveTimeoutFromEnv();
  ASSERT_TRUE(from_env.ok());
  EXPECT_EQ(comm_->timeout_seconds(), *from_env);
  comm_->set_timeout_seconds(12.5);
  EXPECT_EQ(comm_->timeout_seconds(), 12.5);
}

TEST_F(NcclCommunicatorTest, CollectivePastTheTimeoutAbortsTheJob) {
  GTEST_FLAG_SET(death_test_style, "threadsafe");
  CommBuffer d = ToDevice(std::vector<float>(1024, 1.0f), DType::kF32);
  EXPECT_DEATH(
      {
        comm_->set_timeout_seconds(0.3);
        Stall(compute_, 3000);  // the collective cannot start within the timeout
        auto work = comm_->StartAllReduce(d, ReduceOp::kSum);
        if (work.ok()) (*work)->Wait().IgnoreError();
      },
      "rank 0: allreduce #1 \\(f32 x 1024, sum\\) on 4096 bytes timed out after 0\\.[0-9] s");
}

TEST_F(NcclCommunicatorTest, UnusableAfterFinishAndFinishOnlyOnce) {
  // Finish() finalises MPI, so this is the only test that calls it; gtest runs each test of
  // this binary in its own process under ctest.
  ASSERT_TRUE(comm_->Finish().ok());
  float x = 1;
  EXPECT_EQ(comm_->AllReduce(CommBuffer{&x, 1, DType::kF32, Device::kCpu}, ReduceOp::kSum).code(),
            absl::StatusCode::kFailedPrecondition);
  EXPECT_EQ(comm_->Finish().code(), absl::StatusCode::kFailedPrecondition);
}

#else

TEST(NcclCommunicatorTest, NeedsACudaBuild) { GTEST_SKIP() << "this build has no CUDA/NCCL"; }

#endif

}  // namespace
}  // namespace lamina
