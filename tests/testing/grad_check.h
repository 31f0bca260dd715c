// Central-difference gradient checks for tests of backward passes.
//
// Usage: keep the inputs of the function under test in a std::vector<float>, write the loss as a
// closure that reads them and returns a double, compute the analytic gradient, then
//   EXPECT_TRUE(CheckGradient(inputs, loss, analytic));
// Each input element is moved by +-eps in turn (and restored), and
//   numeric = (loss(x + eps) - loss(x - eps)) / ((x + eps) - (x - eps))
// is compared with the analytic value: |analytic - numeric| <= abs_tol + rel_tol * max(|a|, |n|).
// The step is measured as the float values actually stored, so rounding of x + eps in float does
// not bias the quotient. Losses should be reduced in double (e.g. sum(out * random weights)).
#pragma once

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <functional>
#include <random>
#include <span>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "gtest/gtest.h"

namespace lamina::testing {

// n values uniform in [-scale, scale).
inline std::vector<float> RandomVector(std::mt19937& gen, size_t n, float scale = 1.0f) {
  std::uniform_real_distribution<float> dist(-scale, scale);
  std::vector<float> v(n);
  for (float& x : v) x = dist(gen);
  return v;
}

// sum(out * weights) in double: turns an op's output into a scalar loss whose gradient with
// respect to `out` is `weights`.
inline double WeightedSum(std::span<const float> out, std::span<const float> weights) {
  EXPECT_EQ(out.size(), weights.size());
  double sum = 0;
  for (size_t i = 0; i < std::min(out.size(), weights.size()); ++i) sum += static_cast<double>(out[i]) * weights[i];
  return sum;
}

struct GradCheckOptions {
  double eps = 1e-2;
  double rel_tol = 1e-2;
  double abs_tol = 1e-3;
  // How many failing elements to describe in the failure message.
  int max_reported = 5;
};

// Checks `analytic` against central differences of `loss` with respect to every element of
// `inputs`, which is perturbed in place and left as it was.
inline ::testing::AssertionResult CheckGradient(std::span<float> inputs, const std::function<double()>& loss,
                                                std::span<const float> analytic, const GradCheckOptions& opt = {}) {
  if (inputs.size() != analytic.size()) {
    return ::testing::AssertionFailure() << "gradient has " << analytic.size() << " elements, inputs " << inputs.size();
  }
  std::string failures;
  int failed = 0;
  double worst = 0;
  for (size_t i = 0; i < inputs.size(); ++i) {
    const float x = inputs[i];
    const float hi = static_cast<float>(x + opt.eps), lo = static_cast<float>(x - opt.eps);
    inputs[i] = hi;
    const double loss_hi = loss();
    inputs[i] = lo;
    const double loss_lo = loss();
    inputs[i] = x;
    const double numeric = (loss_hi - loss_lo) / (static_cast<double>(hi) - static_cast<double>(lo));
    const double a = analytic[i];
    const double err = std::fabs(a - numeric);
    const double allowed = opt.abs_tol + opt.rel_tol * std::max(std::fabs(a), std::fabs(numeric));
    if (!(err <= allowed)) {  // also catches NaN
      if (failed < opt.max_reported) {
        absl::StrAppend(&failures, "\n  [", i, "] analytic ", a, " numeric ", numeric, " error ", err, " allowed ",
                        allowed);
      }
      ++failed;
    }
    if (std::isfinite(err) && allowed > 0) worst = std::max(worst, err / allowed);
  }
  if (failed > 0) {
    return ::testing::AssertionFailure() << failed << " of " << inputs.size() << " gradient elements differ"
                                         << failures;
  }
  return ::testing::AssertionSuccess() << "worst error " << worst << " of the allowed";
}

// The same check for a loss written as a function of its input vector.
inline ::testing::AssertionResult CheckGradient(const std::function<double(std::span<const float>)>& loss,
                                                std::vector<float> inputs, std::span<const float> analytic,
                                                const GradCheckOptions& opt = {}) {
  return CheckGradient(
      std::span<float>(inputs), [&] { return loss(inputs); }, analytic, opt);
}

}  // namespace lamina::testing
