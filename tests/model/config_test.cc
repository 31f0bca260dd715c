#include "model/config.h"

#include <filesystem>
#include <fstream>

#include "absl/strings/match.h"
#include "gtest/gtest.h"
#include "model/init.h"
#include "model/param_layout.h"

namespace lamina {
namespace {

std::string ErrorOf(const std::string& json) {
  auto c = BertConfig::FromJson(nlohmann::json::parse(json));
  return c.ok() ? "" : std::string(c.status().message());
}

TEST(BertConfig, RejectsInconsistentConfigsNamingTheKey) {
  EXPECT_TRUE(absl::StrContains(ErrorOf(R"({"hidden": 100, "heads": 12})"), "model.hidden")) << ErrorOf(R"({"hidden": 100})");
  EXPECT_TRUE(absl::StrContains(ErrorOf(R"({"hidden": 96, "heads": 7})"), "divisible"));
  EXPECT_TRUE(absl::StrContains(ErrorOf(R"({"norm": "none"})"), "tfixup"));
  EXPECT_TRUE(absl::StrContains(ErrorOf(R"({"norm": "post", "init": "tfixup"})"), "model.init"));
  EXPECT_TRUE(absl::StrContains(ErrorOf(R"({"norm": "sandwich"})"), "model.norm"));
  EXPECT_TRUE(absl::StrContains(ErrorOf(R"({"layers": "12"})"), "model.layers: expected an integer"));
  EXPECT_TRUE(absl::StrContains(ErrorOf(R"({"hidden_dropout": 1.5})"), "model.hidden_dropout"));
  EXPECT_TRUE(absl::StrContains(ErrorOf(R"({"hiden": 768})"), "model.hiden: unknown key"));
  EXPECT_EQ(ErrorOf(R"({"norm": "none", "init": "tfixup"})"), "");
  EXPECT_EQ(ErrorOf(R"({"norm": "pre"})"), "");
  EXPECT_TRUE(absl::StrContains(ErrorOf(R"({"activation": "relu"})"), "model.activation: expected \"gelu\" or \"gelu_tanh\""));
}

// "activation" is written only when it is not the default, so configs and checkpoints of builds
// before the option compare equal to today's.
TEST(BertConfig, ActivationRoundTripsAndIsOmittedWhenDefault) {
  BertConfig c;
  EXPECT_FALSE(c.ToJson().contains("activation"));
  c.activation = HiddenActivation::kGeluTanh;
  EXPECT_EQ(c.ToJson()["activation"], "gelu_tanh");
  auto back = BertConfig::FromJson(c.ToJson());
  ASSERT_TRUE(back.ok()) << back.status();
  EXPECT_EQ(back->activation, HiddenActivation::kGeluTanh);
  auto erf = BertConfig::FromJson(nlohmann::json{{"activation", "gelu"}});
  ASSERT_TRUE(erf.ok()) << erf.status();
  EXPECT_EQ(erf->activation, HiddenActivation::kGelu);
}

TEST(BertConfig, RoundTripsThroughJsonAndReadsShippedConfigs) {
  BertConfig c;
  c.layers = 4;
  c.norm = NormPlacement::kPre;
  auto back = BertConfig::FromJson(c.ToJson());
  ASSERT_TRUE(back.ok());
  EXPECT_EQ(back->ToJson(), c.ToJson());
  const char* src = std::getenv("LAMINA_SOURCE_DIR");
  ASSERT_NE(src, nullptr);
  for (const char* name : {"bert-base", "bert-small", "tiny"}) {
    auto f = BertConfig::FromFile(std::string(src) + "/launch/configs/model/" + name + ".json");
    EXPECT_TRUE(f.ok()) << name << ": " << f.status();
  }
  auto small = *BertConfig::FromFile(std::string(src) + "/launch/configs/model/bert-small.json");
  EXPECT_EQ(small.layers, 4);
  EXPECT_EQ(small.hidden, 512);
  EXPECT_EQ(small.heads, 8);
  auto missing = BertConfig::FromFile("/no/such/config.json");
  EXPECT_FALSE(missing.ok());
}

TEST(Init, BertIsTruncatedNormalAndTFixupIsScaled) {
  BertConfig c;
  c.vocab_size = 1000;
  c.hidden = 64;
  c.heads = 4;
  c.ffn = 256;
  c.layers = 6;
  c.max_positions = 64;
  const ParamLayout bert_layout = ParamLayout::Build(c, HeadOptions{});
  std::vector<float> p;
  InitParams(c, bert_layout, 3, &p);
  const ParamInfo* word = *bert_layout.Find("bert.embeddings.word_embeddings.weight");
  double sum2 = 0, maxabs = 0;
  for (int64_t i = 0; i < word->numel(); ++i) {
    sum2 += p[word->offset + i] * p[word->offset + i];
    maxabs = std::max<double>(maxabs, std::fabs(p[word->offset + i]));
  }
  // A normal truncated at 2 std keeps 77.4% of its variance.
  EXPECT_NEAR(std::sqrt(sum2 / word->numel()), 0.02 * std::sqrt(0.774), 0.0015);
  EXPECT_LE(maxabs, 0.04 + 1e-6);
  EXPECT_EQ(p[(*bert_layout.Find("bert.encoder.layer.0.output.LayerNorm.weight"))->offset], 1.0f);
  EXPECT_EQ(p[(*bert_layout.Find("bert.encoder.layer.0.output.dense.bias"))->offset + 5], 0.0f);
  std::vector<float> again;
  InitParams(c, bert_layout, 3, &again);
  EXPECT_EQ(p, again) << "initialisation is deterministic";

  c.norm = NormPlacement::kNone;
  c.init = InitScheme::kTFixup;
  const ParamLayout tf = ParamLayout::Build(c, HeadOptions{});
  InitParams(c, tf, 3, &p);
  auto rms = [&](const char* name) {
    const ParamInfo* q = *tf.Find(name);
    double s = 0;
    for (int64_t i = 0; i < q->numel(); ++i) s += p[q->offset + i] * p[q->offset + i];
    return std::sqrt(s / q->numel());
  };
  const double n = 6, d = 64;
  EXPECT_NEAR(rms("bert.embeddings.word_embeddings.weight"), std::pow(d, -0.5) * std::pow(9 * n, -0.25), 0.01 * std::pow(d, -0.5));
  const double xavier_hh = std::sqrt(2.0 / (64 + 64));  // std of Xavier-uniform for [64, 64]
  EXPECT_NEAR(rms("bert.encoder.layer.2.attention.self.query.weight"), xavier_hh, 0.03 * xavier_hh);
  EXPECT_NEAR(rms("bert.encoder.layer.2.attention.self.value.weight"), 0.67 * std::pow(n, -0.25) * xavier_hh, 0.03 * xavier_hh);
  const double xavier_fh = std::sqrt(2.0 / (256 + 64));
  EXPECT_NEAR(rms("bert.encoder.layer.2.intermediate.dense.weight"), 0.67 * std::pow(n, -0.25) * xavier_fh, 0.03 * xavier_fh);
  EXPECT_NEAR(rms("bert.encoder.layer.2.output.dense.weight"), 0.67 * std::pow(n, -0.25) * xavier_fh, 0.03 * xavier_fh);
  EXPECT_FLOAT_EQ(EmbeddingScale(c), 8.0f);
  EXPECT_FALSE(tf.Contains("bert.embeddings.LayerNorm.weight"));
}

}  // namespace
}  // namespace lamina
