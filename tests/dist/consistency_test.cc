// The configuration comparison and gradient sync as a single process; the multi-rank cases are
// in collectives_mpitest.cc.
#include <vector>

#include "core/bf16.h"
#include "dist/consistency.h"
#include "dist/grad_sync.h"
#include "dist/mpi_communicator.h"
#include "gtest/gtest.h"

namespace lamina {
namespace {

using nlohmann::json;

Communicator& Comm() {
  static std::unique_ptr<MpiCommunicator> comm = [] {
    auto c = MpiCommunicator::Create();
    LAMINA_CHECK(c.ok(), c.status().ToString());
    return std::move(c).value();
  }();
  return *comm;
}

std::string Diff(const json& a, const json& b) { return FirstDifference(a, b, "rank 1", "rank 0").value_or("same"); }

TEST(FirstDifferenceTest, NamesTheKeyPathAndBothValues) {
  json a = {{"model", {{"hidden", 768}}}, {"optimizer", {{"lr", 0.001}, {"beta1", 0.9}}}};
  json b = a;
  EXPECT_EQ(Diff(a, b), "same");
  b["optimizer"]["lr"] = 0.002;
  EXPECT_EQ(Diff(a, b), "optimizer.lr: rank 1 has 0.001, rank 0 has 0.002");
  b["model"]["hidden"] = 1024;  // keys are compared in order: model before optimizer
  EXPECT_EQ(Diff(a, b), "model.hidden: rank 1 has 768, rank 0 has 1024");
}

TEST(FirstDifferenceTest, MissingKeysArraysAndTypes) {
  EXPECT_EQ(Diff(json{{"a", 1}}, json{{"a", 1}, {"b", "x"}}), "b: rank 1 has no such key, rank 0 has \"x\"");
  EXPECT_EQ(Diff(json{{"s", {1, 2, 3}}}, json{{"s", {1, 5, 3}}}), "s[1]: rank 1 has 2, rank 0 has 5");
  EXPECT_EQ(Diff(json{{"s", {1, 2}}}, json{{"s", {1, 2, 3}}}), "s: rank 1 has 2 elements, rank 0 has 3");
  EXPECT_EQ(Diff(json{{"x", "1"}}, json{{"x", 1}}), "x: rank 1 has \"1\", rank 0 has 1");
  EXPECT_EQ(Diff(json{{"x", 1}}, json{{"x", 1.0}}), "same");  // the same number
  EXPECT_EQ(Diff(json(3), json(4)), "(the whole configuration): rank 1 has 3, rank 0 has 4");
}

TEST(CheckSameEverywhereTest, AWorldOfOneAgreesWithItself) {
  EXPECT_TRUE(CheckSameEverywhere(Comm(), json{{"optimizer", {{"lr", 0.001}}}}, "abc123").ok());
}

TEST(BroadcastParametersTest, NeedsF32) {
  std::vector<uint16_t> p(4);
  absl::Status s = BroadcastParameters(Comm(), MakeView(p.data(), DType::kBF16, Device::kCpu, Shape{4}));
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument) << s;
}

Backend* Cpu() {
  static const std::unique_ptr<Backend> backend = MakeCpuBackend();
  return backend.get();
}

std::vector<std::pair<int64_t, int64_t>> Ranges(const ShardLayout& layout) {
  std::vector<std::pair<int64_t, int64_t>> r;
  for (const GradBucket& b : layout.buckets()) r.emplace_back(b.begin, b.end);
  return r;
}

TEST(GradientSyncTest, CutsTheBufferIntoBuckets) {
  std::vector<float> g(1000);
  // 1 KiB buckets: 256 f32 elements, or 512 in bf16.
  auto s = GradientSync::Create(&Comm(), Cpu(), CpuF32(g.data(), Shape{1000}), {.bucket_mb = 1.0 / 1024});
  ASSERT_TRUE(s.ok()) << s.status();
  EXPECT_EQ(Ranges((*s)->layout()), (std::vector<std::pair<int64_t, int64_t>>{{0, 256}, {256, 512}, {512, 768}, {768, 1000}}));
  EXPECT_EQ((*s)->bytes_per_step(), 4000u);
  auto b = GradientSync::Create(&Comm(), Cpu(), CpuF32(g.data(), Shape{10, 100}), {.bucket_mb = 1.0 / 1024, .bf16 = true});
  ASSERT_TRUE(b.ok()) << b.status();
  EXPECT_EQ(Ranges((*b)->layout()), (std::vector<std::pair<int64_t, int64_t>>{{0, 512}, {512, 1000}}));
  EXPECT_EQ((*b)->bytes_per_step(), 2000u);
}

TEST(GradientSyncTest, RejectsBadArguments) {
  std::vector<float> g(10);
  EXPECT_FALSE(GradientSync::Create(&Comm(), Cpu(), CpuF32(g.data(), Shape{10}), {.bucket_mb = 0}).ok());
  EXPECT_FALSE(GradientSync::Create(&Comm(), Cpu(), MakeView(g.data(), DType::kBF16, Device::kCpu, Shape{10}), {}).ok());
}

TEST(GradientSyncTest, Bf16ModeRoundsThroughBf16) {
  std::vector<float> g = {1.0f + 1.0f / 512, 3.0f, -0.1f};
  auto s = GradientSync::Create(&Comm(), Cpu(), CpuF32(g.data(), Shape{3}), {.bf16 = true});
  ASSERT_TRUE(s.ok()) << s.status();
  ASSERT_TRUE((*s)->Run().ok());
  EXPECT_EQ(g[0], 1.0f);  // one rank: the average is the value rounded to bf16
  EXPECT_EQ(g[1], 3.0f);
  EXPECT_EQ(g[2], Bf16BitsToFloat(FloatToBf16Bits(-0.1f)));
}

}  // namespace
}  // namespace lamina
