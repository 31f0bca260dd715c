#include "pretrain/run_config.h"

#include <filesystem>

#include "absl/strings/match.h"
#include "core/file_util.h"
#include "gtest/gtest.h"

namespace lamina {
namespace {

std::string ErrorOf(const std::string& json, const std::vector<std::string>& overrides = {}) {
  nlohmann::json j = nlohmann::json::parse(json);
  for (const std::string& o : overrides) {
    absl::Status s = ApplyOverride(o, &j);
    if (!s.ok()) return std::string(s.message());
  }
  auto c = RunConfig::FromJson(j);
  return c.ok() ? "" : std::string(c.status().message());
}

TEST(RunConfig, UnknownKeysAndBadValuesNameTheKey) {
  EXPECT_EQ(ErrorOf("{}"), "");
  EXPECT_TRUE(absl::StrContains(ErrorOf(R"({"optimiser": {}})"), "optimiser: unknown section"));
  EXPECT_TRUE(absl::StrContains(ErrorOf(R"({"batch": {"global": 4}})"), "batch.global: unknown key"));
  EXPECT_TRUE(absl::StrContains(ErrorOf(R"({"batch": {"micro_batch": "8"}})"), "batch.micro_batch: expected an integer"));
  EXPECT_TRUE(absl::StrContains(ErrorOf(R"({"batch": {"micro_batch": 0}})"), "batch.micro_batch: must be positive"));
  EXPECT_TRUE(absl::StrContains(ErrorOf(R"({"run": {"device": "tpu"}})"), "run.device"));
  EXPECT_TRUE(absl::StrContains(ErrorOf(R"({"run": {"seed": -1}})"), "run.seed"));
  EXPECT_TRUE(absl::StrContains(ErrorOf(R"({"run": {"attention": "sdpa"}})"),
                                "run.attention: expected \"auto\", \"gemm\" or \"flash\", got \"sdpa\""));
  EXPECT_TRUE(absl::StrContains(ErrorOf(R"({"data": {"mask_prob": 1.5}})"), "data.mask_prob"));
  EXPECT_TRUE(absl::StrContains(ErrorOf(R"({"run": {"gemm_autotune": "yes"}})"), "run.gemm_autotune"));
  EXPECT_TRUE(absl::StrContains(ErrorOf(R"({"model": {"heads": 5}})"), "model.heads"));
  EXPECT_TRUE(absl::StrContains(ErrorOf(R"({"optimizer": {"name": "sgd"}})"), "optimizer.name"));
  EXPECT_TRUE(absl::StrContains(ErrorOf(R"({"eval": {"every": -1}})"), "eval.every"));
  EXPECT_TRUE(absl::StrContains(ErrorOf(R"({"checkpoint": 3})"), "checkpoint: expected an object"));
}

TEST(RunConfig, OverridesSetAnyKeyAndAreChecked) {
  EXPECT_EQ(ErrorOf("{}", {"model.norm=pre", "optimizer.weight_decay=0", "batch.micro_batch=8"}), "");
  EXPECT_TRUE(absl::StrContains(ErrorOf("{}", {"model.nrom=pre"}), "model.nrom: unknown key"));
  EXPECT_TRUE(absl::StrContains(ErrorOf("{}", {"novalue"}), "expected key=value"));
  nlohmann::json j = nlohmann::json::object();
  ASSERT_TRUE(ApplyOverride("schedule.lr=2e-4", &j).ok());
  ASSERT_TRUE(ApplyOverride("model.norm=none", &j).ok());
  ASSERT_TRUE(ApplyOverride("model.init=tfixup", &j).ok());
  auto c = RunConfig::FromJson(j);
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_FLOAT_EQ(c->schedule.lr, 2e-4);
  EXPECT_EQ(c->model.norm, NormPlacement::kNone);
  EXPECT_EQ(c->schedule.total_steps, c->run.steps) << "the schedule spans the run by default";
}

TEST(RunConfig, ResolvedConfigRoundTrips) {
  auto c = RunConfig::FromJson(
      nlohmann::json::parse(R"({"model": {"layers": 3},
                                "run": {"steps": 7, "attention": "flash", "gemm_autotune": true}})"));
  ASSERT_TRUE(c.ok());
  EXPECT_EQ(c->run.attention, AttentionKernel::kFlash);
  EXPECT_TRUE(c->run.gemm_autotune);
  EXPECT_TRUE(c->run.backend_options().gemm_autotune);
  auto again = RunConfig::FromJson(c->ToJson());
  ASSERT_TRUE(again.ok()) << again.status();
  EXPECT_EQ(again->ToJson(), c->ToJson());
}

TEST(RunConfig, SectionsMayLiveInTheirOwnFiles) {
  const std::string dir = ::testing::TempDir() + "/lamina_run_config";
  std::filesystem::create_directories(dir + "/model");
  ASSERT_TRUE(WriteFileAtomic(dir + "/model/m.json", R"({"hidden": 64, "heads": 4, "ffn": 128, "layers": 2})").ok());
  ASSERT_TRUE(WriteFileAtomic(dir + "/run.json", R"({"model": "model/m.json", "run": {"steps": 5}})").ok());
  auto c = LoadRunConfig(dir + "/run.json", {"model.layers=3"});
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->model.hidden, 64);
  EXPECT_EQ(c->model.layers, 3);
  ASSERT_TRUE(WriteFileAtomic(dir + "/broken.json", R"({"model": "model/missing.json"})").ok());
  auto bad = LoadRunConfig(dir + "/broken.json", {});
  ASSERT_FALSE(bad.ok());
  EXPECT_TRUE(absl::StrContains(bad.status().message(), "missing.json")) << bad.status();
  // A bare model object is the model section; the other sections keep their defaults.
  auto bare = LoadRunConfig(dir + "/model/m.json", {"model.layers=3", "run.attention=flash"});
  ASSERT_TRUE(bare.ok()) << bare.status();
  EXPECT_EQ(bare->model.hidden, 64);
  EXPECT_EQ(bare->model.layers, 3);
  EXPECT_EQ(bare->run.attention, AttentionKernel::kFlash);
  ASSERT_TRUE(WriteFileAtomic(dir + "/typo.json", R"({"hiden": 64})").ok());
  auto typo = LoadRunConfig(dir + "/typo.json", {});
  ASSERT_FALSE(typo.ok());
  EXPECT_TRUE(absl::StrContains(typo.status().message(), "hiden")) << typo.status();
  // The shipped configs parse.
  const char* src = std::getenv("LAMINA_SOURCE_DIR");
  ASSERT_NE(src, nullptr);
  for (const char* name : {"quickstart", "bert-base-postln", "bert-base-preln", "bert-base-tfixup"}) {
    auto shipped = LoadRunConfig(std::string(src) + "/launch/configs/" + name + ".json", {});
    EXPECT_TRUE(shipped.ok()) << name << ": " << shipped.status();
  }
}

}  // namespace
}  // namespace lamina
