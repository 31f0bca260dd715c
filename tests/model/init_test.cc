// Initialisation schemes: Xavier's bounds and variance on every Linear weight and fairseq's
// embedding scale; the config reads the scheme's name.
#include "model/init.h"

#include <cmath>

#include "absl/strings/match.h"
#include "gtest/gtest.h"
#include "tests/testing/tiny_config.h"

namespace lamina {
namespace {

TEST(Init, XavierDrawsEveryLinearWeightUniformlyWithinItsBound) {
  BertConfig c = testing::TinyBertConfig({.vocab_size = 200, .hidden = 64, .heads = 2, .max_positions = 32},
                                         NormPlacement::kPre);
  c.init = InitScheme::kXavier;
  const ParamLayout layout = ParamLayout::Build(c, HeadOptions{true, 2});
  std::vector<float> params;
  InitParams(c, layout, 7, &params);
  int linear = 0;
  for (const ParamInfo& p : layout.params()) {
    const float* v = params.data() + p.offset;
    double sum = 0, sum2 = 0, max_abs = 0;
    for (int64_t i = 0; i < p.numel(); ++i) {
      sum += v[i];
      sum2 += static_cast<double>(v[i]) * v[i];
      max_abs = std::max(max_abs, static_cast<double>(std::fabs(v[i])));
    }
    const double n = static_cast<double>(p.numel()), mean = sum / n, var = sum2 / n - mean * mean;
    SCOPED_TRACE(p.name);
    if (absl::EndsWith(p.name, "LayerNorm.weight")) {
      EXPECT_EQ(max_abs, 1.0);
    } else if (absl::EndsWith(p.name, "bias")) {
      EXPECT_EQ(max_abs, 0.0);
    } else if (absl::StartsWith(p.name, "bert.embeddings.")) {
      if (p.numel() < 1000) continue;  // the 2-row type table: too few draws for a variance
      EXPECT_NEAR(std::sqrt(var), 1.0 / std::sqrt(64.0), 0.1 / std::sqrt(64.0));
    } else {
      ASSERT_EQ(p.shape.rank(), 2);
      ++linear;
      const double a = std::sqrt(6.0 / static_cast<double>(p.shape[0] + p.shape[1]));
      EXPECT_LE(max_abs, a);
      EXPECT_GT(max_abs, 0.95 * a);
      EXPECT_NEAR(var, a * a / 3, 0.1 * a * a / 3);  // U(-a, a)
    }
  }
  // Q, K, V, attention output, W1, W2 per layer, the MLM transform, the pooler, the classifier.
  EXPECT_EQ(linear, 6 * 2 + 3);
}

TEST(Init, ConfigNamesTheScheme) {
  auto c = BertConfig::FromJson({{"init", "xavier"}, {"norm", "post"}});
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->init, InitScheme::kXavier);
  EXPECT_EQ(c->ToJson()["init"], "xavier");
  auto bad = BertConfig::FromJson({{"init", "glorot"}});
  ASSERT_FALSE(bad.ok());
  EXPECT_TRUE(absl::StrContains(bad.status().message(), "\"xavier\"")) << bad.status();
  auto none = BertConfig::FromJson({{"init", "xavier"}, {"norm", "none"}});
  EXPECT_FALSE(none.ok()) << "a LayerNorm-free encoder needs T-Fixup's init";
}

}  // namespace
}  // namespace lamina
