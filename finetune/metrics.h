// GLUE metrics (as the GLUE benchmark and `evaluate`/scikit-learn compute them) and the summary
// statistics of a metric over finetuning seeds.
#pragma once

#include <cstdint>
#include <span>
#include <string>
#include <vector>

#include "data/glue.h"
#include "nlohmann/json.hpp"

namespace lamina {

// Fraction of predictions equal to the gold label; 0 for no examples.
double Accuracy(std::span<const int32_t> predictions, std::span<const int32_t> gold);

// F1 of the positive class (label 1): 2 TP / (2 TP + FP + FN). When there is no positive
// prediction and no positive gold label the ratio is 0/0; it is 0 then, as scikit-learn's
// f1_score (zero_division default) returns.
double F1Positive(std::span<const int32_t> predictions, std::span<const int32_t> gold);

// The dev metrics of one evaluation. `score` is what runs are compared by: RTE accuracy; MRPC
// the mean of accuracy and F1 (the number the GLUE leaderboard averages for MRPC).
struct GlueMetrics {
  double accuracy = 0;
  double f1 = 0;      // MRPC only
  double score = 0;
};
GlueMetrics ComputeGlueMetrics(GlueTask task, std::span<const int32_t> predictions, std::span<const int32_t> gold);
// The names of the metrics a task reports, in order: MRPC {accuracy, f1, score}, RTE {accuracy}.
std::vector<std::string> GlueMetricNames(GlueTask task);
double MetricByName(const GlueMetrics& m, const std::string& name);

// Statistics of one metric over seeds. std is the sample standard deviation (n - 1 in the
// denominator; 0 for a single value); median is the mean of the two middle values for even n.
struct SeedStats {
  int64_t n = 0;
  double mean = 0, std = 0, median = 0, min = 0, max = 0;
  nlohmann::json ToJson() const;
};
// Needs at least one value.
SeedStats Summarize(std::span<const double> values);

}  // namespace lamina
