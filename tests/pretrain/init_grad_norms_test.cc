// `lamina grad-norms`' measurement: for each depth, the mean over batches and seeds of each
// layer's gradient norms equals the norms computed directly from the gradient buffer of a model
// initialised from each seed and run on the loader's batches.
#include "pretrain/init_grad_norms.h"

#include "gtest/gtest.h"
#include "data/loader.h"
#include "model/bert.h"
#include "pretrain/train_data.h"
#include "tests/data/mlm_test_util.h"
#include "tests/testing/tiny_config.h"

namespace lamina {
namespace {

RunConfig Config(const datatest::TempDir& dir) {
  RunConfig c;
  c.model = testing::TinyBertConfig({.vocab_size = 85, .hidden = 32, .heads = 2, .max_positions = 16},
                                    NormPlacement::kPost);
  c.data.train = dir.path("ds");
  c.data.vocab = dir.path("vocab.txt");
  c.batch.global_batch = 16;
  c.batch.micro_batch = 8;
  c.run.seed = 4;
  return c;
}

TEST(InitGradNorms, EqualTheDirectComputationAveragedOverBatchesAndSeeds) {
  datatest::TempDir dir;
  datatest::WriteSyntheticDataset(dir, 11, 10);
  const RunConfig config = Config(dir);
  auto backend = MakeCpuBackend();
  InitGradNormsOptions options{.depths = {1, 3}, .batches = 2, .seeds = 2};
  auto measured = MeasureInitGradNorms(config, options, backend.get());
  ASSERT_TRUE(measured.ok()) << measured.status();
  ASSERT_EQ(measured->depths.size(), 2u);
  EXPECT_EQ(measured->seq_len, 16);

  auto data = OpenTrainData(config);
  ASSERT_TRUE(data.ok()) << data.status();
  for (const DepthGradNorms& d : measured->depths) {
    BertConfig mc = config.model;
    mc.layers = d.layers;
    auto model = BertModel::Create(mc, HeadOptions{}, backend.get());
    ASSERT_TRUE(model.ok());
    std::vector<double> ffn_w2(d.layers, 0.0);
    for (uint64_t seed : {4u, 5u}) {
      (*model)->Initialize(seed);
      LoaderConfig lc;
      lc.seed = seed, lc.global_batch = 16, lc.micro_batch = 8, lc.accumulation = 2, lc.prefetch = 0;
      auto loader = MlmTrainLoader::Create(data->dataset, data->vocab, lc);
      ASSERT_TRUE(loader.ok());
      for (int b = 0; b < 2; ++b) {
        const StepBatch sb = (*loader)->Next();
        (*model)->ZeroGrads();
        ForwardOptions fo{.compute_grad = true, .grad_scale = 1.0f / static_cast<float>(sb.global_masked)};
        for (const EncoderBatch& mb : sb.micro_batches) {
          ASSERT_TRUE((*model)->ForwardMlm(mb, fo).ok());
          (*model)->Backward();
        }
        const LayerGroupNorms n = ComputeLayerGroupNorms((*model)->layout(), (*model)->GradsToHost());
        for (int64_t l = 0; l < d.layers; ++l) ffn_w2[l] += (*n.of(ParamGroup::kFfnW2))[l] / 4;
      }
    }
    ASSERT_TRUE(d.grad_norm.of(ParamGroup::kFfnW2).has_value());
    for (int64_t l = 0; l < d.layers; ++l) {
      EXPECT_NEAR((*d.grad_norm.of(ParamGroup::kFfnW2))[l], ffn_w2[l], 1e-6 * ffn_w2[l]) << "depth " << d.layers;
      EXPECT_GT(ffn_w2[l], 0.0);
      EXPECT_NEAR(d.hidden_norm[l], std::sqrt(32.0), 1e-2) << "Post-LN outputs are normalised";
    }
  }
  const nlohmann::json j = measured->ToJson(config, options);
  EXPECT_EQ(j["norm"], "post");
  EXPECT_EQ(j["depths"][1]["layers"], 3);
  EXPECT_EQ(j["depths"][1]["grad_norm"]["ffn_w1"].size(), 3u);
}

TEST(InitGradNorms, RefusesNonPositiveCounts) {
  datatest::TempDir dir;
  datatest::WriteSyntheticDataset(dir, 11, 10);
  auto backend = MakeCpuBackend();
  auto r = MeasureInitGradNorms(Config(dir), InitGradNormsOptions{.depths = {}, .batches = 0}, backend.get());
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.status().message().find("batches"), std::string::npos) << r.status();
}

}  // namespace
}  // namespace lamina
