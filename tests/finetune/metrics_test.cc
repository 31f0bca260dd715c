#include "finetune/metrics.h"

#include <cmath>
#include <vector>

#include "gtest/gtest.h"

namespace lamina {
namespace {

TEST(Metrics, AccuracyCountsMatches) {
  const std::vector<int32_t> pred = {1, 0, 1, 1, 0, 0, 1, 0};
  const std::vector<int32_t> gold = {1, 1, 1, 0, 0, 0, 0, 0};
  EXPECT_DOUBLE_EQ(Accuracy(pred, gold), 5.0 / 8.0);
  EXPECT_DOUBLE_EQ(Accuracy(std::vector<int32_t>{}, std::vector<int32_t>{}), 0.0);
}

TEST(Metrics, F1OfThePositiveClass) {
  // TP = 2 (0, 2), FP = 2 (3, 6), FN = 1 (1): F1 = 2*2 / (2*2 + 2 + 1) = 4/7.
  const std::vector<int32_t> pred = {1, 0, 1, 1, 0, 0, 1, 0};
  const std::vector<int32_t> gold = {1, 1, 1, 0, 0, 0, 0, 0};
  EXPECT_DOUBLE_EQ(F1Positive(pred, gold), 4.0 / 7.0);
  // Swapping the classes changes F1 (it is not symmetric): TP = 3, FP = 1, FN = 2 -> 6/9.
  std::vector<int32_t> p2, g2;
  for (int32_t v : pred) p2.push_back(1 - v);
  for (int32_t v : gold) g2.push_back(1 - v);
  EXPECT_DOUBLE_EQ(F1Positive(p2, g2), 6.0 / 9.0);
}

TEST(Metrics, F1DegenerateCases) {
  // No positive gold and no positive prediction: 0/0, reported as 0 (scikit-learn's zero_division).
  EXPECT_DOUBLE_EQ(F1Positive(std::vector<int32_t>{0, 0, 0}, std::vector<int32_t>{0, 0, 0}), 0.0);
  // Always predicting the negative class: TP = 0 -> 0 whatever the accuracy.
  EXPECT_DOUBLE_EQ(F1Positive(std::vector<int32_t>{0, 0, 0, 0}, std::vector<int32_t>{1, 0, 0, 0}), 0.0);
  // Always predicting the positive class on 68% positives (MRPC's majority baseline): 2*.68/(1.68).
  std::vector<int32_t> gold(100, 0), pred(100, 1);
  for (int i = 0; i < 68; ++i) gold[i] = 1;
  EXPECT_NEAR(F1Positive(pred, gold), 2 * 68.0 / (2 * 68.0 + 32.0), 1e-15);
  // Perfect predictions.
  EXPECT_DOUBLE_EQ(F1Positive(gold, gold), 1.0);
  EXPECT_DOUBLE_EQ(F1Positive(std::vector<int32_t>{}, std::vector<int32_t>{}), 0.0);
}

TEST(Metrics, GlueScores) {
  const std::vector<int32_t> pred = {1, 0, 1, 1, 0, 0, 1, 0};
  const std::vector<int32_t> gold = {1, 1, 1, 0, 0, 0, 0, 0};
  const GlueMetrics mrpc = ComputeGlueMetrics(GlueTask::kMrpc, pred, gold);
  EXPECT_DOUBLE_EQ(mrpc.accuracy, 5.0 / 8.0);
  EXPECT_DOUBLE_EQ(mrpc.f1, 4.0 / 7.0);
  EXPECT_DOUBLE_EQ(mrpc.score, (5.0 / 8.0 + 4.0 / 7.0) / 2);
  const GlueMetrics rte = ComputeGlueMetrics(GlueTask::kRte, pred, gold);
  EXPECT_DOUBLE_EQ(rte.score, 5.0 / 8.0);
  EXPECT_EQ(GlueMetricNames(GlueTask::kMrpc), (std::vector<std::string>{"accuracy", "f1", "score"}));
  EXPECT_EQ(GlueMetricNames(GlueTask::kRte), (std::vector<std::string>{"accuracy"}));
  EXPECT_DOUBLE_EQ(MetricByName(mrpc, "f1"), mrpc.f1);
}

TEST(Metrics, SeedStatisticsOddCount) {
  const std::vector<double> v = {0.80, 0.70, 0.90, 0.75, 0.85};
  const SeedStats s = Summarize(v);
  EXPECT_EQ(s.n, 5);
  EXPECT_NEAR(s.mean, 0.8, 1e-15);
  // Sample std: deviations .0 -.1 .1 -.05 .05 -> squares sum .025, / 4 = .00625.
  EXPECT_NEAR(s.std, std::sqrt(0.00625), 1e-15);
  EXPECT_DOUBLE_EQ(s.median, 0.80);
  EXPECT_DOUBLE_EQ(s.min, 0.70);
  EXPECT_DOUBLE_EQ(s.max, 0.90);
}

TEST(Metrics, SeedStatisticsEvenCountAndSingle) {
  const SeedStats s = Summarize(std::vector<double>{4, 1, 3, 2});
  EXPECT_DOUBLE_EQ(s.median, 2.5);
  EXPECT_DOUBLE_EQ(s.mean, 2.5);
  EXPECT_NEAR(s.std, std::sqrt(5.0 / 3.0), 1e-15);
  const SeedStats one = Summarize(std::vector<double>{0.7});
  EXPECT_DOUBLE_EQ(one.std, 0.0);
  EXPECT_DOUBLE_EQ(one.median, 0.7);
  EXPECT_DOUBLE_EQ(one.max, 0.7);
  const nlohmann::json j = s.ToJson();
  EXPECT_EQ(j["n"], 4);
  EXPECT_DOUBLE_EQ(j["median"].get<double>(), 2.5);
}

}  // namespace
}  // namespace lamina
