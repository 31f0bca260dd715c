// The collectives, config agreement and gradient sync across ranks. Run under mpirun with 1, 2
// and 4 ranks by tests/dist/CMakeLists.txt; every rank runs every test, and the process exit
// code is non-zero on all ranks when any rank failed a test.
#include <cmath>
#include <cstdio>
#include <numeric>
#include <vector>

#include "core/bf16.h"
#include "dist/bf16_accumulate.h"
#include "dist/bootstrap.h"
#include "dist/consistency.h"
#include "dist/grad_sync.h"
#include "gtest/gtest.h"
#include "tests/dist/mpi_test_main.h"

namespace lamina {
namespace {

Communicator* g_comm = nullptr;

Communicator& Comm() { return *g_comm; }
int Rank() { return g_comm->rank(); }
int World() { return g_comm->world_size(); }

CommBuffer Host(float* p, int64_t n) { return CommBuffer{p, n, DType::kF32, Device::kCpu}; }
CommBuffer Host(uint16_t* p, int64_t n) { return CommBuffer{p, n, DType::kBF16, Device::kCpu}; }
CommBuffer Host(int32_t* p, int64_t n) { return CommBuffer{p, n, DType::kI32, Device::kCpu}; }

// Values whose sums over ranks are exact in f32 and bf16 whatever the order of addition, so a
// result can be compared bit for bit with a plain loop: small integers times powers of two.
float Exact(int rank, int64_t i) { return static_cast<float>((rank + 1) * static_cast<int>(i % 5) - 3) * 0.25f; }

// Every rank's copy of `values`, to check all ranks hold the same bits.
template <typename T>
std::vector<T> GatherAll(const std::vector<T>& values) {
  std::vector<T> all(values.size() * World());
  std::vector<T> copy = values;
  const DType dtype = sizeof(T) == 2 ? DType::kU16 : DType::kI32;
  EXPECT_TRUE(Comm().AllGather(CommBuffer{copy.data(), static_cast<int64_t>(copy.size()), dtype, Device::kCpu},
                               CommBuffer{all.data(), static_cast<int64_t>(all.size()), dtype, Device::kCpu}).ok());
  return all;
}

void ExpectSameOnAllRanks(const std::vector<float>& values) {
  std::vector<int32_t> bits(values.size());
  std::memcpy(bits.data(), values.data(), values.size() * 4);
  std::vector<int32_t> all = GatherAll(bits);
  for (int r = 0; r < World(); ++r) {
    EXPECT_TRUE(std::equal(bits.begin(), bits.end(), all.begin() + r * bits.size())) << "rank " << r << " differs";
  }
}

const std::vector<int64_t> kSizes = {0, 1, 3, 1000, 65537};

TEST(AllReduceTest, F32SumAndAverageMatchAPlainLoop) {
  for (ReduceOp op : {ReduceOp::kSum, ReduceOp::kAverage}) {
    for (int64_t n : kSizes) {
      std::vector<float> x(n), expected(n);
      for (int64_t i = 0; i < n; ++i) {
        x[i] = Exact(Rank(), i);
        float sum = 0;
        for (int r = 0; r < World(); ++r) sum += Exact(r, i);
        expected[i] = op == ReduceOp::kSum ? sum : sum / World();
      }
      ASSERT_TRUE(Comm().AllReduce(Host(x.data(), n), op).ok());
      EXPECT_EQ(x, expected) << ReduceOpName(op) << " n=" << n;
    }
  }
}

TEST(AllReduceTest, Bf16SumAndAverageMatchAPlainLoop) {
  for (ReduceOp op : {ReduceOp::kSum, ReduceOp::kAverage}) {
    for (int64_t n : kSizes) {
      std::vector<uint16_t> x(n), expected(n);
      for (int64_t i = 0; i < n; ++i) {
        x[i] = FloatToBf16Bits(Exact(Rank(), i));
        float sum = 0;
        for (int r = 0; r < World(); ++r) sum += Exact(r, i);
        expected[i] = FloatToBf16Bits(op == ReduceOp::kSum ? sum : sum / World());
      }
      ASSERT_TRUE(Comm().AllReduce(Host(x.data(), n), op).ok());
      EXPECT_EQ(x, expected) << ReduceOpName(op) << " n=" << n;
    }
  }
}

TEST(AllReduceTest, Bf16RoundsEachAdditionAndAllRanksAgree) {
  // 1 + k/256 is not a bf16 sum of exact terms: the order of additions matters, but every
  // rank must end with the same bits, and the result is within a few bf16 ulps of the sum.
  const int64_t n = 4099;
  std::vector<uint16_t> x(n);
  std::vector<double> exact(n, 0.0);
  for (int64_t i = 0; i < n; ++i) {
    x[i] = FloatToBf16Bits(1.0f + static_cast<float>((i * 7 + Rank() * 3) % 11) / 256.0f);
    for (int r = 0; r < World(); ++r) {
      exact[i] += Bf16BitsToFloat(FloatToBf16Bits(1.0f + static_cast<float>((i * 7 + r * 3) % 11) / 256.0f));
    }
  }
  ASSERT_TRUE(Comm().AllReduce(Host(x.data(), n), ReduceOp::kSum).ok());
  std::vector<uint16_t> all = GatherAll(x);
  for (int r = 0; r < World(); ++r) EXPECT_TRUE(std::equal(x.begin(), x.end(), all.begin() + r * n)) << "rank " << r;
  for (int64_t i = 0; i < n; ++i) {
    ASSERT_NEAR(Bf16BitsToFloat(x[i]), exact[i], World() * exact[i] / 128) << i;
  }
}

TEST(AllReduceTest, RandomF32AgreesOnAllRanks) {
  const int64_t n = 10007;
  std::vector<float> x(n);
  std::vector<double> exact(n, 0.0);
  for (int64_t i = 0; i < n; ++i) {
    for (int r = 0; r < World(); ++r) {
      const float v = std::sin(static_cast<float>(i * 13 + r * 101));
      if (r == Rank()) x[i] = v;
      exact[i] += v;
    }
  }
  ASSERT_TRUE(Comm().AllReduce(Host(x.data(), n), ReduceOp::kAverage).ok());
  for (int64_t i = 0; i < n; ++i) ASSERT_NEAR(x[i], exact[i] / World(), 1e-6) << i;
  ExpectSameOnAllRanks(x);
}

TEST(AllReduceTest, I32Sum) {
  std::vector<int32_t> x = {Rank(), 1, -2 * Rank()};
  ASSERT_TRUE(Comm().AllReduce(Host(x.data(), 3), ReduceOp::kSum).ok());
  const int32_t ranks = World() * (World() - 1) / 2;
  EXPECT_EQ(x, (std::vector<int32_t>{ranks, World(), -2 * ranks}));
}

TEST(BroadcastTest, FromEveryRoot) {
  for (int root = 0; root < World(); ++root) {
    for (int64_t n : kSizes) {
      std::vector<float> x(n);
      for (int64_t i = 0; i < n; ++i) x[i] = Exact(Rank(), i) + 100.0f * root;
      ASSERT_TRUE(Comm().Broadcast(Host(x.data(), n), root).ok());
      for (int64_t i = 0; i < n; ++i) ASSERT_EQ(x[i], Exact(root, i) + 100.0f * root) << "root " << root << " i " << i;
    }
  }
  std::string text = Rank() == 1 % World() ? "from rank one" : "";
  ASSERT_TRUE(Comm().BroadcastString(&text, 1 % World()).ok());
  EXPECT_EQ(text, "from rank one");
}

TEST(AllGatherTest, SeparateAndInPlace) {
  for (int64_t n : {int64_t{0}, int64_t{1}, int64_t{5}, int64_t{3001}}) {
    std::vector<uint16_t> send(n), recv(n * World(), 0), in_place(n * World(), 0);
    for (int64_t i = 0; i < n; ++i) send[i] = static_cast<uint16_t>(Rank() * 1000 + i);
    std::copy(send.begin(), send.end(), in_place.begin() + Rank() * n);
    ASSERT_TRUE(Comm().AllGather(Host(send.data(), n), Host(recv.data(), n * World())).ok());
    ASSERT_TRUE(Comm().AllGather(Host(in_place.data() + Rank() * n, n), Host(in_place.data(), n * World())).ok());
    for (int r = 0; r < World(); ++r) {
      for (int64_t i = 0; i < n; ++i) {
        ASSERT_EQ(recv[r * n + i], static_cast<uint16_t>(r * 1000 + i)) << "n " << n << " rank " << r;
      }
    }
    EXPECT_EQ(recv, in_place);
  }
}

TEST(ReduceScatterTest, F32AndBf16SumAndAverage) {
  for (ReduceOp op : {ReduceOp::kSum, ReduceOp::kAverage}) {
    for (int64_t n : {int64_t{1}, int64_t{7}, int64_t{2049}}) {
      std::vector<float> send(n * World()), recv(n);
      std::vector<uint16_t> send16(n * World()), recv16(n);
      for (int64_t i = 0; i < n * World(); ++i) {
        send[i] = Exact(Rank(), i);
        send16[i] = FloatToBf16Bits(send[i]);
      }
      ASSERT_TRUE(Comm().ReduceScatter(Host(send.data(), n * World()), Host(recv.data(), n), op).ok());
      ASSERT_TRUE(Comm().ReduceScatter(Host(send16.data(), n * World()), Host(recv16.data(), n), op).ok());
      for (int64_t i = 0; i < n; ++i) {
        const int64_t global = Rank() * n + i;
        float sum = 0;
        for (int r = 0; r < World(); ++r) sum += Exact(r, global);
        const float want = op == ReduceOp::kSum ? sum : sum / World();
        ASSERT_EQ(recv[i], want) << ReduceOpName(op) << " n " << n << " i " << i;
        ASSERT_EQ(recv16[i], FloatToBf16Bits(want)) << ReduceOpName(op) << " n " << n << " i " << i;
      }
    }
  }
}

TEST(ReduceScatterTest, InPlaceIntoTheRanksOwnBlock) {
  // recv is this rank's block of send; the other blocks are inputs only.
  for (ReduceOp op : {ReduceOp::kSum, ReduceOp::kAverage}) {
    for (int64_t n : {int64_t{0}, int64_t{1}, int64_t{7}, int64_t{2049}}) {
      std::vector<float> data(n * World());
      std::vector<uint16_t> data16(n * World());
      for (int64_t i = 0; i < n * World(); ++i) {
        data[i] = Exact(Rank(), i);
        data16[i] = FloatToBf16Bits(data[i]);
      }
      ASSERT_TRUE(Comm().ReduceScatter(Host(data.data(), n * World()), Host(data.data() + Rank() * n, n), op).ok());
      ASSERT_TRUE(
          Comm().ReduceScatter(Host(data16.data(), n * World()), Host(data16.data() + Rank() * n, n), op).ok());
      for (int64_t i = 0; i < n; ++i) {
        const int64_t global = Rank() * n + i;
        float sum = 0;
        for (int r = 0; r < World(); ++r) sum += Exact(r, global);
        const float want = op == ReduceOp::kSum ? sum : sum / World();
        ASSERT_EQ(data[global], want) << ReduceOpName(op) << " n " << n << " i " << i;
        ASSERT_EQ(data16[global], FloatToBf16Bits(want)) << ReduceOpName(op) << " n " << n << " i " << i;
      }
    }
  }
  // Overlapping send without being the rank's own block is still refused (on every rank, before
  // any communication).
  std::vector<float> data(4 * World() + 1);
  absl::Status s =
      Comm().ReduceScatter(Host(data.data(), 4 * World()), Host(data.data() + Rank() * 4 + 1, 4), ReduceOp::kSum);
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument) << s;
}

TEST(AsyncTest, ManyOutstandingCollectivesOverlapWithWork) {
  // Several all-reduces in flight at once, computation in between, waited in reverse order.
  constexpr int kBuffers = 6;
  std::vector<std::vector<float>> buffers(kBuffers);
  std::vector<std::unique_ptr<Work>> works;
  for (int b = 0; b < kBuffers; ++b) {
    buffers[b].assign(1000 * (b + 1) + b, static_cast<float>(Rank() + b));
    auto w = Comm().StartAllReduce(Host(buffers[b].data(), buffers[b].size()), ReduceOp::kSum);
    ASSERT_TRUE(w.ok()) << w.status();
    works.push_back(std::move(w).value());
  }
  auto barrier = Comm().StartBarrier();
  ASSERT_TRUE(barrier.ok());
  double busy = 0;  // the overlapped "computation", polling now and then as a trainer would
  for (int i = 0; i < 200000; ++i) {
    busy += std::sqrt(static_cast<double>(i));
    if (i % 10000 == 0) works[0]->Test();
  }
  EXPECT_GT(busy, 0);
  EXPECT_TRUE((*barrier)->Wait().ok());
  for (int b = kBuffers - 1; b >= 0; --b) {
    ASSERT_TRUE(works[b]->Wait().ok());
    const float want = static_cast<float>(World() * (World() - 1) / 2 + World() * b);
    for (float v : buffers[b]) ASSERT_EQ(v, want) << "buffer " << b;
  }
}

TEST(CheckSameEverywhereTest, AgreeingRanksPass) {
  nlohmann::json config = {{"model", {{"hidden", 64}}}, {"optimizer", {{"lr", 0.002}}}};
  EXPECT_TRUE(CheckSameEverywhere(Comm(), config, "manifest-abc").ok());
}

TEST(CheckSameEverywhereTest, EveryRankReportsTheFirstDifference) {
  if (World() < 2) GTEST_SKIP() << "needs two ranks";
  nlohmann::json config = {{"model", {{"hidden", 64}}}, {"optimizer", {{"lr", 0.002}}}};
  if (Rank() % 2 == 1) config["optimizer"]["lr"] = 0.001;
  absl::Status s = CheckSameEverywhere(Comm(), config, "manifest-abc");
  const std::string which = World() > 3 ? "ranks 1, 3 differ" : "rank 1 differs";
  EXPECT_EQ(s.message(), absl::StrCat("ranks disagree (", which,
                                      " from rank 0): optimizer.lr: rank 1 has 0.001, rank 0 has 0.002"));
  EXPECT_EQ(s.code(), absl::StatusCode::kFailedPrecondition);
}

TEST(CheckSameEverywhereTest, ManifestHashIsCompared) {
  if (World() < 2) GTEST_SKIP() << "needs two ranks";
  nlohmann::json config = {{"a", 1}};
  const std::string hash = Rank() == World() - 1 ? "bbb" : "aaa";
  absl::Status s = CheckSameEverywhere(Comm(), config, hash);
  const int last = World() - 1;
  EXPECT_EQ(s.message(), absl::StrCat("ranks disagree (rank ", last, " differs from rank 0): data manifest hash: rank ",
                                      last, " has bbb, rank 0 has aaa"));
}

TEST(AgreeOnStatusTest, EveryRankGetsTheLowestFailingRanksError) {
  EXPECT_TRUE(AgreeOnStatus(Comm(), absl::OkStatus()).ok());
  // The last rank fails with one code, the ranks from 1 on with another: rank 1's wins.
  absl::Status mine = absl::OkStatus();
  if (Rank() == World() - 1) mine = absl::UnavailableError("last rank's reason");
  if (Rank() >= 1 && Rank() < World() - 1) mine = absl::FailedPreconditionError(absl::StrCat("reason of ", Rank()));
  absl::Status agreed = AgreeOnStatus(Comm(), mine);
  if (World() == 1) {
    EXPECT_EQ(agreed, absl::UnavailableError("rank 0: last rank's reason"));
  } else if (World() == 2) {
    EXPECT_EQ(agreed, absl::UnavailableError("rank 1: last rank's reason"));
  } else {
    EXPECT_EQ(agreed, absl::FailedPreconditionError("rank 1: reason of 1"));
  }
}

TEST(BroadcastParametersTest, EveryRankEndsWithRankZerosValues) {
  std::vector<float> p(5000);
  for (size_t i = 0; i < p.size(); ++i) p[i] = Exact(Rank(), i) + Rank();
  ASSERT_TRUE(BroadcastParameters(Comm(), CpuF32(p.data(), Shape{50, 100})).ok());
  for (size_t i = 0; i < p.size(); ++i) ASSERT_EQ(p[i], Exact(0, i)) << i;
}

TEST(GradientSyncTest, EqualsAStraightforwardAverage) {
  const int64_t n = 300007;  // uneven: the last bucket is short
  for (bool bf16 : {false, true}) {
    std::vector<float> grads(n), expected(n);
    for (int64_t i = 0; i < n; ++i) {
      grads[i] = Exact(Rank(), i);
      float sum = 0;
      for (int r = 0; r < World(); ++r) sum += Exact(r, i);
      expected[i] = sum / World();
      if (bf16) expected[i] = Bf16BitsToFloat(FloatToBf16Bits(expected[i]));
    }
    auto backend = MakeCpuBackend();
    auto sync =
        GradientSync::Create(&Comm(), backend.get(), CpuF32(grads.data(), Shape{n}), {.bucket_mb = 0.25, .bf16 = bf16});
    ASSERT_TRUE(sync.ok()) << sync.status();
    EXPECT_EQ((*sync)->layout().buckets().size(), bf16 ? 3u : 5u);
    (*sync)->Start();
    (*sync)->Test();
    ASSERT_TRUE((*sync)->Wait().ok());
    EXPECT_EQ(grads, expected) << (bf16 ? "bf16" : "f32");
    // A second step on the same object works the same way.
    for (int64_t i = 0; i < n; ++i) grads[i] = Exact(Rank(), i);
    ASSERT_TRUE((*sync)->Run().ok());
    EXPECT_EQ(grads, expected) << (bf16 ? "bf16" : "f32") << " second step";
  }
}

}  // namespace
}  // namespace lamina

int main(int argc, char** argv) { return lamina::RunMpiTests(argc, argv, &lamina::g_comm); }
