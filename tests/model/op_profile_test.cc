// The op profiler (model/op_profile.h): a model trained through it gets the bits it gets without
// it, every op of the step is recorded once per call with a gap before it, and the table folds the
// small rows.
#include "model/op_profile.h"

#include <map>
#include <string>
#include <vector>

#include "absl/strings/match.h"
#include "gtest/gtest.h"
#include "model/bert.h"
#include "model/optimizer.h"
#include "tests/testing/random_batch.h"
#include "tests/testing/tiny_config.h"

namespace lamina {
namespace {

BertConfig Config() {
  BertConfig c = testing::TinyBertConfig({.vocab_size = 40, .hidden = 16, .heads = 2, .max_positions = 12},
                                         NormPlacement::kPost);
  c.hidden_dropout = 0.1f;
  c.attention_dropout = 0.1f;
  return c;
}

// `steps` LAMB steps of the tiny model on `backend`; its parameters after them.
std::vector<float> Train(Backend& backend, int steps) {
  const BertConfig c = Config();
  auto model = *BertModel::Create(c, HeadOptions{}, &backend);
  model->Initialize(3);
  OptimizerConfig oc;
  oc.kind = OptimizerKind::kLamb;
  auto opt = *Optimizer::Create(oc, model.get());
  const EncoderBatch batch = testing::RandomBatch(c, 3, 8, 2, 5);
  for (int i = 0; i < steps; ++i) {
    model->ZeroGrads();
    ForwardOptions o{.training = true, .seed = 2, .step = i, .compute_grad = true};
    EXPECT_TRUE(model->ForwardMlm(batch, o).ok());
    model->Backward();
    EXPECT_TRUE(opt->Step(1e-3f).ok());
  }
  return model->ParamsToHost();
}

TEST(OpProfile, RecordsEveryOpOfAStepWithoutChangingIt) {
  const std::vector<float> plain = Train(*MakeCpuBackend(), 2);
  ProfilingBackend profiler(MakeCpuBackend());
  Train(profiler, 1);  // not recording: it only forwards
  profiler.StartRecording();
  const std::vector<float> profiled = Train(profiler, 2);
  const std::vector<OpTime> times = profiler.StopRecording();
  EXPECT_EQ(profiled, plain);

  std::map<std::string, int64_t> calls;
  double total = 0;
  int64_t op_calls = 0;
  for (const OpTime& t : times) {
    calls[t.op] += t.calls;
    if (t.op != ProfilingBackend::kBetweenOps) op_calls += t.calls;
    EXPECT_GE(t.ms, 0.0) << t.op << " " << t.shape;
    total += t.ms;
  }
  EXPECT_EQ(calls[ProfilingBackend::kBetweenOps], op_calls) << "one gap before each op";
  const int64_t layers = Config().layers, steps = 2;
  // Per layer: QKV, attention-out, FFN-in and FFN-out; the MLM head's dense layer and decoder.
  EXPECT_EQ(calls["LinearForward"], steps * (4 * layers + 2));
  EXPECT_EQ(calls["AttentionForward"], steps * layers);
  EXPECT_EQ(calls["AttentionBackward"], steps * layers);
  EXPECT_EQ(calls["LinearBackwardToPreActivation"], steps * layers);
  EXPECT_EQ(calls["LambMoments"], steps);
  EXPECT_EQ(calls["LambUpdate"], steps);
  EXPECT_EQ(calls["SumSquares"], steps);  // the gradient norm
  EXPECT_EQ(calls["CrossEntropy"], steps);
  EXPECT_GT(total, 0.0);
  // Sorted by time, and the operands name the shapes.
  for (size_t i = 1; i < times.size(); ++i) EXPECT_GE(times[i - 1].ms, times[i].ms);
  bool qkv = false;
  for (const OpTime& t : times) qkv |= t.op == "LinearForward" && absl::StrContains(t.shape, "x [48, 16]^T + b");
  EXPECT_TRUE(qkv) << "no LinearForward row for the [3 * 16, 16] QKV weight";

  // A second recording starts afresh.
  profiler.StartRecording();
  Train(profiler, 1);
  int64_t lamb = 0;
  for (const OpTime& t : profiler.StopRecording()) lamb += t.op == "LambUpdate" ? t.calls : 0;
  EXPECT_EQ(lamb, 1);
}

TEST(OpProfile, ForwardsWhatTheInnerBackendDecides) {
  std::unique_ptr<Backend> cpu = MakeCpuBackend();
  ProfilingBackend profiler(MakeCpuBackend());
  EXPECT_EQ(profiler.name(), cpu->name());
  EXPECT_EQ(profiler.device(), cpu->device());
  EXPECT_EQ(profiler.act_dtype(), cpu->act_dtype());
  EXPECT_EQ(profiler.AttentionSavedElems(2, 3, 5, 4), cpu->AttentionSavedElems(2, 3, 5, 4));
}

TEST(OpProfile, TableFoldsRowsUnderOneThousandth) {
  const std::vector<OpTime> times = {{"LinearForward", "[8, 4] x [4, 4]^T", 4, 90.0},
                                     {"AdamWStep", "[100]", 2, 9.95},
                                     {"Zero", "[100]", 2, 0.03},
                                     {"Scale", "[100]", 2, 0.02}};
  const std::string table = FormatOpTimes(times, 2);
  EXPECT_TRUE(absl::StrContains(table, "LinearForward")) << table;
  EXPECT_TRUE(absl::StrContains(table, "45.000")) << table;  // ms per step
  EXPECT_TRUE(absl::StrContains(table, "90.0%")) << table;
  EXPECT_TRUE(absl::StrContains(table, "2.0")) << table;  // calls per step
  EXPECT_FALSE(absl::StrContains(table, "Zero")) << table;
  EXPECT_TRUE(absl::StrContains(table, "(2 more)")) << table;
  EXPECT_TRUE(absl::StrContains(table, "50.000")) << table;  // the total per step
}

}  // namespace
}  // namespace lamina
