// The communicator as a single process (a world of one, Open MPI singleton), its argument
// checks, and the pieces of the distributed layer that need no peers. Multi-rank behaviour is
// tested under mpirun by collectives_mpitest.cc and the fault cases (tests/dist/CMakeLists.txt).
#include <cstdlib>
#include <cstring>
#include <numeric>
#include <vector>

#include "core/bf16.h"
#include "dist/bf16_accumulate.h"
#include "dist/bootstrap.h"
#include "dist/fault_injection.h"
#include "dist/mpi_communicator.h"
#include "gtest/gtest.h"

namespace lamina {
namespace {

Communicator& Comm() {
  static std::unique_ptr<MpiCommunicator> comm = [] {
    auto c = MpiCommunicator::Create();
    LAMINA_CHECK(c.ok(), c.status().ToString());
    return std::move(c).value();
  }();
  return *comm;
}

uint16_t Bf(float f) { return FloatToBf16Bits(f); }

TEST(MpiCommunicatorTest, StartedDirectlyIsAWorldOfOne) {
  Communicator& c = Comm();
  EXPECT_EQ(c.name(), "mpi");
  EXPECT_EQ(c.rank(), 0);
  EXPECT_EQ(c.world_size(), 1);
  EXPECT_EQ(c.local_rank(), 0);
  EXPECT_EQ(c.local_size(), 1);
}

TEST(MpiCommunicatorTest, AllReduceOfOneRankKeepsValues) {
  std::vector<float> f = {1.5f, -2.0f, 3.25f};
  ASSERT_TRUE(Comm().AllReduce(CommBuffer{f.data(), 3, DType::kF32, Device::kCpu}, ReduceOp::kSum).ok());
  ASSERT_TRUE(Comm().AllReduce(CommBuffer{f.data(), 3, DType::kF32, Device::kCpu}, ReduceOp::kAverage).ok());
  EXPECT_EQ(f, (std::vector<float>{1.5f, -2.0f, 3.25f}));
  std::vector<uint16_t> b = {Bf(1.5f), Bf(-7.0f)};
  ASSERT_TRUE(Comm().AllReduce(CommBuffer{b.data(), 2, DType::kBF16, Device::kCpu}, ReduceOp::kAverage).ok());
  EXPECT_EQ(b, (std::vector<uint16_t>{Bf(1.5f), Bf(-7.0f)}));
  std::vector<int32_t> i = {4, 5};
  ASSERT_TRUE(Comm().AllReduce(CommBuffer{i.data(), 2, DType::kI32, Device::kCpu}, ReduceOp::kSum).ok());
  EXPECT_EQ(i, (std::vector<int32_t>{4, 5}));
  // Zero elements is a valid (empty) collective.
  ASSERT_TRUE(Comm().AllReduce(CommBuffer{nullptr, 0, DType::kF32, Device::kCpu}, ReduceOp::kSum).ok());
}

TEST(MpiCommunicatorTest, RejectsUnsupportedReductions) {
  std::vector<int32_t> i = {4};
  absl::Status s = Comm().AllReduce(CommBuffer{i.data(), 1, DType::kI32, Device::kCpu}, ReduceOp::kAverage);
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument) << s;
  std::vector<uint16_t> h = {0};
  s = Comm().AllReduce(CommBuffer{h.data(), 1, DType::kF16, Device::kCpu}, ReduceOp::kSum);
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument) << s;
  EXPECT_NE(s.message().find("f16"), absl::string_view::npos) << s;
  s = Comm().AllReduce(CommBuffer{nullptr, 3, DType::kF32, Device::kCpu}, ReduceOp::kSum);
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument) << s;
}

TEST(MpiCommunicatorTest, ChecksCountsOfGatherAndScatter) {
  std::vector<float> send(4), recv(3);
  absl::Status s = Comm().AllGather(CommBuffer{send.data(), 4, DType::kF32, Device::kCpu},
                                    CommBuffer{recv.data(), 3, DType::kF32, Device::kCpu});
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument) << s;
  s = Comm().ReduceScatter(CommBuffer{send.data(), 4, DType::kF32, Device::kCpu},
                           CommBuffer{recv.data(), 3, DType::kF32, Device::kCpu}, ReduceOp::kSum);
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument) << s;
  s = Comm().Broadcast(CommBuffer{send.data(), 4, DType::kF32, Device::kCpu}, 1);
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument) << s;
}

