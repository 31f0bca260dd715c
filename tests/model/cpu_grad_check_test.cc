// The central-difference checker (tests/testing/grad_check.h) that the CPU op tests rely on:
// it must accept a correct gradient and reject wrong ones.
#include <algorithm>
#include <cmath>
#include <functional>
#include <limits>
#include <random>
#include <span>
#include <vector>

#include "gtest/gtest.h"
#include "tests/testing/grad_check.h"

namespace lamina {
namespace {

using testing::CheckGradient;

// f(x) = sum_i w_i x_i^3 + x_0 x_1, evaluated in float like an op under test would be.
double Cubic(std::span<const float> x, std::span<const float> w) {
  float sum = 0.0f;
  for (size_t i = 0; i < x.size(); ++i) sum += w[i] * x[i] * x[i] * x[i];
  return sum + x[0] * x[1];
}

std::vector<float> CubicGradient(std::span<const float> x, std::span<const float> w) {
  std::vector<float> g(x.size());
  for (size_t i = 0; i < x.size(); ++i) g[i] = 3.0f * w[i] * x[i] * x[i];
  g[0] += x[1];
  g[1] += x[0];
  return g;
}

class GradCheckTest : public ::testing::Test {
 protected:
  std::mt19937 gen_{99};
  std::vector<float> x_ = testing::RandomVector(gen_, 16, 2.0f);
  std::vector<float> w_ = testing::RandomVector(gen_, 16);
  std::function<double(std::span<const float>)> loss_ = [this](std::span<const float> x) { return Cubic(x, w_); };
};

TEST_F(GradCheckTest, AcceptsTheTrueGradient) { EXPECT_TRUE(CheckGradient(loss_, x_, CubicGradient(x_, w_))); }

TEST_F(GradCheckTest, RejectsAGradientOffByTwoPercentInOneElement) {
  std::vector<float> g = CubicGradient(x_, w_);
  // The largest element, so that 2% of it is well above the absolute tolerance.
  const auto largest =
      std::max_element(g.begin(), g.end(), [](float a, float b) { return std::fabs(a) < std::fabs(b); });
  ASSERT_GT(std::fabs(*largest), 0.5f);
  *largest *= 1.02f;
  EXPECT_FALSE(CheckGradient(loss_, x_, g));
}

TEST_F(GradCheckTest, RejectsNanAndSizeMismatch) {
  std::vector<float> g = CubicGradient(x_, w_);
  g[3] = std::numeric_limits<float>::quiet_NaN();
  EXPECT_FALSE(CheckGradient(loss_, x_, g));
  g.pop_back();
  EXPECT_FALSE(CheckGradient(loss_, x_, g));
}

TEST_F(GradCheckTest, RestoresTheInputs) {
  const std::vector<float> before = x_;
  auto loss = [&] { return Cubic(x_, w_); };
  EXPECT_TRUE(CheckGradient(x_, loss, CubicGradient(x_, w_)));
  EXPECT_EQ(x_, before);
}

}  // namespace
}  // namespace lamina
