// The per-layer diagnostics: group norms equal a direct computation over the named tensors, the
// gradient norms match central differences of the loss, the update norms are those of the
// difference, and the layer output norms are what a LayerNorm output must have.
#include "model/layer_stats.h"

#include <cmath>
#include <random>

#include "absl/strings/str_cat.h"
#include "gtest/gtest.h"
#include "model/bert.h"
#include "tests/testing/model_gradient.h"
#include "tests/testing/random_batch.h"
#include "tests/testing/tiny_config.h"

namespace lamina {
namespace {

BertConfig Config(NormPlacement norm) {
  BertConfig c = testing::TinyBertConfig({.vocab_size = 40, .hidden = 16, .heads = 2, .max_positions = 12}, norm);
  c.layer_norm_eps = 1e-5f;
  return c;
}

// The L2 norm of the named tensors of `flat`.
double NormOf(const ParamLayout& layout, std::span<const float> flat, const std::vector<std::string>& names) {
  double sum = 0;
  for (const std::string& name : names) {
    auto p = layout.Find(name);
    EXPECT_TRUE(p.ok()) << p.status();
    if (!p.ok()) continue;
    for (int64_t i = 0; i < (*p)->numel(); ++i) sum += static_cast<double>(flat[(*p)->offset + i]) * flat[(*p)->offset + i];
  }
  return std::sqrt(sum);
}

// The tensors of each group of layer l, by name, for `norm`.
std::vector<std::string> GroupTensors(ParamGroup g, int l, NormPlacement norm) {
  const std::string p = absl::StrCat("bert.encoder.layer.", l, ".");
  switch (g) {
    case ParamGroup::kAttnQkv:
      return {p + "attention.self.query.weight", p + "attention.self.key.weight", p + "attention.self.value.weight"};
    case ParamGroup::kAttnOut: return {p + "attention.output.dense.weight"};
    case ParamGroup::kFfnW1: return {p + "intermediate.dense.weight"};
    case ParamGroup::kFfnW2: return {p + "output.dense.weight"};
    case ParamGroup::kLayerNorm:
      if (norm == NormPlacement::kPost)
        return {p + "attention.output.LayerNorm.weight", p + "attention.output.LayerNorm.bias",
                p + "output.LayerNorm.weight", p + "output.LayerNorm.bias"};
      if (norm == NormPlacement::kPre)
        return {p + "attention.LayerNorm.weight", p + "attention.LayerNorm.bias", p + "intermediate.LayerNorm.weight",
                p + "intermediate.LayerNorm.bias"};
      return {};
  }
  return {};
}

class LayerStatsTest : public ::testing::TestWithParam<NormPlacement> {};

TEST_P(LayerStatsTest, GroupNormsEqualTheNamedTensorsNorms) {
  const NormPlacement norm = GetParam();
  const ParamLayout layout = ParamLayout::Build(Config(norm), HeadOptions{});
  std::mt19937 gen(5);
  std::normal_distribution<float> d(0.0f, 1.0f);
  std::vector<float> before(layout.total()), after(layout.total()), diff(layout.total());
  for (int64_t i = 0; i < layout.total(); ++i) {
    before[i] = d(gen);
    after[i] = d(gen);
    diff[i] = after[i] - before[i];
  }
  const LayerGroupNorms norms = ComputeLayerGroupNorms(layout, before);
  const LayerGroupNorms updates = ComputeLayerUpdateNorms(layout, before, after);
  for (ParamGroup g : kParamGroups) {
    SCOPED_TRACE(ParamGroupName(g));
    if (norm == NormPlacement::kNone && g == ParamGroup::kLayerNorm) {
      EXPECT_FALSE(norms.of(g).has_value()) << "T-Fixup has no LayerNorm";
      EXPECT_FALSE(norms.ToJson().contains("layer_norm"));
      continue;
    }
    ASSERT_TRUE(norms.of(g).has_value());
    ASSERT_EQ(norms.of(g)->size(), 2u);
    for (int l = 0; l < 2; ++l) {
      EXPECT_NEAR((*norms.of(g))[l], NormOf(layout, before, GroupTensors(g, l, norm)), 1e-9);
      EXPECT_NEAR((*updates.of(g))[l], NormOf(layout, diff, GroupTensors(g, l, norm)), 1e-5);
      EXPECT_GT((*norms.of(g))[l], 0.0);
    }
  }
}

// The norm of each group's gradient, from Backward(), against the norm of its central-difference
// gradient over every element of the group (layer 2 of a 2-layer model: the last layer).
TEST_P(LayerStatsTest, GradientNormsMatchCentralDifferences) {
  const NormPlacement norm = GetParam();
  const BertConfig c = Config(norm);
  auto backend = MakeCpuBackend();
  auto created = BertModel::Create(c, HeadOptions{}, backend.get());
  ASSERT_TRUE(created.ok()) << created.status();
  BertModel& model = **created;
  model.Initialize(3);
  std::vector<float> params = testing::PerturbParams(model, 4, 0.05f);
  const EncoderBatch batch = testing::RandomBatch(c, 3, 8, 3, 17);
  ForwardOptions o;
  auto loss = [&]() {
    auto s = model.ForwardMlm(batch, o);
    EXPECT_TRUE(s.ok()) << s.status();
    return s->loss_sum;
  };
  model.ZeroGrads();
  o.compute_grad = true;
  ASSERT_TRUE(model.ForwardMlm(batch, o).ok());
  model.Backward();
  o.compute_grad = false;
  const LayerGroupNorms analytic = ComputeLayerGroupNorms(model.layout(), model.GradsToHost());

  for (ParamGroup g : kParamGroups) {
    if (!analytic.of(g).has_value()) continue;
    SCOPED_TRACE(ParamGroupName(g));
    double sum = 0;
    for (const std::string& name : GroupTensors(g, 1, norm)) {
      const ParamInfo* p = *model.layout().Find(name);
      for (int64_t i = p->offset; i < p->offset + p->numel(); ++i) {
        const double numeric = testing::CentralDifference(model, params, i, 1e-2, loss);
        sum += numeric * numeric;
      }
    }
    ASSERT_TRUE(model.LoadParams(params).ok());
    const double numeric_norm = std::sqrt(sum);
    EXPECT_GT(numeric_norm, 1e-4);
    EXPECT_NEAR((*analytic.of(g))[1], numeric_norm, 2e-2 * numeric_norm);
  }
}

INSTANTIATE_TEST_SUITE_P(Variants, LayerStatsTest,
                         ::testing::Values(NormPlacement::kPost, NormPlacement::kPre, NormPlacement::kNone),
                         [](const ::testing::TestParamInfo<NormPlacement>& info) { return NormName(info.param); });

// A Post-LN layer's output is a LayerNorm's with unit gain and zero bias: every position's norm
// is sqrt(H) (up to eps), whatever the input. Pre-LN's is the unnormalised residual stream.
// LayerOutputNorms after a forward pass of a fresh model of `c` on a random batch.
std::vector<double> OutputNormsAtInit(const BertConfig& c) {
  auto backend = MakeCpuBackend();
  auto model = BertModel::Create(c, HeadOptions{}, backend.get());
  EXPECT_TRUE(model.ok()) << model.status();
  if (!model.ok()) return {};
  (*model)->Initialize(1);
  EXPECT_TRUE((*model)->ForwardMlm(testing::RandomBatch(c, 2, 8, 2, 3), ForwardOptions{}).ok());
  return (*model)->LayerOutputNorms();
}

TEST(LayerOutputNorms, PostLnOutputsHaveNormSqrtHidden) {
  const BertConfig c = Config(NormPlacement::kPost);
  const std::vector<double> norms = OutputNormsAtInit(c);
  ASSERT_EQ(norms.size(), 2u);
  for (double n : norms) EXPECT_NEAR(n, std::sqrt(static_cast<double>(c.hidden)), 1e-3);
}

TEST(LayerOutputNorms, PreLnResidualStreamGrowsOverLayers) {
  BertConfig c = Config(NormPlacement::kPre);
  c.layers = 4;
  c.init = InitScheme::kXavier;
  const std::vector<double> norms = OutputNormsAtInit(c);
  ASSERT_EQ(norms.size(), 4u);
  // Each layer adds a branch roughly independent of the stream: the norm grows.
  for (size_t l = 1; l < norms.size(); ++l) EXPECT_GT(norms[l], norms[l - 1]) << "layer " << l;
  EXPECT_GT(norms[0], std::sqrt(static_cast<double>(c.hidden)));
}

}  // namespace
}  // namespace lamina