TEST(MpiCommunicatorTest, GatherScatterBroadcastBarrierOfOneRank) {
  std::vector<float> send = {1, 2, 3}, recv(3, 0);
  ASSERT_TRUE(Comm().AllGather(CommBuffer{send.data(), 3, DType::kF32, Device::kCpu},
                               CommBuffer{recv.data(), 3, DType::kF32, Device::kCpu}).ok());
  EXPECT_EQ(recv, send);
  std::fill(recv.begin(), recv.end(), 0.0f);
  ASSERT_TRUE(Comm().ReduceScatter(CommBuffer{send.data(), 3, DType::kF32, Device::kCpu},
                                   CommBuffer{recv.data(), 3, DType::kF32, Device::kCpu}, ReduceOp::kAverage).ok());
  EXPECT_EQ(recv, send);
  ASSERT_TRUE(Comm().Broadcast(CommBuffer{send.data(), 3, DType::kF32, Device::kCpu}, 0).ok());
  EXPECT_EQ(send, (std::vector<float>{1, 2, 3}));
  ASSERT_TRUE(Comm().Barrier().ok());
  std::string text = "odd";  // odd length: travels with a padding byte
  ASSERT_TRUE(Comm().BroadcastString(&text, 0).ok());
  EXPECT_EQ(text, "odd");
}

TEST(MpiCommunicatorTest, AsyncWorkCanBeTestedThenWaited) {
  std::vector<float> a(1000, 2.0f);
  auto work = Comm().StartAllReduce(CommBuffer{a.data(), 1000, DType::kF32, Device::kCpu}, ReduceOp::kSum);
  ASSERT_TRUE(work.ok()) << work.status();
  while (!(*work)->Test()) {
  }
  EXPECT_TRUE((*work)->Wait().ok());
  EXPECT_TRUE((*work)->Wait().ok());  // a second Wait returns the same result
  EXPECT_EQ(a[999], 2.0f);
}

#if !LAMINA_WITH_CUDA
TEST(MpiCommunicatorTest, DeviceBuffersNeedACudaBuild) {
  float x = 0;
  absl::Status s = Comm().AllReduce(CommBuffer{&x, 1, DType::kF32, Device::kCuda}, ReduceOp::kSum);
  EXPECT_EQ(s.code(), absl::StatusCode::kFailedPrecondition) << s;
  EXPECT_NE(s.message().find("CUDA"), absl::string_view::npos) << s;
}
#endif

TEST(Bf16AccumulateTest, EachAdditionRoundsToNearestEven) {
  // bf16 keeps 8 significant bits: next to 1.0 the spacing is 2^-7.
  const float ulp = 1.0f / 128;
  std::vector<uint16_t> in = {Bf(ulp / 2), Bf(3 * ulp / 2), Bf(0.75f * ulp), Bf(-1.0f), Bf(1e30f)};
  std::vector<uint16_t> acc = {Bf(1.0f), Bf(1.0f), Bf(1.0f), Bf(1.0f), Bf(1e30f)};
  AccumulateBf16(in.data(), acc.data(), 5);
  EXPECT_EQ(Bf16BitsToFloat(acc[0]), 1.0f);            // tie: stays at the even 1.0
  EXPECT_EQ(Bf16BitsToFloat(acc[1]), 1.0f + 2 * ulp);  // tie: rounds up to the even neighbour
  EXPECT_EQ(Bf16BitsToFloat(acc[2]), 1.0f + ulp);      // above the midpoint: rounds up
  EXPECT_EQ(Bf16BitsToFloat(acc[3]), 0.0f);
  EXPECT_EQ(acc[4], Bf(2e30f));
  std::vector<uint16_t> x = {Bf(3.0f)};
  DivideBf16(x.data(), 1, 2.0f);
  EXPECT_EQ(Bf16BitsToFloat(x[0]), 1.5f);
}

