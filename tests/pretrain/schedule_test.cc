// Learning-rate schedules: hand-computed values at chosen steps, warmup 0, the end of training,
// JSON round trips and the errors for invalid configs.
#include "pretrain/schedule.h"

#include <cmath>

#include "absl/strings/match.h"
#include "gtest/gtest.h"

namespace lamina {
namespace {

ScheduleConfig Parse(const char* text) {
  auto c = ScheduleConfig::FromJson(nlohmann::json::parse(text));
  EXPECT_TRUE(c.ok()) << c.status();
  return c.value_or(ScheduleConfig{});
}

void ExpectError(const char* text, const std::string& expected) {
  auto c = ScheduleConfig::FromJson(nlohmann::json::parse(text));
  ASSERT_FALSE(c.ok()) << text;
  EXPECT_TRUE(absl::StrContains(c.status().message(), expected)) << c.status() << "\nexpected: " << expected;
}

TEST(Schedule, ConstantWithAndWithoutWarmup) {
  const ScheduleConfig none = Parse(R"({"name": "constant", "lr": 0.001})");
  EXPECT_DOUBLE_EQ(none.LearningRate(0), 1e-3);
  EXPECT_DOUBLE_EQ(none.LearningRate(1000000), 1e-3);
  const ScheduleConfig warm = Parse(R"({"name": "constant", "lr": 0.001, "warmup_steps": 4})");
  EXPECT_DOUBLE_EQ(warm.LearningRate(0), 0.25e-3);  // the first update is not wasted at lr 0
  EXPECT_DOUBLE_EQ(warm.LearningRate(1), 0.5e-3);
  EXPECT_DOUBLE_EQ(warm.LearningRate(3), 1e-3);     // update 4 is the first at the peak
  EXPECT_DOUBLE_EQ(warm.LearningRate(4), 1e-3);
}

TEST(Schedule, LinearWarmupThenDecayToZero) {
  const ScheduleConfig c = Parse(R"({"name": "linear", "lr": 1.0, "warmup_steps": 2, "total_steps": 10})");
  EXPECT_DOUBLE_EQ(c.LearningRate(0), 0.5);
  EXPECT_DOUBLE_EQ(c.LearningRate(1), 1.0);
  EXPECT_DOUBLE_EQ(c.LearningRate(2), 1.0);    // (10 - 2) / (10 - 2)
  EXPECT_DOUBLE_EQ(c.LearningRate(6), 0.5);    // (10 - 6) / 8
  EXPECT_DOUBLE_EQ(c.LearningRate(9), 0.125);  // the last update still moves the weights
  EXPECT_DOUBLE_EQ(c.LearningRate(10), 0.0);   // end of training and beyond
  EXPECT_DOUBLE_EQ(c.LearningRate(1000), 0.0);
}

TEST(Schedule, LinearWithoutWarmupToEndLr) {
  const ScheduleConfig c = Parse(R"({"name": "linear", "lr": 1.0, "total_steps": 4, "end_lr": 0.2})");
  EXPECT_DOUBLE_EQ(c.LearningRate(0), 1.0);
  EXPECT_DOUBLE_EQ(c.LearningRate(1), 0.8);   // 0.2 + 0.8 * 3/4
  EXPECT_DOUBLE_EQ(c.LearningRate(3), 0.4);   // 0.2 + 0.8 * 1/4
  EXPECT_DOUBLE_EQ(c.LearningRate(4), 0.2);
  EXPECT_DOUBLE_EQ(c.LearningRate(5), 0.2);
}

TEST(Schedule, PolynomialDecay) {
  const ScheduleConfig c = Parse(R"({"name": "polynomial", "lr": 2.0, "total_steps": 4, "power": 2})");
  EXPECT_DOUBLE_EQ(c.LearningRate(0), 2.0);
  EXPECT_DOUBLE_EQ(c.LearningRate(2), 0.5);     // 2 * (2/4)^2
  EXPECT_DOUBLE_EQ(c.LearningRate(3), 0.125);   // 2 * (1/4)^2
  EXPECT_DOUBLE_EQ(c.LearningRate(4), 0.0);
  const ScheduleConfig warm =
      Parse(R"({"name": "polynomial", "lr": 1.0, "warmup_steps": 3, "total_steps": 7, "power": 0.5, "end_lr": 0.1})");
  EXPECT_DOUBLE_EQ(warm.LearningRate(0), 1.0 / 3);
  EXPECT_DOUBLE_EQ(warm.LearningRate(3), 1.0);
  EXPECT_DOUBLE_EQ(warm.LearningRate(6), 0.1 + 0.9 * 0.5);  // sqrt((7 - 6) / (7 - 3))
  EXPECT_DOUBLE_EQ(warm.LearningRate(7), 0.1);
  // Power 1 is the linear schedule.
  const ScheduleConfig p1 = Parse(R"({"name": "polynomial", "lr": 0.3, "warmup_steps": 5, "total_steps": 50, "power": 1})");
  const ScheduleConfig lin = Parse(R"({"name": "linear", "lr": 0.3, "warmup_steps": 5, "total_steps": 50})");
  for (int64_t s = 0; s <= 55; ++s) EXPECT_DOUBLE_EQ(p1.LearningRate(s), lin.LearningRate(s)) << s;
}

TEST(Schedule, InverseSqrt) {
  const ScheduleConfig c = Parse(R"({"name": "inverse_sqrt", "lr": 1.0, "warmup_steps": 4})");
  EXPECT_DOUBLE_EQ(c.LearningRate(0), 0.25);
  EXPECT_DOUBLE_EQ(c.LearningRate(3), 1.0);
  EXPECT_DOUBLE_EQ(c.LearningRate(4), std::sqrt(4.0 / 5.0));
  EXPECT_DOUBLE_EQ(c.LearningRate(15), 0.5);
  EXPECT_DOUBLE_EQ(c.LearningRate(63), 0.25);
  // No warmup: lr / sqrt(update), full rate on the first update; identical to warmup 1.
  const ScheduleConfig none = Parse(R"({"name": "inverse_sqrt", "lr": 1.0, "warmup_steps": 0})");
  const ScheduleConfig one = Parse(R"({"name": "inverse_sqrt", "lr": 1.0, "warmup_steps": 1})");
  EXPECT_DOUBLE_EQ(none.LearningRate(0), 1.0);
  EXPECT_DOUBLE_EQ(none.LearningRate(3), 0.5);
  EXPECT_DOUBLE_EQ(none.LearningRate(99), 0.1);
  for (int64_t s = 0; s < 20; ++s) EXPECT_DOUBLE_EQ(none.LearningRate(s), one.LearningRate(s)) << s;
}

TEST(Schedule, WarmupAsLongAsTraining) {
  const ScheduleConfig c = Parse(R"({"name": "linear", "lr": 1.0, "warmup_steps": 4, "total_steps": 4})");
  EXPECT_DOUBLE_EQ(c.LearningRate(3), 1.0);
  EXPECT_DOUBLE_EQ(c.LearningRate(4), 0.0);
}

TEST(Schedule, JsonRoundTrip) {
  for (const char* text : {R"({"name": "constant", "lr": 0.5, "warmup_steps": 3})",
                           R"({"name": "linear", "lr": 0.001, "warmup_steps": 10, "total_steps": 100, "end_lr": 1e-5})",
                           R"({"name": "polynomial", "lr": 0.002, "warmup_steps": 0, "total_steps": 9, "power": 0.5})",
                           R"({"name": "inverse_sqrt", "lr": 0.1, "warmup_steps": 7, "total_steps": 70})"}) {
    const ScheduleConfig c = Parse(text);
    auto again = ScheduleConfig::FromJson(c.ToJson());
    ASSERT_TRUE(again.ok()) << again.status();
    EXPECT_EQ(again->ToJson(), c.ToJson());
    for (int64_t s : {0, 1, 5, 8, 50, 200}) EXPECT_DOUBLE_EQ(again->LearningRate(s), c.LearningRate(s));
  }
}

TEST(Schedule, InvalidConfigsNameTheKey) {
  ExpectError(R"([1])", "schedule: expected an object");
  ExpectError(R"({"lr": 0.1})", "schedule.name: missing");
  ExpectError(R"({"name": "cosine", "lr": 0.1})", "schedule.name: expected constant, linear, polynomial or inverse_sqrt");
  ExpectError(R"({"name": 3, "lr": 0.1})", "schedule.name: expected a string");
  ExpectError(R"({"name": "constant"})", "schedule.lr: missing");
  ExpectError(R"({"name": "constant", "lr": "0.1"})", "schedule.lr: expected a number");
  ExpectError(R"({"name": "constant", "lr": 0})", "schedule.lr: must be a positive number");
  ExpectError(R"({"name": "constant", "lr": -1e-4})", "schedule.lr: must be a positive number");
  ExpectError(R"({"name": "constant", "lr": 0.1, "warmup_steps": -1})", "schedule.warmup_steps: must be >= 0");
  ExpectError(R"({"name": "constant", "lr": 0.1, "warmup_steps": 1.5})", "schedule.warmup_steps: expected an integer");
  ExpectError(R"({"name": "constant", "lr": 0.1, "xyz": 1})", "schedule.xyz: unknown key");
  ExpectError(R"({"name": "linear", "lr": 0.1})", "schedule.total_steps: the linear schedule needs total_steps > 0");
  ExpectError(R"({"name": "linear", "lr": 0.1, "total_steps": 10, "warmup_steps": 11})",
              "schedule.warmup_steps: warmup (11) is longer than training (10)");
  ExpectError(R"({"name": "linear", "lr": 0.1, "total_steps": 10, "end_lr": 0.2})", "schedule.end_lr: must be in [0, lr");
  ExpectError(R"({"name": "linear", "lr": 0.1, "total_steps": 10, "power": 2})",
              "schedule.power: not used by the linear schedule");
  ExpectError(R"({"name": "constant", "lr": 0.1, "end_lr": 0.0})", "schedule.end_lr: not used by the constant schedule");
  ExpectError(R"({"name": "polynomial", "lr": 0.1, "total_steps": 10, "power": 0})", "schedule.power: must be a positive number");
}

}  // namespace
}  // namespace lamina
