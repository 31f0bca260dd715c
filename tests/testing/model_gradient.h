// Whole-model finite differences for the encoder's tests.
#pragma once

#include <functional>
#include <random>
#include <vector>

#include "gtest/gtest.h"
#include "model/bert.h"

namespace lamina::testing {

// Adds N(0, stddev) noise from `seed` to every parameter of `model` and returns the result:
// away from the symmetric init (zero biases, unit gains), no layer is near-linear and every path
// carries gradient.
inline std::vector<float> PerturbParams(BertModel& model, uint32_t seed, float stddev) {
  std::vector<float> params = model.ParamsToHost();
  std::mt19937 gen(seed);
  std::normal_distribution<float> noise(0.0f, stddev);
  for (float& p : params) p += noise(gen);
  EXPECT_TRUE(model.LoadParams(params).ok());
  return params;
}

// (loss(p_i + eps) - loss(p_i - eps)) / (2 eps), loading `params` with element i moved into the
// model for each side; params[i] is restored, the model is left with p_i - eps (reload it).
inline double CentralDifference(BertModel& model, std::vector<float>& params, int64_t i, double eps,
                                const std::function<double()>& loss) {
  const float keep = params[i];
  params[i] = static_cast<float>(keep + eps);
  EXPECT_TRUE(model.LoadParams(params).ok());
  const double up = loss();
  params[i] = static_cast<float>(keep - eps);
  EXPECT_TRUE(model.LoadParams(params).ok());
  const double down = loss();
  params[i] = keep;
  return (up - down) / (2 * eps);
}

}  // namespace lamina::testing