TEST(CollectiveTimeoutTest, ReadsTheEnvironment) {
  unsetenv("LAMINA_COLLECTIVE_TIMEOUT_S");
  EXPECT_EQ(*CollectiveTimeoutFromEnv(), 600.0);
  setenv("LAMINA_COLLECTIVE_TIMEOUT_S", "2.5", 1);
  EXPECT_EQ(*CollectiveTimeoutFromEnv(), 2.5);
  setenv("LAMINA_COLLECTIVE_TIMEOUT_S", "-1", 1);
  EXPECT_FALSE(CollectiveTimeoutFromEnv().ok());
  setenv("LAMINA_COLLECTIVE_TIMEOUT_S", "soon", 1);
  absl::StatusOr<double> bad = CollectiveTimeoutFromEnv();
  ASSERT_FALSE(bad.ok());
  EXPECT_NE(bad.status().message().find("LAMINA_COLLECTIVE_TIMEOUT_S=soon"), absl::string_view::npos);
  unsetenv("LAMINA_COLLECTIVE_TIMEOUT_S");
}

TEST(FaultPlanTest, ParsesRankStepKind) {
  absl::StatusOr<FaultPlan> plan = ParseFaultPlan("1:7:kill");
  ASSERT_TRUE(plan.ok()) << plan.status();
  EXPECT_EQ(plan->rank, 1);
  EXPECT_EQ(plan->step, 7);
  EXPECT_EQ(plan->kind, FaultKind::kKill);
  EXPECT_EQ(ParseFaultPlan("0:0:hang")->kind, FaultKind::kHang);
  EXPECT_FALSE(ParseFaultPlan("1:7").ok());
  EXPECT_FALSE(ParseFaultPlan("x:7:kill").ok());
  absl::StatusOr<FaultPlan> bad = ParseFaultPlan("1:7:explode");
  ASSERT_FALSE(bad.ok());
  EXPECT_NE(bad.status().message().find("unknown kind 'explode'"), absl::string_view::npos) << bad.status();
}

TEST(FaultPlanTest, OtherRanksAndStepsAreUntouched) {
  FaultPlan plan{3, 5, FaultKind::kAbort};
  EXPECT_TRUE(InjectFault(plan, Comm(), 5).ok());  // this is rank 0
  plan.rank = 0;
  EXPECT_TRUE(InjectFault(plan, Comm(), 4).ok());
  plan.kind = FaultKind::kError;
  EXPECT_EQ(InjectFault(plan, Comm(), 5).code(), absl::StatusCode::kInternal);
}

std::function<const char*(const char*)> FakeEnv(std::map<std::string, std::string> vars) {
  return [vars = std::move(vars)](const char* name) -> const char* {
    auto it = vars.find(name);
    return it == vars.end() ? nullptr : it->second.c_str();
  };
}

TEST(CheckLauncherTest, RecognisesLaunchers) {
  WorldInfo w;
  w.rank = 1;
  w.world_size = 4;
  ASSERT_TRUE(CheckLauncher(FakeEnv({{"OMPI_COMM_WORLD_SIZE", "4"}, {"OMPI_COMM_WORLD_RANK", "1"}}), &w).ok());
  EXPECT_EQ(w.launcher, "mpirun");
  ASSERT_TRUE(CheckLauncher(FakeEnv({{"SLURM_STEP_NUM_TASKS", "4"}, {"SLURM_PROCID", "1"}}), &w).ok());
  EXPECT_EQ(w.launcher, "srun");
  ASSERT_TRUE(CheckLauncher(FakeEnv({}), &w).ok());
  EXPECT_EQ(w.launcher, "none");
}

TEST(CheckLauncherTest, SrunWithoutPmixIsExplained) {
  WorldInfo w;  // what each task sees when srun starts independent singletons
  absl::Status s = CheckLauncher(FakeEnv({{"SLURM_STEP_NUM_TASKS", "4"}, {"SLURM_PROCID", "2"}}), &w);
  EXPECT_EQ(s.code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_NE(s.message().find("--mpi=pmix"), absl::string_view::npos) << s;
}

TEST(BootstrapTest, DescribesAWorldOfOne) {
  Comm();  // MPI already initialised by the shared communicator: Bootstrap joins it
  absl::StatusOr<Distributed> d = Bootstrap();
  ASSERT_TRUE(d.ok()) << d.status();
  EXPECT_EQ(d->world.world_size, 1);
  EXPECT_EQ(d->comm->world_size(), 1);
  EXPECT_NE(d->world.ToString().find("rank 0 of 1 (local 0 of 1)"), std::string::npos) << d->world.ToString();
}

}  // namespace
}  // namespace lamina
