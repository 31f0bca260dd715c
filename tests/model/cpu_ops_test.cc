// The CPU reference backend's ops (attention and the optimizer have their own files): every
// backward against central differences of its forward, forwards against independent loops or
// hand-computed values, and the accumulate/overwrite rules of model/backend.h.
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <memory>
#include <random>
#include <vector>

#include "core/bf16.h"
#include "core/philox.h"
#include "gtest/gtest.h"
#include "model/backend.h"
#include "model/cpu/gelu.h"
#include "tests/testing/grad_check.h"

namespace lamina {
namespace {

using testing::CheckGradient;
using testing::RandomVector;
using testing::WeightedSum;

TensorView F32(std::vector<float>& v, Shape s) { return CpuF32(v.data(), s); }
TensorView I32(std::vector<int32_t>& v, Shape s) { return CpuI32(v.data(), s); }

double GeluReference(double x) { return 0.5 * x * (1.0 + std::erf(x / std::sqrt(2.0))); }
double GeluDerivativeReference(double x) {
  return 0.5 * (1.0 + std::erf(x / std::sqrt(2.0))) + x * std::exp(-0.5 * x * x) / std::sqrt(2.0 * M_PI);
}
// transformers' gelu_new, in double; its derivative is checked by finite differences.
double GeluTanhReference(double x) {
  return 0.5 * x * (1.0 + std::tanh(std::sqrt(2.0 / M_PI) * (x + 0.044715 * x * x * x)));
}
double ActivationReference(Activation act, double x) {
  return act == Activation::kGelu ? GeluReference(x) : act == Activation::kGeluTanh ? GeluTanhReference(x) : x;
}

class CpuOpsTest : public ::testing::Test {
 protected:
  std::unique_ptr<Backend> backend_ = MakeCpuBackend();
  std::mt19937 gen_{20240607};
};

TEST_F(CpuOpsTest, DescribesItself) {
  EXPECT_EQ(backend_->device(), Device::kCpu);
  EXPECT_EQ(backend_->act_dtype(), DType::kF32);
}

// ---- memory ----

TEST_F(CpuOpsTest, CopiesZeroAndConvert) {
  std::vector<float> host = RandomVector(gen_, 12), dev(12), back(12);
  backend_->CopyFromHost(host.data(), F32(dev, {3, 4}));
  backend_->CopyToHost(F32(dev, {3, 4}), back.data());
  EXPECT_EQ(back, host);
  backend_->Zero(F32(dev, {3, 4}));
  EXPECT_EQ(dev, std::vector<float>(12, 0.0f));
  std::vector<int32_t> ids = {3, -1, 7}, ids_dev(3);
  backend_->CopyFromHostI32(ids.data(), I32(ids_dev, {3}));
  EXPECT_EQ(ids_dev, ids);
  backend_->Convert(F32(host, {3, 4}), F32(dev, {12}));
  EXPECT_EQ(dev, host);
  // f32 -> bf16 rounds to nearest even; bf16 -> f32 is exact.
  std::vector<uint16_t> half(12);
  const TensorView half_view{half.data(), DType::kBF16, Device::kCpu, {12}};
  backend_->Convert(F32(host, {12}), half_view);
  backend_->Convert(half_view, F32(back, {12}));
  for (int i = 0; i < 12; ++i) {
    EXPECT_EQ(half[i], FloatToBf16Bits(host[i])) << i;
    EXPECT_EQ(back[i], Bf16BitsToFloat(half[i])) << i;
  }
}

// ---- embeddings ----

TEST_F(CpuOpsTest, EmbeddingForwardSumsTheThreeTablesAndScales) {
  const int64_t b = 2, t = 3, h = 4, vocab = 5, positions = 4, types = 2;
  const float scale = 1.5f;
  std::vector<int32_t> ids = {1, 4, 1, 0, 1, 3}, type_ids = {0, 0, 1, 1, 1, 0};
  std::vector<float> word = RandomVector(gen_, vocab * h), pos = RandomVector(gen_, positions * h),
                     type = RandomVector(gen_, types * h), out(b * t * h);
  backend_->EmbeddingForward(I32(ids, {b, t}), I32(type_ids, {b, t}), F32(word, {vocab, h}), F32(pos, {positions, h}),
                             F32(type, {types, h}), scale, F32(out, {b * t, h}));
  for (int64_t n = 0; n < b * t; ++n) {
    for (int64_t c = 0; c < h; ++c) {
      const float expect = (word[ids[n] * h + c] + pos[(n % t) * h + c] + type[type_ids[n] * h + c]) * scale;
      EXPECT_FLOAT_EQ(out[n * h + c], expect) << "row " << n << " col " << c;
    }
  }
}

TEST_F(CpuOpsTest, EmbeddingGradients) {
  const int64_t b = 2, t = 3, h = 4, vocab = 5, positions = 4, types = 2;
  const float scale = 1.5f;
  // Token 1 appears three times, so its gradient row sums three contributions.
  std::vector<int32_t> ids = {1, 4, 1, 0, 1, 3}, type_ids = {0, 0, 1, 1, 1, 0};
  std::vector<float> word = RandomVector(gen_, vocab * h), pos = RandomVector(gen_, positions * h),
                     type = RandomVector(gen_, types * h), weights = RandomVector(gen_, b * t * h), out(b * t * h);
  auto loss = [&] {
    backend_->EmbeddingForward(I32(ids, {b, t}), I32(type_ids, {b, t}), F32(word, {vocab, h}), F32(pos, {positions, h}),
                               F32(type, {types, h}), scale, F32(out, {b * t, h}));
    return WeightedSum(out, weights);
  };
  std::vector<float> dword(vocab * h, 0.0f), dpos(positions * h, 0.0f), dtype(types * h, 0.0f);
  backend_->EmbeddingBackward(I32(ids, {b, t}), I32(type_ids, {b, t}), F32(weights, {b * t, h}), scale,
                              F32(dword, {vocab, h}), F32(dpos, {positions, h}), F32(dtype, {types, h}));
  EXPECT_TRUE(CheckGradient(word, loss, dword));
  EXPECT_TRUE(CheckGradient(pos, loss, dpos));
  EXPECT_TRUE(CheckGradient(type, loss, dtype));
}

// ---- layer norm ----

TEST_F(CpuOpsTest, LayerNormHandExample) {
  // x = [1, 2, 3, 4]: mean 2.5, biased variance 1.25; eps 0.75 makes rstd exactly 1/sqrt(2), so
  // xhat = [-1.5, -0.5, 0.5, 1.5] / sqrt(2) = [-1.06066017, -0.35355339, 0.35355339, 1.06066017].
  std::vector<float> x = {1, 2, 3, 4}, gamma = {1, 2, 1, 0.5f}, beta = {0, 0, 1, -1}, out(4), mean(1), rstd(1);
  backend_->LayerNormForward(F32(x, {1, 4}), F32(gamma, {4}), F32(beta, {4}), 0.75f, F32(out, {1, 4}), F32(mean, {1}),
                             F32(rstd, {1}));
  EXPECT_FLOAT_EQ(mean[0], 2.5f);
  EXPECT_NEAR(rstd[0], 0.70710678f, 1e-7);
  const float expect[4] = {-1.06066017f, -0.70710678f, 1.35355339f, -0.46966991f};
  for (int c = 0; c < 4; ++c) EXPECT_NEAR(out[c], expect[c], 1e-6) << c;
}

TEST_F(CpuOpsTest, LayerNormRowsHaveZeroMeanUnitVariance) {
  const int64_t rows = 5, cols = 64;
  std::vector<float> x = RandomVector(gen_, rows * cols, 5.0f), gamma(cols, 1.0f), beta(cols, 0.0f), out(rows * cols),
                     mean(rows), rstd(rows);
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t c = 0; c < cols; ++c) x[r * cols + c] += 3.0f * r;
  backend_->LayerNormForward(F32(x, {rows, cols}), F32(gamma, {cols}), F32(beta, {cols}), 1e-5f, F32(out, {rows, cols}),
                             F32(mean, {rows}), F32(rstd, {rows}));
  for (int64_t r = 0; r < rows; ++r) {
    double sum = 0, sq = 0;
    for (int64_t c = 0; c < cols; ++c) sum += out[r * cols + c];
    for (int64_t c = 0; c < cols; ++c) sq += (out[r * cols + c] - sum / cols) * (out[r * cols + c] - sum / cols);
    EXPECT_NEAR(sum / cols, 0.0, 1e-6) << "row " << r;
    EXPECT_NEAR(sq / cols, 1.0, 1e-4) << "row " << r;
  }
}

TEST_F(CpuOpsTest, LayerNormGradients) {
  const int64_t rows = 3, cols = 8;
  const float eps = 1e-5f;
  std::vector<float> x = RandomVector(gen_, rows * cols, 2.0f), gamma = RandomVector(gen_, cols, 0.5f),
                     beta = RandomVector(gen_, cols), weights = RandomVector(gen_, rows * cols), out(rows * cols),
                     mean(rows), rstd(rows);
  for (float& g : gamma) g += 1.0f;
  auto loss = [&] {
    backend_->LayerNormForward(F32(x, {rows, cols}), F32(gamma, {cols}), F32(beta, {cols}), eps, F32(out, {rows, cols}),
                               F32(mean, {rows}), F32(rstd, {rows}));
    return WeightedSum(out, weights);
  };
  loss();
  // dx is overwritten: start it with garbage.
  std::vector<float> dx(rows * cols, 7.0f), dgamma(cols, 0.0f), dbeta(cols, 0.0f);
  backend_->LayerNormBackward(F32(weights, {rows, cols}), F32(x, {rows, cols}), F32(gamma, {cols}), F32(mean, {rows}),
                              F32(rstd, {rows}), F32(dx, {rows, cols}), false, F32(dgamma, {cols}), F32(dbeta, {cols}),
                              0.0f, {}, {});
  testing::GradCheckOptions opt;
  opt.eps = 3e-3;
  EXPECT_TRUE(CheckGradient(x, loss, dx, opt));
  EXPECT_TRUE(CheckGradient(gamma, loss, dgamma, opt));
  EXPECT_TRUE(CheckGradient(beta, loss, dbeta, opt));
}

// sum = a + Dropout(b): with p = 0 the plain residual add, with p > 0 the branch's dropout fused
// in front of it (the same mask as Dropout with the same stream); the norm's backward gives b's
// gradient through that dropout in the same pass.
TEST_F(CpuOpsTest, AddLayerNormIsLayerNormOfTheSum) {
  const int64_t rows = 3, cols = 8;
  const float eps = 1e-5f;
  for (const float p : {0.0f, 0.3f}) {
    const RngContext rng{11, MakeStream(2, 3, 4), 6};
    std::vector<float> a = RandomVector(gen_, rows * cols, 2.0f), b = RandomVector(gen_, rows * cols, 2.0f),
                       gamma = RandomVector(gen_, cols, 0.5f), beta = RandomVector(gen_, cols),
                       weights = RandomVector(gen_, rows * cols), sum(rows * cols), out(rows * cols), mean(rows),
                       rstd(rows);
    for (float& g : gamma) g += 1.0f;
    auto loss = [&] {
      backend_->AddLayerNormForward(F32(a, {rows, cols}), F32(b, {rows, cols}), p, rng, F32(gamma, {cols}),
                                    F32(beta, {cols}), eps, F32(sum, {rows, cols}), F32(out, {rows, cols}),
                                    F32(mean, {rows}), F32(rstd, {rows}));
      return WeightedSum(out, weights);
    };
    loss();
    std::vector<float> dropped(rows * cols);
    backend_->Dropout(F32(b, {rows, cols}), p, rng, F32(dropped, {rows, cols}));
    int kept = 0;
    for (int64_t i = 0; i < rows * cols; ++i) {
      EXPECT_EQ(sum[i], a[i] + dropped[i]) << i << " p " << p;
      kept += dropped[i] != 0.0f;
    }
    if (p > 0.0f) {
      EXPECT_GT(kept, 0);
      EXPECT_LT(kept, rows * cols);
    }
    std::vector<float> plain(rows * cols), plain_mean(rows), plain_rstd(rows);
    backend_->LayerNormForward(F32(sum, {rows, cols}), F32(gamma, {cols}), F32(beta, {cols}), eps,
                               F32(plain, {rows, cols}), F32(plain_mean, {rows}), F32(plain_rstd, {rows}));
    EXPECT_EQ(out, plain);
    EXPECT_EQ(mean, plain_mean);
    EXPECT_EQ(rstd, plain_rstd);
    // The gradient of the sum is the gradient of a, and of b through the dropout: the norm's
    // backward gives it in the same pass (into `dropped`, here over its own dout, which it may
    // alias), as DropoutBackward of dx gives it.
    std::vector<float> dsum(rows * cols), db(rows * cols), dgamma(cols, 0.0f), dbeta(cols, 0.0f);
    std::vector<float> fused = weights, g2(cols, 0.0f), b2(cols, 0.0f), dsum2(rows * cols);
    backend_->LayerNormBackward(F32(weights, {rows, cols}), F32(sum, {rows, cols}), F32(gamma, {cols}),
                                F32(mean, {rows}), F32(rstd, {rows}), F32(dsum, {rows, cols}), false,
                                F32(dgamma, {cols}), F32(dbeta, {cols}), 0.0f, {}, {});
    backend_->DropoutBackward(F32(dsum, {rows, cols}), p, rng, F32(db, {rows, cols}));
    backend_->LayerNormBackward(F32(fused, {rows, cols}), F32(sum, {rows, cols}), F32(gamma, {cols}),
                                F32(mean, {rows}), F32(rstd, {rows}), F32(dsum2, {rows, cols}), false, F32(g2, {cols}),
                                F32(b2, {cols}), p, rng, F32(fused, {rows, cols}));
    EXPECT_EQ(dsum2, dsum);
    EXPECT_EQ(fused, db);
    EXPECT_EQ(g2, dgamma);
    EXPECT_EQ(b2, dbeta);
    // With accumulate, the dropout applies to the accumulated dx.
    std::vector<float> acc = dsum, acc_dropped(rows * cols), want(rows * cols);
    backend_->LayerNormBackward(F32(weights, {rows, cols}), F32(sum, {rows, cols}), F32(gamma, {cols}),
                                F32(mean, {rows}), F32(rstd, {rows}), F32(acc, {rows, cols}), true, F32(g2, {cols}),
                                F32(b2, {cols}), p, rng, F32(acc_dropped, {rows, cols}));
    backend_->DropoutBackward(F32(acc, {rows, cols}), p, rng, F32(want, {rows, cols}));
    EXPECT_EQ(acc_dropped, want);
    testing::GradCheckOptions opt;
    opt.eps = 3e-3;
    EXPECT_TRUE(CheckGradient(a, loss, dsum, opt));
    EXPECT_TRUE(CheckGradient(b, loss, db, opt));
    EXPECT_TRUE(CheckGradient(gamma, loss, dgamma, opt));
  }
}

// ---- dense layers ----

struct LinearCase {
  Activation act;
  bool bias;
};

class CpuLinearTest : public CpuOpsTest, public ::testing::WithParamInterface<LinearCase> {};

TEST_P(CpuLinearTest, ForwardMatchesLoopsAndBackwardMatchesDifferences) {
  const LinearCase c = GetParam();
  const int64_t m = 5, k = 6, n = 4;
  std::vector<float> x = RandomVector(gen_, m * k), w = RandomVector(gen_, n * k), b = RandomVector(gen_, n),
                     weights = RandomVector(gen_, m * n), out(m * n), pre(m * n);
  const TensorView pre_view = c.act != Activation::kNone ? F32(pre, {m, n}) : TensorView{};
  auto bias_view = [&](std::vector<float>& v) { return c.bias ? F32(v, {n}) : TensorView{}; };
  auto loss = [&] {
    backend_->LinearForward(F32(x, {m, k}), F32(w, {n, k}), bias_view(b), c.act, pre_view, F32(out, {m, n}));
    return WeightedSum(out, weights);
  };
  loss();
  for (int64_t r = 0; r < m; ++r) {
    for (int64_t j = 0; j < n; ++j) {
      double affine = c.bias ? b[j] : 0.0;
      for (int64_t i = 0; i < k; ++i) affine += static_cast<double>(x[r * k + i]) * w[j * k + i];
      EXPECT_NEAR(out[r * n + j], ActivationReference(c.act, affine), 1e-5) << r << "," << j;
      if (c.act != Activation::kNone) {
        EXPECT_NEAR(pre[r * n + j], affine, 1e-5) << r << "," << j;
      }
    }
  }
  std::vector<float> dout = weights, dx(m * k, 7.0f), dw(n * k, 0.0f), db(n, 0.0f);
  backend_->LinearBackward(F32(dout, {m, n}), F32(x, {m, k}), F32(w, {n, k}), c.act, pre_view, F32(dx, {m, k}), false,
                           F32(dw, {n, k}), bias_view(db));
  if (c.act == Activation::kGelu) {
    // dout now holds the gradient with respect to pre_act.
    for (int64_t i = 0; i < m * n; ++i) EXPECT_NEAR(dout[i], weights[i] * GeluDerivativeReference(pre[i]), 1e-6) << i;
  } else if (c.act == Activation::kGeluTanh) {
    for (int64_t i = 0; i < m * n; ++i) {
      const double h = 1e-4, slope = (GeluTanhReference(pre[i] + h) - GeluTanhReference(pre[i] - h)) / (2 * h);
      EXPECT_NEAR(dout[i], weights[i] * slope, 1e-5) << i;
    }
  } else {
    EXPECT_EQ(dout, weights);
  }
  EXPECT_TRUE(CheckGradient(x, loss, dx));
  EXPECT_TRUE(CheckGradient(w, loss, dw));
  if (c.bias) {
    EXPECT_TRUE(CheckGradient(b, loss, db));
  } else {
    EXPECT_EQ(db, std::vector<float>(n, 0.0f));
  }
}

INSTANTIATE_TEST_SUITE_P(Activations, CpuLinearTest,
                         ::testing::Values(LinearCase{Activation::kNone, true}, LinearCase{Activation::kGelu, true},
                                           LinearCase{Activation::kNone, false}, LinearCase{Activation::kGelu, false},
                                           LinearCase{Activation::kGeluTanh, true}),
                         [](const ::testing::TestParamInfo<LinearCase>& info) {
                           const Activation a = info.param.act;
                           return std::string(a == Activation::kGelu ? "Gelu" : a == Activation::kGeluTanh ? "GeluTanh" : "None") +
                                  (info.param.bias ? "Bias" : "NoBias");
                         });

// The FFN's two layers, y = act(x W1^T + b1) W2^T + b2: the second layer's backward straight to the
// GELU's input, then the first layer's, against finite differences of every input and parameter,
// for both GELU forms.
TEST_F(CpuOpsTest, LinearBackwardToPreActivationMatchesDifferences) {
  for (Activation act : {Activation::kGelu, Activation::kGeluTanh}) {
    SCOPED_TRACE(act == Activation::kGelu ? "gelu" : "gelu_tanh");
    const int64_t m = 5, k = 6, f = 7, n = 4;
    std::vector<float> x = RandomVector(gen_, m * k), w1 = RandomVector(gen_, f * k), b1 = RandomVector(gen_, f),
                       w2 = RandomVector(gen_, n * f), b2 = RandomVector(gen_, n), weights = RandomVector(gen_, m * n);
    std::vector<float> pre(m * f), h(m * f), y(m * n);
    auto loss = [&] {
      backend_->LinearForward(F32(x, {m, k}), F32(w1, {f, k}), F32(b1, {f}), act, F32(pre, {m, f}), F32(h, {m, f}));
      backend_->LinearForward(F32(h, {m, f}), F32(w2, {n, f}), F32(b2, {n}), Activation::kNone, {}, F32(y, {m, n}));
      return WeightedSum(y, weights);
    };
    loss();
    std::vector<float> dy = weights, dpre(m * f, 7.0f), dx(m * k, 7.0f);
    std::vector<float> dw1(f * k, 0.0f), db1(f, 0.0f), dw2(n * f, 0.0f), db2(n, 0.0f);
    backend_->LinearBackwardToPreActivation(F32(dy, {m, n}), F32(h, {m, f}), F32(w2, {n, f}), act, F32(pre, {m, f}),
                                            F32(dpre, {m, f}), F32(dw2, {n, f}), F32(db2, {n}));
    backend_->LinearBackward(F32(dpre, {m, f}), F32(x, {m, k}), F32(w1, {f, k}), Activation::kNone, {},
                             F32(dx, {m, k}), false, F32(dw1, {f, k}), F32(db1, {f}));
    EXPECT_TRUE(CheckGradient(x, loss, dx));
    EXPECT_TRUE(CheckGradient(w1, loss, dw1));
    EXPECT_TRUE(CheckGradient(b1, loss, db1));
    EXPECT_TRUE(CheckGradient(w2, loss, dw2));
    EXPECT_TRUE(CheckGradient(b2, loss, db2));
    EXPECT_TRUE(CheckGradient(pre, [&] {
      for (int64_t i = 0; i < m * f; ++i) h[i] = cpu::ActivationValue(act, pre[i]);
      backend_->LinearForward(F32(h, {m, f}), F32(w2, {n, f}), F32(b2, {n}), Activation::kNone, {}, F32(y, {m, n}));
      return WeightedSum(y, weights);
    }, dpre));
  }
}

// The tanh form's documented tolerance against the erf form (docs/model.md): at most 4.8e-4
// absolute over the reals (the largest gap is near x = -2.70), and the same to within 1e-6 at 0
// and far from it.
TEST(GeluForms, TanhApproximationIsWithinItsToleranceOfErf) {
  double worst = 0;
  for (int i = -80000; i <= 80000; ++i) {
    const float x = static_cast<float>(i) * 1e-4f;
    worst = std::max(worst, std::fabs(static_cast<double>(cpu::GeluTanhValue(x)) - cpu::GeluValue(x)));
  }
  EXPECT_LT(worst, 4.8e-4);
  EXPECT_GT(worst, 4.6e-4);  // the known 4.73e-4: the two forms are not the same function
  for (float x : {0.0f, 9.0f, -9.0f}) EXPECT_NEAR(cpu::GeluTanhValue(x), cpu::GeluValue(x), 1e-6) << x;
}

TEST_F(CpuOpsTest, LinearBackwardAccumulatesWhenAskedAndSkipsEmptyDx) {
  const int64_t m = 4, k = 3, n = 5;
  std::vector<float> x = RandomVector(gen_, m * k), w = RandomVector(gen_, n * k), dout = RandomVector(gen_, m * n);
  std::vector<float> dx(m * k, 0.0f), dw(n * k, 0.0f), db(n, 0.0f);
  backend_->LinearBackward(F32(dout, {m, n}), F32(x, {m, k}), F32(w, {n, k}), Activation::kNone, TensorView{},
                           F32(dx, {m, k}), false, F32(dw, {n, k}), F32(db, {n}));
  const std::vector<float> dx1 = dx, dw1 = dw, db1 = db;
  std::vector<float> dx_acc(m * k, 0.25f);
  backend_->LinearBackward(F32(dout, {m, n}), F32(x, {m, k}), F32(w, {n, k}), Activation::kNone, TensorView{},
                           F32(dx_acc, {m, k}), true, F32(dw, {n, k}), F32(db, {n}));
  for (int64_t i = 0; i < m * k; ++i) EXPECT_NEAR(dx_acc[i], dx1[i] + 0.25f, 1e-6) << i;
  for (int64_t i = 0; i < n * k; ++i) EXPECT_NEAR(dw[i], 2 * dw1[i], 1e-6) << i;
  for (int64_t i = 0; i < n; ++i) EXPECT_NEAR(db[i], 2 * db1[i], 1e-6) << i;
  // No dx: the parameter gradients still accumulate.
  backend_->LinearBackward(F32(dout, {m, n}), F32(x, {m, k}), F32(w, {n, k}), Activation::kNone, TensorView{},
                           TensorView{}, false, F32(dw, {n, k}), F32(db, {n}));
  for (int64_t i = 0; i < n * k; ++i) EXPECT_NEAR(dw[i], 3 * dw1[i], 1e-6) << i;
}

TEST_F(CpuOpsTest, ParameterGradientsAccumulateOverTwoBackwards) {
  // Embedding tables.
  {
    std::vector<int32_t> ids = {0, 2, 2, 1}, type_ids = {0, 1, 0, 1};
    std::vector<float> dout = RandomVector(gen_, 4 * 3), dword(3 * 3, 0.0f), dpos(2 * 3, 0.0f), dtype(2 * 3, 0.0f);
    auto backward = [&] {
      backend_->EmbeddingBackward(I32(ids, {2, 2}), I32(type_ids, {2, 2}), F32(dout, {4, 3}), 0.5f, F32(dword, {3, 3}),
                                  F32(dpos, {2, 3}), F32(dtype, {2, 3}));
    };
    backward();
    const std::vector<float> w1 = dword, p1 = dpos, t1 = dtype;
    backward();
    for (size_t i = 0; i < dword.size(); ++i) EXPECT_FLOAT_EQ(dword[i], 2 * w1[i]);
    for (size_t i = 0; i < dpos.size(); ++i) EXPECT_FLOAT_EQ(dpos[i], 2 * p1[i]);
    for (size_t i = 0; i < dtype.size(); ++i) EXPECT_FLOAT_EQ(dtype[i], 2 * t1[i]);
  }
  // Layer norm: dgamma and dbeta accumulate, dx with accumulate=true adds.
  {
    const int64_t rows = 2, cols = 5;
    std::vector<float> x = RandomVector(gen_, rows * cols), gamma(cols, 1.0f), beta(cols, 0.0f), out(rows * cols),
                       mean(rows), rstd(rows), dout = RandomVector(gen_, rows * cols);
    backend_->LayerNormForward(F32(x, {rows, cols}), F32(gamma, {cols}), F32(beta, {cols}), 1e-5f,
                               F32(out, {rows, cols}), F32(mean, {rows}), F32(rstd, {rows}));
    std::vector<float> dx(rows * cols), dgamma(cols, 0.0f), dbeta(cols, 0.0f);
    auto backward = [&](bool accumulate) {
      backend_->LayerNormBackward(F32(dout, {rows, cols}), F32(x, {rows, cols}), F32(gamma, {cols}), F32(mean, {rows}),
                                  F32(rstd, {rows}), F32(dx, {rows, cols}), accumulate, F32(dgamma, {cols}),
                                  F32(dbeta, {cols}), 0.0f, {}, {});
    };
    backward(false);
    const std::vector<float> dx1 = dx, g1 = dgamma, b1 = dbeta;
    backward(true);
    for (size_t i = 0; i < dx.size(); ++i) EXPECT_FLOAT_EQ(dx[i], 2 * dx1[i]);
    for (size_t i = 0; i < dgamma.size(); ++i) EXPECT_FLOAT_EQ(dgamma[i], 2 * g1[i]);
    for (size_t i = 0; i < dbeta.size(); ++i) EXPECT_FLOAT_EQ(dbeta[i], 2 * b1[i]);
    backward(false);
    EXPECT_EQ(dx, dx1);
  }
}

// ---- elementwise ----

TEST_F(CpuOpsTest, GeluKnownValues) {
  std::vector<float> x = {0.0f, 1.0f, -1.0f, 2.0f}, out(4);
  backend_->Gelu(F32(x, {4}), F32(out, {4}));
  // 0.5 x (1 + erf(x / sqrt 2)).
  EXPECT_NEAR(out[0], 0.0, 1e-6);
  EXPECT_NEAR(out[1], 0.8413447460685429, 1e-6);
  EXPECT_NEAR(out[2], -0.15865525393145707, 1e-6);
  EXPECT_NEAR(out[3], 1.9544997361036416, 1e-6);
}

TEST_F(CpuOpsTest, GeluGradient) {
  const int64_t n = 40;
  std::vector<float> x = RandomVector(gen_, n, 3.0f), weights = RandomVector(gen_, n), out(n);
  auto loss = [&] {
    backend_->Gelu(F32(x, {n}), F32(out, {n}));
    return WeightedSum(out, weights);
  };
  std::vector<float> dx(n);
  backend_->GeluBackward(F32(weights, {n}), F32(x, {n}), F32(dx, {n}));
  EXPECT_TRUE(CheckGradient(x, loss, dx));
  std::vector<float> in_place = weights;
  backend_->GeluBackward(F32(in_place, {n}), F32(x, {n}), F32(in_place, {n}));
  EXPECT_EQ(in_place, dx);
}

TEST_F(CpuOpsTest, TanhGradient) {
  const int64_t n = 40;
  std::vector<float> x = RandomVector(gen_, n, 2.0f), weights = RandomVector(gen_, n), out(n);
  auto loss = [&] {
    backend_->Tanh(F32(x, {n}), F32(out, {n}));
    return WeightedSum(out, weights);
  };
  loss();
  for (int64_t i = 0; i < n; ++i) EXPECT_NEAR(out[i], std::tanh(static_cast<double>(x[i])), 1e-6);
  std::vector<float> dx(n);
  backend_->TanhBackward(F32(weights, {n}), F32(out, {n}), F32(dx, {n}));
  EXPECT_TRUE(CheckGradient(x, loss, dx));
}

// With p = 0 the plain add; with p > 0 exactly a + Dropout(b) (the same mask); out may alias a.
TEST_F(CpuOpsTest, AddDropoutIsDropoutThenAddAndMayAliasAnInput) {
  const RngContext rng{7, MakeStream(1, 2, 3), 5};
  std::vector<float> a = RandomVector(gen_, 10), b = RandomVector(gen_, 10), out(10), dropped(10);
  backend_->AddDropout(F32(a, {2, 5}), F32(b, {2, 5}), 0.0f, rng, F32(out, {2, 5}));
  for (int i = 0; i < 10; ++i) EXPECT_EQ(out[i], a[i] + b[i]);
  backend_->Dropout(F32(b, {10}), 0.5f, rng, F32(dropped, {10}));
  ASSERT_NE(std::count(dropped.begin(), dropped.end(), 0.0f), 0) << "no element dropped: the check below is weak";
  backend_->AddDropout(F32(a, {2, 5}), F32(b, {2, 5}), 0.5f, rng, F32(a, {2, 5}));
  for (int i = 0; i < 10; ++i) EXPECT_EQ(a[i], out[i] - b[i] + dropped[i]) << i;
}

// ---- dropout ----

const RngContext kDropoutRng{0x5eed5eedull, MakeStream(3, 1, 4, 1), 59};

class CpuDropoutTest : public CpuOpsTest, public ::testing::WithParamInterface<float> {};

TEST_P(CpuDropoutTest, MatchesDropoutKeepExactly) {
  const float p = GetParam();
  const int64_t n = 100000;
  std::vector<float> x = RandomVector(gen_, n), out(n);
  backend_->Dropout(F32(x, {n}), p, kDropoutRng, F32(out, {n}));
  const float scale = 1.0f / (1.0f - p);
  int64_t kept = 0;
  for (int64_t i = 0; i < n; ++i) {
    const bool keep = DropoutKeep(kDropoutRng, i, p);
    kept += keep;
    ASSERT_EQ(out[i], keep ? x[i] * scale : 0.0f) << i;
  }
  // Binomial standard deviation is at most 0.0016 of n here.
  EXPECT_NEAR(static_cast<double>(kept) / n, 1.0 - p, 0.01);
  // In place gives the same; a slice drawn at its offset gives the whole tensor's numbers.
  std::vector<float> in_place = x;
  backend_->Dropout(F32(in_place, {n}), p, kDropoutRng, F32(in_place, {n}));
  EXPECT_EQ(in_place, out);
  RngContext tail_rng = kDropoutRng;
  tail_rng.offset += n / 2;
  std::vector<float> tail(x.begin() + n / 2, x.end()), tail_out(n - n / 2);
  backend_->Dropout(F32(tail, {n - n / 2}), p, tail_rng, F32(tail_out, {n - n / 2}));
  EXPECT_TRUE(std::equal(tail_out.begin(), tail_out.end(), out.begin() + n / 2));
}

TEST_P(CpuDropoutTest, Gradient) {
  const float p = GetParam();
  const int64_t n = 200;
  std::vector<float> x = RandomVector(gen_, n), weights = RandomVector(gen_, n), out(n);
  auto loss = [&] {
    backend_->Dropout(F32(x, {n}), p, kDropoutRng, F32(out, {n}));
    return WeightedSum(out, weights);
  };
  std::vector<float> dx(n, 7.0f);
  backend_->DropoutBackward(F32(weights, {n}), p, kDropoutRng, F32(dx, {n}));
  EXPECT_TRUE(CheckGradient(x, loss, dx));
}

INSTANTIATE_TEST_SUITE_P(Probabilities, CpuDropoutTest, ::testing::Values(0.1f, 0.5f));

TEST_F(CpuOpsTest, DropoutWithZeroProbabilityCopies) {
  std::vector<float> x = RandomVector(gen_, 50), out(50), dx(50);
  backend_->Dropout(F32(x, {50}), 0.0f, kDropoutRng, F32(out, {50}));
  EXPECT_EQ(out, x);
  backend_->DropoutBackward(F32(x, {50}), 0.0f, kDropoutRng, F32(dx, {50}));
  EXPECT_EQ(dx, x);
}

// ---- gathering rows ----

TEST_F(CpuOpsTest, GatherRowsAndScatterAddRows) {
  const int64_t rows = 6, cols = 4, n = 3;
  std::vector<int32_t> index = {4, 0, 2};
  std::vector<float> x = RandomVector(gen_, rows * cols), weights = RandomVector(gen_, n * cols), out(n * cols);
  auto loss = [&] {
    backend_->GatherRows(F32(x, {rows, cols}), I32(index, {n}), F32(out, {n, cols}));
    return WeightedSum(out, weights);
  };
  loss();
  for (int64_t i = 0; i < n; ++i)
    for (int64_t c = 0; c < cols; ++c) EXPECT_EQ(out[i * cols + c], x[index[i] * cols + c]);
  std::vector<float> dx(rows * cols, 0.0f);
  backend_->ScatterAddRows(F32(weights, {n, cols}), I32(index, {n}), F32(dx, {rows, cols}));
  EXPECT_TRUE(CheckGradient(x, loss, dx));
  // A second scatter adds on top.
  const std::vector<float> once = dx;
  backend_->ScatterAddRows(F32(weights, {n, cols}), I32(index, {n}), F32(dx, {rows, cols}));
  for (size_t i = 0; i < dx.size(); ++i) EXPECT_FLOAT_EQ(dx[i], 2 * once[i]);
}

// ---- loss ----

TEST_F(CpuOpsTest, CrossEntropyHandExample) {
  // logits [1, 2, 3], target 0: log(e + e^2 + e^3) - 1 = 2.40760596; softmax =
  // [0.09003057, 0.24472847, 0.66524096].
  std::vector<float> logits = {1, 2, 3}, losses(1), dlogits(3);
  std::vector<int32_t> targets = {0};
  backend_->CrossEntropy(F32(logits, {1, 3}), 3, I32(targets, {1}), 2.0f, F32(losses, {1}), F32(dlogits, {1, 3}));
  EXPECT_NEAR(losses[0], 2.40760596, 1e-6);
  EXPECT_NEAR(dlogits[0], 2.0 * (0.09003057 - 1.0), 1e-6);
  EXPECT_NEAR(dlogits[1], 2.0 * 0.24472847, 1e-6);
  EXPECT_NEAR(dlogits[2], 2.0 * 0.66524096, 1e-6);
  // Large logits do not overflow thanks to the max subtraction.
  std::vector<float> shifted = {1001, 1002, 1003};
  backend_->CrossEntropy(F32(shifted, {1, 3}), 3, I32(targets, {1}), 1.0f, F32(losses, {1}), TensorView{});
  EXPECT_NEAR(losses[0], 2.40760596, 1e-4);
}

TEST_F(CpuOpsTest, CrossEntropyGradientWithIgnoredTarget) {
  const int64_t n = 4, vocab = 7;
  const float grad_scale = 0.5f;
  std::vector<float> logits = RandomVector(gen_, n * vocab, 3.0f), losses(n);
  std::vector<int32_t> targets = {2, -1, 0, 6};
  auto loss = [&] {
    backend_->CrossEntropy(F32(logits, {n, vocab}), vocab, I32(targets, {n}), grad_scale, F32(losses, {n}), TensorView{});
    double sum = 0;
    for (float l : losses) sum += l;
    return grad_scale * sum;
  };
  std::vector<float> dlogits(n * vocab, 7.0f);
  backend_->CrossEntropy(F32(logits, {n, vocab}), vocab, I32(targets, {n}), grad_scale, F32(losses, {n}),
                         F32(dlogits, {n, vocab}));
  EXPECT_EQ(losses[1], 0.0f);
  for (int64_t c = 0; c < vocab; ++c) EXPECT_EQ(dlogits[1 * vocab + c], 0.0f);
  EXPECT_TRUE(CheckGradient(logits, loss, dlogits));
  // dlogits may alias logits: the losses come out the same and the gradient replaces the logits.
  loss();
  const std::vector<float> expect_losses = losses;
  backend_->CrossEntropy(F32(logits, {n, vocab}), vocab, I32(targets, {n}), grad_scale, F32(losses, {n}),
                         F32(logits, {n, vocab}));
  EXPECT_EQ(losses, expect_losses);
  EXPECT_EQ(logits, dlogits);
}

TEST_F(CpuOpsTest, ArgMaxTakesTheFirstMaximum) {
  std::vector<float> logits = {1, 3, 3, 2, -1, -2, -3, -1};
  std::vector<int32_t> out(2);
  backend_->ArgMax(F32(logits, {2, 4}), 4, I32(out, {2}));
  EXPECT_EQ(out[0], 1);
  EXPECT_EQ(out[1], 0);
}

// Padded rows (backend.h): the same results as unpadded ones, and the padding is never touched.
TEST_F(CpuOpsTest, PaddedLogitRowsGiveTheSameResults) {
  const int64_t m = 5, k = 6, n = 11, pitch = 16;
  const float kPad = 123.0f;
  std::vector<float> x = RandomVector(gen_, m * k), w = RandomVector(gen_, n * k), b = RandomVector(gen_, n);
  auto pad = [&](const std::vector<float>& dense) {
    std::vector<float> padded(m * pitch, kPad);
    for (int64_t r = 0; r < m; ++r) std::copy_n(dense.begin() + r * n, n, padded.begin() + r * pitch);
    return padded;
  };
  std::vector<float> dense(m * n), padded(m * pitch, kPad);
  backend_->LinearForward(F32(x, {m, k}), F32(w, {n, k}), F32(b, {n}), Activation::kNone, {}, F32(dense, {m, n}));
  backend_->LinearForward(F32(x, {m, k}), F32(w, {n, k}), F32(b, {n}), Activation::kNone, {}, F32(padded, {m, pitch}));
  EXPECT_EQ(padded, pad(dense));

  std::vector<int32_t> targets = {3, -1, 0, 10, 7}, dense_max(m), padded_max(m);
  std::vector<float> dense_losses(m), padded_losses(m);
  backend_->ArgMax(F32(dense, {m, n}), n, I32(dense_max, {m}));
  backend_->ArgMax(F32(padded, {m, pitch}), n, I32(padded_max, {m}));
  EXPECT_EQ(padded_max, dense_max);
  backend_->CrossEntropy(F32(dense, {m, n}), n, I32(targets, {m}), 0.5f, F32(dense_losses, {m}), F32(dense, {m, n}));
  backend_->CrossEntropy(F32(padded, {m, pitch}), n, I32(targets, {m}), 0.5f, F32(padded_losses, {m}),
                         F32(padded, {m, pitch}));
  EXPECT_EQ(padded_losses, dense_losses);
  EXPECT_EQ(padded, pad(dense));  // the gradients, in place

  std::vector<float> dx_dense(m * k), dx_padded(m * k), dw_dense(n * k, 1.0f), dw_padded(n * k, 1.0f),
      db_dense(n, 1.0f), db_padded(n, 1.0f);
  backend_->LinearBackward(F32(dense, {m, n}), F32(x, {m, k}), F32(w, {n, k}), Activation::kNone, {},
                           F32(dx_dense, {m, k}), false, F32(dw_dense, {n, k}), F32(db_dense, {n}));
  backend_->LinearBackward(F32(padded, {m, pitch}), F32(x, {m, k}), F32(w, {n, k}), Activation::kNone, {},
                           F32(dx_padded, {m, k}), false, F32(dw_padded, {n, k}), F32(db_padded, {n}));
  EXPECT_EQ(dx_padded, dx_dense);
  EXPECT_EQ(dw_padded, dw_dense);
  EXPECT_EQ(db_padded, db_dense);
  EXPECT_EQ(padded, pad(dense));  // dout is only read
}

// ---- argument checks ----

TEST_F(CpuOpsTest, MisuseAbortsWithAMessage) {
  GTEST_FLAG_SET(death_test_style, "threadsafe");
  std::vector<int32_t> ids = {0, 5}, type_ids = {0, 0};
  std::vector<float> table(5 * 2), pos(2 * 2), type(2 * 2), out(2 * 2);
  EXPECT_DEATH(backend_->EmbeddingForward(I32(ids, {1, 2}), I32(type_ids, {1, 2}), F32(table, {5, 2}), F32(pos, {2, 2}),
                                          F32(type, {2, 2}), 1.0f, F32(out, {2, 2})),
               "token id 5");
  std::vector<float> x(2 * 5), w(3 * 4), y(2 * 3);
  EXPECT_DEATH(backend_->LinearForward(F32(x, {2, 5}), F32(w, {3, 4}), TensorView{}, Activation::kNone, TensorView{},
                                       F32(y, {2, 3})),
               "w must be \\[3, 5\\]");
  std::vector<float> logits(3), losses(1);
  std::vector<int32_t> targets = {-2};
  EXPECT_DEATH(backend_->CrossEntropy(F32(logits, {1, 3}), 3, I32(targets, {1}), 1.0f, F32(losses, {1}), TensorView{}),
               "target -2");
  EXPECT_DEATH(backend_->CrossEntropy(F32(logits, {1, 3}), 4, I32(targets, {1}), 1.0f, F32(losses, {1}), TensorView{}),
               "logits must be \\[1, 4\\] or padded rows");
  std::vector<float> w5(3 * 5), wide(2 * 4);  // padded rows, but GELU writes whole rows
  EXPECT_DEATH(backend_->LinearForward(F32(x, {2, 5}), F32(w5, {3, 5}), TensorView{}, Activation::kGelu,
                                       F32(wide, {2, 4}), F32(wide, {2, 4})),
               "out must be \\[2, 3\\], got");
  EXPECT_DEATH(backend_->AddDropout(F32(x, {10}), I32(ids, {2}), 0.0f, {}, F32(x, {10})), "b must be f32");
}

// The CUDA attention kernels (flash and gemm) exist only on the GPU: asking the CPU for either is
// an error, not a silent fallback to the reference.
TEST(MakeBackend, CudaAttentionKernelsOnTheCpuAreAnError) {
  absl::StatusOr<std::unique_ptr<Backend>> b = MakeBackend("cpu", {.attention = AttentionKernel::kFlash});
  ASSERT_FALSE(b.ok());
  EXPECT_NE(b.status().message().find("attention \"flash\" is a CUDA kernel"), std::string::npos) << b.status();
  b = MakeBackend("cpu", {.attention = AttentionKernel::kGemm});
  ASSERT_FALSE(b.ok());
  EXPECT_NE(b.status().message().find("attention \"gemm\" is a CUDA kernel"), std::string::npos) << b.status();
  // The default, "auto", is the fused kernels on a GPU and the reference here.
  EXPECT_EQ(BackendOptions{}.attention, AttentionKernel::kAuto);
  EXPECT_EQ(*ParseAttentionKernel("auto", "run.attention"), AttentionKernel::kAuto);
  EXPECT_TRUE(MakeBackend("cpu", {.attention = AttentionKernel::kAuto}).ok());
  EXPECT_FALSE(MakeBackend("tpu").ok());
  // Tuning cuBLASLt's products likewise.
  b = MakeBackend("cpu", {.gemm_autotune = true});
  ASSERT_FALSE(b.ok());
  EXPECT_NE(b.status().message().find("gemm_autotune"), std::string::npos) << b.status();
  EXPECT_FALSE(ParseAttentionKernel("sdpa", "run.attention").ok());
}

}  // namespace
}  // namespace lamina
