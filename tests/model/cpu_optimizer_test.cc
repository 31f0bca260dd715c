// The CPU reference optimizer steps and reductions against hand-computed numbers.
#include <cmath>
#include <cstdint>
#include <memory>
#include <vector>

#include "core/bf16.h"
#include "gtest/gtest.h"
#include "model/backend.h"

namespace lamina {
namespace {

TensorView F32(std::vector<float>& v) { return CpuF32(v.data(), {static_cast<int64_t>(v.size())}); }

TEST(CpuOptimizer, SumSquaresAndScale) {
  auto backend = MakeCpuBackend();
  std::vector<float> x = {1.0f, -2.0f, 3.0f};
  EXPECT_EQ(backend->SumSquares(F32(x)), 14.0);
  backend->Scale(F32(x), -0.5f);
  EXPECT_EQ(x, (std::vector<float>{-0.5f, 1.0f, -1.5f}));
  // Accumulated in double: a float running sum of a million 0.1f squares would be off by ~0.1.
  std::vector<float> many(1000000, 0.1f);
  const double square = static_cast<double>(0.1f) * static_cast<double>(0.1f);
  EXPECT_NEAR(backend->SumSquares(F32(many)), 1e6 * square, 1e-5);
}

// Two AdamW steps over a decayed segment [0, 2) and a non-decayed one [2, 3); element 3 is in no
// segment and must not move. lr 0.1, betas 0.9/0.999, eps 1e-8, weight decay 0.01, grad_scale 0.5.
//   Step 1, g = 0.5 * [0.1, -0.2, 0.3] = [0.05, -0.1, 0.15]: m = 0.1 g, v = 0.001 g^2, so
//   mhat / sqrt(vhat) = sign(g) and p = [1 - 0.1 (1 + 0.01), -2 - 0.1 (-1 - 0.02), 0.5 - 0.1]
//   = [0.899, -1.898, 0.4].
//   Step 2, g = [-0.05, -0.1, 0.05]: m = [-0.0005, -0.019, 0.0185], v = [4.9975e-6, 1.999e-5,
//   2.49775e-5]; corrections 1 - 0.9^2 = 0.19 and 1 - 0.999^2 = 0.001999, so mhat / sqrt(vhat) =
//   [-0.0526316, -1, 0.8710640] and p = [0.899 - 0.1 (-0.0526316 + 0.00899), -1.898 - 0.1 (-1 -
//   0.01898), 0.4 - 0.0871064] = [0.9033642, -1.796102, 0.3128936].
TEST(CpuOptimizer, AdamWTwoSteps) {
  auto backend = MakeCpuBackend();
  std::vector<float> params = {1.0f, -2.0f, 0.5f, 9.0f}, m(4, 0.0f), v(4, 0.0f);
  const ParamSegment segments[] = {{0, 2, true}, {2, 1, false}};
  AdamWHyper hyper;
  hyper.lr = 0.1f;
  hyper.beta1 = 0.9f;
  hyper.beta2 = 0.999f;
  hyper.eps = 1e-8f;
  hyper.weight_decay = 0.01f;
  hyper.grad_scale = 0.5f;

  std::vector<float> grads = {0.1f, -0.2f, 0.3f, 1.0f};
  hyper.step = 1;
  backend->AdamWStep(F32(params), F32(grads), F32(m), F32(v), F32(params), segments, hyper);
  const float m1[] = {0.005f, -0.01f, 0.015f}, v1[] = {2.5e-6f, 1e-5f, 2.25e-5f}, p1[] = {0.899f, -1.898f, 0.4f};
  for (int i = 0; i < 3; ++i) {
    // Relative: 1 - 0.999f is 1.00005e-3 in float.
    EXPECT_NEAR(m[i], m1[i], 1e-6 * std::fabs(m1[i])) << i;
    EXPECT_NEAR(v[i], v1[i], 1e-4 * v1[i]) << i;
    EXPECT_NEAR(params[i], p1[i], 2e-6) << i;
  }

  grads = {-0.1f, -0.2f, 0.1f, 1.0f};
  hyper.step = 2;
  backend->AdamWStep(F32(params), F32(grads), F32(m), F32(v), TensorView{}, segments, hyper);
  const float p2[] = {0.903364177f, -1.796102020f, 0.312893619f};
  for (int i = 0; i < 3; ++i) EXPECT_NEAR(params[i], p2[i], 2e-6) << i;
  EXPECT_EQ(params[3], 9.0f);
  EXPECT_EQ(m[3], 0.0f);
  EXPECT_EQ(v[3], 0.0f);
}

AdamWHyper LambHyper() {
  AdamWHyper hyper;
  hyper.lr = 0.01f;
  hyper.beta1 = 0.9f;
  hyper.beta2 = 0.999f;
  hyper.eps = 1e-6f;
  hyper.weight_decay = 0.1f;
  hyper.step = 1;
  return hyper;
}

// One LAMB step (step 1, so mhat / sqrt(vhat) = g / (|g| + eps)); lr 0.01, weight decay 0.1,
// eps 1e-6. Segment [0, 2): p = [3, 4], g = [0.3, -0.4], r = [0.9999967 + 0.3, -0.9999975 + 0.4],
//   trust = 5 / |r| = 3.4921614, p = [3 - 0.01 * 3.4921614 * 1.2999967, 4 + 0.01 * 3.4921614 *
//   0.5999975] = [2.9546020, 4.0209529].
// Segment [2, 4), no decay: p = [-2, 0], r = [0.999998, 0.999996], trust = 2 / |r| = 1.4142178,
//   p = [-2.0141421, -0.0141421]: biases still get the trust ratio, only not the decay.
// Segment [4, 5): p = 0, so trust = 1 and p = -0.01 * 0.999995.
TEST(CpuOptimizer, LambOneStep) {
  auto backend = MakeCpuBackend();
  std::vector<float> params = {3.0f, 4.0f, -2.0f, 0.0f, 0.0f}, grads = {0.3f, -0.4f, 0.5f, 0.25f, 0.2f}, m(5, 0.0f),
                     v(5, 0.0f);
  const ParamSegment segments[] = {{0, 2, true, 0}, {2, 2, false, 1}, {4, 1, true, 2}};
  std::vector<float> compute(5, -1.0f), norms(8, -1.0f);
  backend->LambMoments(F32(params), F32(grads), F32(m), F32(v), segments, LambHyper(), F32(norms));
  // ||p||^2 and ||r||^2 per tensor; the slot of a fourth tensor no segment names reads 0.
  EXPECT_FLOAT_EQ(norms[0], 25.0f);
  EXPECT_NEAR(norms[1], 1.2999967 * 1.2999967 + 0.5999975 * 0.5999975, 1e-5);
  EXPECT_FLOAT_EQ(norms[2], 4.0f);
  EXPECT_FLOAT_EQ(norms[4], 0.0f);
  EXPECT_EQ(norms[6], 0.0f);
  EXPECT_EQ(norms[7], 0.0f);
  backend->LambUpdate(F32(params), F32(m), F32(v), F32(compute), segments, LambHyper(), F32(norms));
  const float expect[] = {2.954602018f, 4.020952881f, -2.014142150f, -0.014142121f, -0.009999950f};
  for (int i = 0; i < 5; ++i) EXPECT_NEAR(params[i], expect[i], 2e-6) << i;
  // A distinct f32 compute copy is refreshed from the updated parameters.
  EXPECT_EQ(compute, params);
}

// A tensor cut into segments (as in a ZeRO shard, in any order) gets the trust ratio of the
// whole tensor, so the step equals the one over the uncut tensor.
TEST(CpuOptimizer, LambTrustRatioIsPerTensorAcrossSegments) {
  auto backend = MakeCpuBackend();
  const std::vector<float> p0 = {3.0f, 4.0f, -2.0f, 0.5f, 1.5f}, grads0 = {0.3f, -0.4f, 0.5f, 0.25f, 0.2f};
  std::vector<float> whole = p0, grads = grads0, m(5, 0.0f), v(5, 0.0f), norms(2);
  const ParamSegment one[] = {{0, 5, true, 0}};
  backend->LambMoments(F32(whole), F32(grads), F32(m), F32(v), one, LambHyper(), F32(norms));
  backend->LambUpdate(F32(whole), F32(m), F32(v), TensorView{}, one, LambHyper(), F32(norms));

  std::vector<float> cut = p0, m2(5, 0.0f), v2(5, 0.0f), norms2(2);
  const ParamSegment pieces[] = {{3, 2, true, 0}, {0, 1, true, 0}, {1, 2, true, 0}};
  backend->LambMoments(F32(cut), F32(grads), F32(m2), F32(v2), pieces, LambHyper(), F32(norms2));
  backend->LambUpdate(F32(cut), F32(m2), F32(v2), TensorView{}, pieces, LambHyper(), F32(norms2));
  for (int i = 0; i < 5; ++i) EXPECT_NEAR(cut[i], whole[i], 1e-7) << i;
  EXPECT_NEAR(norms2[0], norms[0], 1e-5);
  EXPECT_NEAR(norms2[1], norms[1], 1e-5);
}

TEST(CpuOptimizer, Bf16ComputeCopyIsRefreshed) {
  auto backend = MakeCpuBackend();
  std::vector<float> params = {0.1f, 0.2f, 0.3f}, grads = {1.0f, 1.0f, 1.0f}, m(3, 0.0f), v(3, 0.0f);
  std::vector<uint16_t> compute(3, 0);
  const ParamSegment segments[] = {{0, 3, true}};
  backend->AdamWStep(F32(params), F32(grads), F32(m), F32(v),
                     TensorView{compute.data(), DType::kBF16, Device::kCpu, {3}}, segments, AdamWHyper{});
  for (int i = 0; i < 3; ++i) EXPECT_EQ(compute[i], FloatToBf16Bits(params[i])) << i;
}

}  // namespace
}  // namespace lamina
