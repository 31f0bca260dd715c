// Collectives on device buffers, which MpiCommunicator stages through pinned host memory. Run
// under mpirun with 2 ranks (tests/dist/CMakeLists.txt); both ranks may share one GPU. Skipped
// without a CUDA build and a GPU.
#include <cstdio>
#include <vector>

#include "core/bf16.h"
#include "core/buffer.h"
#include "dist/bootstrap.h"
#include "dist/grad_sync.h"
#include "gtest/gtest.h"
#include "tests/dist/mpi_test_main.h"

namespace lamina {
namespace {

Communicator* g_comm = nullptr;
int Rank() { return g_comm->rank(); }
int World() { return g_comm->world_size(); }

float Exact(int rank, int64_t i) { return static_cast<float>((rank + 1) * static_cast<int>(i % 5) - 3) * 0.25f; }

class DeviceStagingTest : public testing::Test {
 protected:
  void SetUp() override {
    if (!CudaAvailable()) GTEST_SKIP() << "needs a CUDA build and a GPU";
  }
  // A device buffer holding `host`.
  template <typename T>
  Buffer ToDevice(const std::vector<T>& host) {
    absl::StatusOr<Buffer> b = Buffer::Allocate(Device::kCuda, host.size() * sizeof(T));
    LAMINA_CHECK(b.ok(), b.status().ToString());
    LAMINA_CHECK(CopyBytes(b->data(), Device::kCuda, host.data(), Device::kCpu, host.size() * sizeof(T)).ok());
    return std::move(b).value();
  }
  template <typename T>
  std::vector<T> ToHost(const Buffer& b, size_t n) {
    std::vector<T> host(n);
    LAMINA_CHECK(CopyBytes(host.data(), Device::kCpu, b.data(), Device::kCuda, n * sizeof(T)).ok());
    return host;
  }
};

TEST_F(DeviceStagingTest, AllReduceF32AndBf16) {
  const int64_t n = 100003;
  for (ReduceOp op : {ReduceOp::kSum, ReduceOp::kAverage}) {
    std::vector<float> x(n), want(n);
    std::vector<uint16_t> x16(n), want16(n);
    for (int64_t i = 0; i < n; ++i) {
      x[i] = Exact(Rank(), i);
      x16[i] = FloatToBf16Bits(x[i]);
      float sum = 0;
      for (int r = 0; r < World(); ++r) sum += Exact(r, i);
      want[i] = op == ReduceOp::kSum ? sum : sum / World();
      want16[i] = FloatToBf16Bits(want[i]);
    }
    Buffer d = ToDevice(x), d16 = ToDevice(x16);
    // Both in flight at once: each holds its own staging buffer.
    auto w = g_comm->StartAllReduce(CommBuffer{d.data(), n, DType::kF32, Device::kCuda}, op);
    auto w16 = g_comm->StartAllReduce(CommBuffer{d16.data(), n, DType::kBF16, Device::kCuda}, op);
    ASSERT_TRUE(w.ok() && w16.ok());
    ASSERT_TRUE((*w16)->Wait().ok());
    ASSERT_TRUE((*w)->Wait().ok());
    EXPECT_EQ(ToHost<float>(d, n), want) << ReduceOpName(op);
    EXPECT_EQ(ToHost<uint16_t>(d16, n), want16) << ReduceOpName(op);
  }
}

TEST_F(DeviceStagingTest, BroadcastAllGatherReduceScatter) {
  const int64_t n = 4097;
  std::vector<float> x(n);
  for (int64_t i = 0; i < n; ++i) x[i] = Exact(Rank(), i);
  Buffer b = ToDevice(x);
  ASSERT_TRUE(g_comm->Broadcast(CommBuffer{b.data(), n, DType::kF32, Device::kCuda}, World() - 1).ok());
  std::vector<float> got = ToHost<float>(b, n);
  for (int64_t i = 0; i < n; ++i) ASSERT_EQ(got[i], Exact(World() - 1, i)) << i;

  Buffer send = ToDevice(x);
  Buffer recv = ToDevice(std::vector<float>(n * World()));
  ASSERT_TRUE(g_comm->AllGather(CommBuffer{send.data(), n, DType::kF32, Device::kCuda},
                                CommBuffer{recv.data(), n * World(), DType::kF32, Device::kCuda}).ok());
  got = ToHost<float>(recv, n * World());
  for (int r = 0; r < World(); ++r) {
    for (int64_t i = 0; i < n; ++i) ASSERT_EQ(got[r * n + i], Exact(r, i)) << r << " " << i;
  }

  std::vector<float> full(n * World());
  for (int64_t i = 0; i < n * World(); ++i) full[i] = Exact(Rank(), i);
  Buffer rs_send = ToDevice(full);
  Buffer rs_recv = ToDevice(std::vector<float>(n));
  ASSERT_TRUE(g_comm->ReduceScatter(CommBuffer{rs_send.data(), n * World(), DType::kF32, Device::kCuda},
                                    CommBuffer{rs_recv.data(), n, DType::kF32, Device::kCuda}, ReduceOp::kAverage)
                  .ok());
  got = ToHost<float>(rs_recv, n);
  for (int64_t i = 0; i < n; ++i) {
    float sum = 0;
    for (int r = 0; r < World(); ++r) sum += Exact(r, Rank() * n + i);
    ASSERT_EQ(got[i], sum / World()) << i;
  }
}

TEST_F(DeviceStagingTest, GradientSyncOfDeviceGradients) {
  const int64_t n = 300007;
  std::vector<float> g(n), want(n);
  for (int64_t i = 0; i < n; ++i) {
    g[i] = Exact(Rank(), i);
    float sum = 0;
    for (int r = 0; r < World(); ++r) sum += Exact(r, i);
    want[i] = sum / World();
  }
  Buffer d = ToDevice(g);
  absl::StatusOr<std::unique_ptr<Backend>> backend = MakeCudaBackend();
  ASSERT_TRUE(backend.ok()) << backend.status();
  auto sync = GradientSync::Create(g_comm, backend->get(), MakeView(d.data(), DType::kF32, Device::kCuda, Shape{n}),
                                   {.bucket_mb = 0.25});
  ASSERT_TRUE(sync.ok()) << sync.status();
  ASSERT_TRUE((*sync)->Run().ok());
  EXPECT_EQ(ToHost<float>(d, n), want);
}

}  // namespace
}  // namespace lamina

int main(int argc, char** argv) { return lamina::RunMpiTests(argc, argv, &lamina::g_comm); }
