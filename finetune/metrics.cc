#include "finetune/metrics.h"

#include <algorithm>
#include <cmath>

#include "core/status.h"

namespace lamina {

double Accuracy(std::span<const int32_t> predictions, std::span<const int32_t> gold) {
  LAMINA_CHECK(predictions.size() == gold.size(), predictions.size(), " predictions for ", gold.size(), " labels");
  if (gold.empty()) return 0;
  int64_t correct = 0;
  for (size_t i = 0; i < gold.size(); ++i) correct += predictions[i] == gold[i];
  return static_cast<double>(correct) / static_cast<double>(gold.size());
}

double F1Positive(std::span<const int32_t> predictions, std::span<const int32_t> gold) {
  LAMINA_CHECK(predictions.size() == gold.size(), predictions.size(), " predictions for ", gold.size(), " labels");
  int64_t tp = 0, fp = 0, fn = 0;
  for (size_t i = 0; i < gold.size(); ++i) {
    const bool p = predictions[i] == 1, g = gold[i] == 1;
    tp += p && g;
    fp += p && !g;
    fn += !p && g;
  }
  const int64_t denom = 2 * tp + fp + fn;
  return denom == 0 ? 0.0 : 2.0 * static_cast<double>(tp) / static_cast<double>(denom);
}

GlueMetrics ComputeGlueMetrics(GlueTask task, std::span<const int32_t> predictions, std::span<const int32_t> gold) {
  GlueMetrics m;
  m.accuracy = Accuracy(predictions, gold);
  if (task == GlueTask::kMrpc) {
    m.f1 = F1Positive(predictions, gold);
    m.score = (m.accuracy + m.f1) / 2;
  } else {
    m.score = m.accuracy;
  }
  return m;
}

std::vector<std::string> GlueMetricNames(GlueTask task) {
  if (task == GlueTask::kMrpc) return {"accuracy", "f1", "score"};
  return {"accuracy"};
}

double MetricByName(const GlueMetrics& m, const std::string& name) {
  if (name == "accuracy") return m.accuracy;
  if (name == "f1") return m.f1;
  LAMINA_CHECK(name == "score", "unknown metric ", name);
  return m.score;
}

SeedStats Summarize(std::span<const double> values) {
  LAMINA_CHECK(!values.empty(), "no values to summarize");
  SeedStats s;
  s.n = static_cast<int64_t>(values.size());
  std::vector<double> sorted(values.begin(), values.end());
  std::sort(sorted.begin(), sorted.end());
  double sum = 0;
  for (double v : sorted) sum += v;
  s.mean = sum / static_cast<double>(s.n);
  double ss = 0;
  for (double v : sorted) ss += (v - s.mean) * (v - s.mean);
  s.std = s.n > 1 ? std::sqrt(ss / static_cast<double>(s.n - 1)) : 0.0;
  const size_t mid = sorted.size() / 2;
  s.median = sorted.size() % 2 == 1 ? sorted[mid] : (sorted[mid - 1] + sorted[mid]) / 2;
  s.min = sorted.front();
  s.max = sorted.back();
  return s;
}

nlohmann::json SeedStats::ToJson() const {
  return {{"n", n}, {"mean", mean}, {"std", std}, {"median", median}, {"min", min}, {"max", max}};
}

}  // namespace lamina
