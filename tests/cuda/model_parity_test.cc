// Whole-model parity: a tiny encoder of each variant runs forward and backward on the CUDA backend
// (bf16) and on the CPU reference (f32) from the same parameters, batch and dropout seed; the
// losses must agree within 1e-2 relative and the flat gradients with cosine similarity > 0.999.
// Skipped when no GPU is present.
#include <cmath>
#include <random>
#include <string>
#include <vector>

#include "gtest/gtest.h"
#include "model/backend.h"
#include "model/bert.h"

namespace lamina {
namespace {

BertConfig TinyConfig(NormPlacement norm) {
  BertConfig c;
  c.vocab_size = 50;
  c.hidden = 32;
  c.layers = 2;
  c.heads = 4;
  c.ffn = 64;
  c.max_positions = 16;
  c.type_vocab = 2;
  c.layer_norm_eps = 1e-5f;
  c.norm = norm;
  c.init = norm == NormPlacement::kNone ? InitScheme::kTFixup : InitScheme::kBert;
  return c;
}

// B sequences of length T, some padded, with MLM targets and class labels.
EncoderBatch MakeBatch(const BertConfig& c, int64_t B, int64_t T, std::mt19937& gen) {
  std::uniform_int_distribution<int32_t> tok(5, static_cast<int32_t>(c.vocab_size) - 1);
  EncoderBatch b;
  b.batch = B;
  b.seq = T;
  for (int64_t r = 0; r < B; ++r) {
    const int64_t len = T - 2 * (r % 3);
    for (int64_t t = 0; t < T; ++t) {
      const bool real = t < len;
      b.input_ids.push_back(real ? tok(gen) : 0);
      b.token_types.push_back(real && t >= len / 2 ? 1 : 0);
      b.attention_mask.push_back(real ? 1 : 0);
    }
    for (int64_t t = 1; t < len; t += 3) {
      b.mlm_positions.push_back(static_cast<int32_t>(r * T + t));
      b.mlm_labels.push_back(tok(gen));
    }
    b.labels.push_back(static_cast<int32_t>(r % 2));
  }
  return b;
}

double Cosine(const std::vector<float>& a, const std::vector<float>& b) {
  double ab = 0, aa = 0, bb = 0;
  for (size_t i = 0; i < a.size(); ++i) {
    ab += static_cast<double>(a[i]) * b[i];
    aa += static_cast<double>(a[i]) * a[i];
    bb += static_cast<double>(b[i]) * b[i];
  }
  return ab / std::sqrt(aa * bb);
}

class CudaModelParityTest : public ::testing::TestWithParam<NormPlacement> {};

TEST_P(CudaModelParityTest, ForwardBackwardMatchesReference) {
  absl::StatusOr<std::unique_ptr<Backend>> gpu = MakeCudaBackend();
  if (!gpu.ok()) GTEST_SKIP() << "CUDA backend unavailable: " << gpu.status().ToString();
  std::unique_ptr<Backend> cpu = MakeCpuBackend();
  const BertConfig config = TinyConfig(GetParam());
  const HeadOptions heads{.mlm = true, .num_labels = 2};
  absl::StatusOr<std::unique_ptr<BertModel>> cm = BertModel::Create(config, heads, cpu.get());
  absl::StatusOr<std::unique_ptr<BertModel>> gm = BertModel::Create(config, heads, gpu->get());
  ASSERT_TRUE(cm.ok()) << cm.status();
  ASSERT_TRUE(gm.ok()) << gm.status();
  const uint32_t seed = std::random_device{}();
  std::mt19937 gen(seed);
  (*cm)->Initialize(seed);
  ASSERT_TRUE((*gm)->LoadParams((*cm)->ParamsToHost()).ok());
  const EncoderBatch batch = MakeBatch(config, 5, 13, gen);

  for (bool classify : {false, true}) {
    ForwardOptions o;
    o.training = true;
    o.seed = seed;
    o.step = 3;
    o.compute_grad = true;
    double losses[2];
    std::vector<float> grads[2];
    BertModel* models[2] = {cm->get(), gm->get()};
    for (int k = 0; k < 2; ++k) {
      models[k]->ZeroGrads();
      absl::StatusOr<LossStats> s = classify ? models[k]->ForwardClassify(batch, o) : models[k]->ForwardMlm(batch, o);
      ASSERT_TRUE(s.ok()) << s.status();
      models[k]->Backward();
      losses[k] = s->loss_sum;
      grads[k] = models[k]->GradsToHost();
    }
    const double rel = std::abs(losses[1] - losses[0]) / std::abs(losses[0]);
    const double cos = Cosine(grads[1], grads[0]);
    std::printf("  %s %s: loss cpu %.6f gpu %.6f (rel %.2e), gradient cosine %.6f\n", NormName(GetParam()).c_str(),
                classify ? "classify" : "mlm", losses[0], losses[1], rel, cos);
    EXPECT_LE(rel, 1e-2) << "seed " << seed;
    EXPECT_GT(cos, 0.999) << "seed " << seed;
  }
}

INSTANTIATE_TEST_SUITE_P(Variants, CudaModelParityTest,
                         ::testing::Values(NormPlacement::kPost, NormPlacement::kPre, NormPlacement::kNone),
                         [](const ::testing::TestParamInfo<NormPlacement>& info) { return NormName(info.param); });

}  // namespace
}  // namespace lamina
