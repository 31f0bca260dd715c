// The encoder end to end on the CPU reference: parameter counts, whole-model gradient checks for
// each variant (dropout off and on), batch-split invariance, and memorisation.
#include "model/bert.h"

#include <cmath>
#include <random>

#include "absl/strings/match.h"
#include "gtest/gtest.h"
#include "model/flops.h"
#include "model/init.h"
#include "model/optimizer.h"
#include "tests/testing/model_gradient.h"
#include "tests/testing/random_batch.h"
#include "tests/testing/tiny_config.h"

namespace lamina {
namespace {

BertConfig TinyConfig(NormPlacement norm) {
  BertConfig c = testing::TinyBertConfig({.vocab_size = 40, .hidden = 16, .heads = 2, .max_positions = 12}, norm);
  c.hidden_dropout = 0.1f;
  c.attention_dropout = 0.1f;
  c.layer_norm_eps = 1e-5f;
  return c;
}

// Backward reports gradients final from the end of the buffer backwards (heads, layers from the
// last, embeddings): at each report, everything from `from` on already has its final value, and
// the tied word embeddings are completed only at the end.
TEST(BertModel, BackwardReportsFinalGradientsFromTheEnd) {
  for (NormPlacement norm : {NormPlacement::kPost, NormPlacement::kPre, NormPlacement::kNone}) {
    for (HeadOptions heads : {HeadOptions{}, HeadOptions{false, 3}}) {
      const BertConfig c = TinyConfig(norm);
      auto backend = MakeCpuBackend();
      auto model = *BertModel::Create(c, heads, backend.get());
      model->Initialize(4);
      const EncoderBatch batch = testing::RandomBatch(c, 3, 8, 2, 9);
      ForwardOptions o{.training = true, .seed = 2, .step = 1, .compute_grad = true};
      for (int pass = 0; pass < 2; ++pass) {  // the second pass accumulates onto the first
        ASSERT_TRUE((heads.mlm ? model->ForwardMlm(batch, o) : model->ForwardClassify(batch, o)).ok());
        std::vector<std::pair<int64_t, std::vector<float>>> reports;
        model->Backward([&](int64_t from) { reports.emplace_back(from, model->GradsToHost()); });
        const std::vector<float> final_grads = model->GradsToHost();
        const std::string what = absl::StrCat(NormName(norm), heads.mlm ? " mlm" : " classify", " pass ", pass);
        ASSERT_EQ(reports.size(), static_cast<size_t>(c.layers + 2)) << what;
        EXPECT_EQ(reports.back().first, 0) << what;
        for (size_t k = 0; k < reports.size(); ++k) {
          const auto& [from, grads] = reports[k];
          if (k > 0) {
            EXPECT_LT(from, reports[k - 1].first) << what;
          }
          for (int64_t i = from; i < static_cast<int64_t>(grads.size()); ++i)
            ASSERT_EQ(grads[i], final_grads[i]) << what << ": report " << k << " (from " << from << ") at " << i;
        }
        // Before the last report the word embeddings' gradient was not complete.
        const int64_t word = model->layout().word_emb, words = c.vocab_size * c.hidden;
        const std::vector<float>& early = reports[reports.size() - 2].second;
        EXPECT_FALSE(std::equal(early.begin() + word, early.begin() + word + words, final_grads.begin() + word)) << what;
      }
    }
  }
}

TEST(BertModel, BertBaseHasTheParameterCountOfHuggingFace) {
  BertConfig c;  // defaults are bert-base-uncased
  const ParamLayout layout = ParamLayout::Build(c, HeadOptions{});
  // transformers' BertForMaskedLM(bert-base-uncased) has 109,514,298 parameters (decoder tied).
  EXPECT_EQ(TotalParams(layout), 109514298);
  EXPECT_TRUE(layout.Contains("bert.encoder.layer.11.attention.self.query.weight"));
  EXPECT_TRUE(layout.Contains("cls.predictions.transform.LayerNorm.bias"));
  EXPECT_FALSE(layout.Contains("bert.pooler.dense.weight"));
  // The pooler and a 2-way classifier: BertForSequenceClassification's 109,483,778.
  c.vocab_size = 30522;
  const ParamLayout cls = ParamLayout::Build(c, HeadOptions{false, 2});
  EXPECT_EQ(TotalParams(cls), 109483778);
}

TEST(BertModel, QueryKeyValueAreOneMatrix) {
  const ParamLayout layout = ParamLayout::Build(TinyConfig(NormPlacement::kPost), HeadOptions{});
  const int64_t H = 16;
  const ParamInfo* q = *layout.Find("bert.encoder.layer.1.attention.self.query.weight");
  const ParamInfo* k = *layout.Find("bert.encoder.layer.1.attention.self.key.weight");
  const ParamInfo* v = *layout.Find("bert.encoder.layer.1.attention.self.value.weight");
  EXPECT_EQ(k->offset, q->offset + H * H);
  EXPECT_EQ(v->offset, k->offset + H * H);
  const ParamInfo* qb = *layout.Find("bert.encoder.layer.1.attention.self.query.bias");
  EXPECT_EQ((*layout.Find("bert.encoder.layer.1.attention.self.value.bias"))->offset, qb->offset + 2 * H);
  EXPECT_EQ(layout.layers[1].qkv_w, q->offset);
  for (const ParamInfo& p : layout.params()) EXPECT_EQ(p.decay, !absl::EndsWith(p.name, "bias") && !absl::StrContains(p.name, "LayerNorm")) << p.name;
}

struct Variant {
  NormPlacement norm;
  bool dropout;
  bool classify;
  HiddenActivation activation = HiddenActivation::kGelu;
};

class BertGradient : public ::testing::TestWithParam<Variant> {};

// Central differences of the whole model's loss against Backward(), on a sample of every tensor.
TEST_P(BertGradient, MatchesCentralDifferences) {
  const Variant v = GetParam();
  BertConfig c = TinyConfig(v.norm);
  c.activation = v.activation;
  auto backend = MakeCpuBackend();
  auto model_or = BertModel::Create(c, HeadOptions{true, v.classify ? 3 : 0}, backend.get());
  ASSERT_TRUE(model_or.ok()) << model_or.status();
  BertModel& model = **model_or;
  model.Initialize(7);
  std::vector<float> params = testing::PerturbParams(model, 3, 0.05f);
  std::mt19937 gen(3);

  const EncoderBatch batch = testing::RandomBatch(c, 3, 8, 3, 11);
  ForwardOptions o;
  o.training = v.dropout;
  o.seed = 99;
  o.step = 5;
  o.grad_scale = 1.0f;
  auto loss = [&]() -> double {
    ForwardOptions f = o;
    f.compute_grad = false;
    auto s = v.classify ? model.ForwardClassify(batch, f) : model.ForwardMlm(batch, f);
    EXPECT_TRUE(s.ok()) << s.status();
    return s->loss_sum;
  };
  const double loss0 = loss();
  model.ZeroGrads();
  o.compute_grad = true;
  auto s = v.classify ? model.ForwardClassify(batch, o) : model.ForwardMlm(batch, o);
  ASSERT_TRUE(s.ok()) << s.status();
  EXPECT_EQ(s->loss_sum, loss0) << "the forward pass is deterministic";
  model.Backward();
  const std::vector<float> grads = model.GradsToHost();

  // Check a sample of elements of every tensor the loss depends on.
  double err2 = 0, ref2 = 0;
  int checked = 0, bad = 0;
  std::string report;
  for (const ParamInfo& p : model.layout().params()) {
    if (!v.classify && absl::StartsWith(p.name, "classifier")) continue;
    if (!v.classify && absl::StartsWith(p.name, "bert.pooler")) continue;
    if (v.classify && absl::StartsWith(p.name, "cls.")) continue;
    std::uniform_int_distribution<int64_t> pick(0, p.numel() - 1);
    for (int k = 0; k < 6; ++k) {
      const int64_t i = p.offset + pick(gen);
      const double numeric = testing::CentralDifference(model, params, i, 1e-2, loss), analytic = grads[i];
      err2 += (numeric - analytic) * (numeric - analytic);
      ref2 += numeric * numeric;
      ++checked;
      if (std::fabs(numeric - analytic) > 2e-3 + 3e-2 * std::max(std::fabs(numeric), std::fabs(analytic))) {
        ++bad;
        if (bad <= 8) report += absl::StrCat("\n  ", p.name, "[", i - p.offset, "]: analytic ", analytic, " numeric ", numeric);
      }
    }
  }
  ASSERT_TRUE(model.LoadParams(params).ok());
  EXPECT_EQ(bad, 0) << bad << " of " << checked << " gradients off:" << report;
  EXPECT_LT(std::sqrt(err2 / ref2), 1e-2) << "relative error over " << checked << " gradients";
}

INSTANTIATE_TEST_SUITE_P(Variants, BertGradient,
                         ::testing::Values(Variant{NormPlacement::kPost, false, false},
                                           Variant{NormPlacement::kPost, true, false},
                                           Variant{NormPlacement::kPre, false, false},
                                           Variant{NormPlacement::kPre, true, false},
                                           Variant{NormPlacement::kNone, false, false},
                                           Variant{NormPlacement::kNone, true, false},
                                           Variant{NormPlacement::kPost, true, true},
                                           Variant{NormPlacement::kPre, false, true},
                                           Variant{NormPlacement::kPost, false, false, HiddenActivation::kGeluTanh}),
                         [](const ::testing::TestParamInfo<Variant>& info) {
                           return NormName(info.param.norm) + (info.param.dropout ? "_dropout" : "_nodropout") +
                                  (info.param.classify ? "_classify" : "_mlm") +
                                  (info.param.activation == HiddenActivation::kGelu ? "" : "_gelu_tanh");
                         });

// Splitting a batch into row slices (with first_sample set) and accumulating gives the gradient
// of the whole batch, dropout included: what gradient accumulation and data parallelism rely on.
TEST(BertModel, SlicedBatchesAccumulateToTheWholeBatchGradient) {
  for (NormPlacement norm : {NormPlacement::kPost, NormPlacement::kPre, NormPlacement::kNone}) {
    BertConfig c = TinyConfig(norm);
    auto backend = MakeCpuBackend();
    auto model = *BertModel::Create(c, HeadOptions{}, backend.get());
    model->Initialize(1);
    const EncoderBatch whole = testing::RandomBatch(c, 4, 8, 2, 5);
    ForwardOptions o{.training = true, .seed = 17, .step = 3, .compute_grad = true};
    o.grad_scale = 1.0f / whole.mlm_positions.size();
    model->ZeroGrads();
    auto s = model->ForwardMlm(whole, o);
    ASSERT_TRUE(s.ok()) << s.status();
    model->Backward();
    const std::vector<float> g_whole = model->GradsToHost();

    model->ZeroGrads();
    double loss_parts = 0;
    for (int64_t first = 0; first < 4; first += 2) {
      EncoderBatch part;
      part.batch = 2;
      part.seq = 8;
      part.first_sample = first;
      const int64_t lo = first * 8, hi = (first + 2) * 8;
      part.input_ids.assign(whole.input_ids.begin() + lo, whole.input_ids.begin() + hi);
      part.token_types.assign(whole.token_types.begin() + lo, whole.token_types.begin() + hi);
      part.attention_mask.assign(whole.attention_mask.begin() + lo, whole.attention_mask.begin() + hi);
      for (size_t i = 0; i < whole.mlm_positions.size(); ++i) {
        if (whole.mlm_positions[i] >= lo && whole.mlm_positions[i] < hi) {
          part.mlm_positions.push_back(whole.mlm_positions[i] - static_cast<int32_t>(lo));
          part.mlm_labels.push_back(whole.mlm_labels[i]);
        }
      }
      auto ps = model->ForwardMlm(part, o);
      ASSERT_TRUE(ps.ok()) << ps.status();
      loss_parts += ps->loss_sum;
      model->Backward();
    }
    const std::vector<float> g_parts = model->GradsToHost();
    EXPECT_NEAR(loss_parts, s->loss_sum, 1e-4 * s->loss_sum) << NormName(norm);
    double d2 = 0, n2 = 0;
    for (size_t i = 0; i < g_whole.size(); ++i) {
      d2 += (g_whole[i] - g_parts[i]) * (g_whole[i] - g_parts[i]);
      n2 += g_whole[i] * g_whole[i];
    }
    EXPECT_LT(std::sqrt(d2 / n2), 1e-5) << NormName(norm);
  }
}

// Each variant learns a fixed batch of MLM examples by heart with AdamW.
TEST(BertModel, EveryVariantMemorisesAFixedBatch) {
  for (NormPlacement norm : {NormPlacement::kPost, NormPlacement::kPre, NormPlacement::kNone}) {
    BertConfig c = TinyConfig(norm);
    c.hidden = 32;
    c.ffn = 64;
    c.heads = 4;
    c.hidden_dropout = c.attention_dropout = 0.0f;
    auto backend = MakeCpuBackend();
    auto model = *BertModel::Create(c, HeadOptions{}, backend.get());
    model->Initialize(2);
    OptimizerConfig oc;
    oc.weight_decay = 0.0f;
    auto opt = *Optimizer::Create(oc, model.get());
    const EncoderBatch batch = testing::RandomBatch(c, 4, 10, 3, 23);
    double first = 0, last = 0;
    for (int step = 0; step < 300; ++step) {
      model->ZeroGrads();
      ForwardOptions o{.training = true, .seed = 1, .step = step, .compute_grad = true};
      o.grad_scale = 1.0f / batch.mlm_positions.size();
      auto s = model->ForwardMlm(batch, o);
      ASSERT_TRUE(s.ok()) << s.status();
      model->Backward();
      ASSERT_TRUE(opt->Step(3e-3f)->applied);
      last = s->loss_sum / s->count;
      if (step == 0) first = last;
      if (last < 0.05) break;
    }
    EXPECT_GT(first, 2.5) << NormName(norm);
    EXPECT_LT(last, 0.1) << NormName(norm) << " loss fell from " << first << " only to " << last;
  }
}

TEST(BertModel, RejectsBadBatches) {
  BertConfig c = TinyConfig(NormPlacement::kPre);
  auto backend = MakeCpuBackend();
  auto model = *BertModel::Create(c, HeadOptions{}, backend.get());
  model->Initialize(0);
  EncoderBatch b = testing::RandomBatch(c, 2, 8, 1, 1);
  b.input_ids[3] = 1000;
  EXPECT_FALSE(model->ForwardMlm(b, {}).ok());
  b = testing::RandomBatch(c, 2, 20, 1, 1);  // longer than max_positions
  auto s = model->ForwardMlm(b, {});
  ASSERT_FALSE(s.ok());
  EXPECT_TRUE(absl::StrContains(s.status().message(), "max_positions")) << s.status();
  b = testing::RandomBatch(c, 2, 8, 1, 1);
  EXPECT_FALSE(model->ForwardClassify(b, {}).ok()) << "no classification head";
}

}  // namespace
}  // namespace lamina
