// The pretraining loop on the CPU: accumulation equivalence, exact resume, non-finite handling,
// and that a tiny Pre-LN model learns from a slice of real Wikipedia text.
#include "pretrain/trainer.h"

#include <sys/wait.h>

#include <cmath>
#include <csignal>
#include <cstdlib>
#include <filesystem>
#include <optional>

#include "absl/strings/match.h"
#include "absl/strings/str_split.h"
#include "core/file_util.h"
#include "data/prepare.h"
#include "gtest/gtest.h"
#include "tests/testing/compare.h"
#include "tests/testing/tiny_config.h"
#include "checkpoint/checkpoint.h"
#include "pretrain/evaluate.h"
#include "pretrain/train_data.h"
#include "pretrain/metrics.h"
#include "model/layer_stats.h"
#include "tests/data/mlm_test_util.h"

namespace lamina {
namespace {

using datatest::TempDir;

// A synthetic dataset with a tiny vocab, prepared once for the suite.
class TrainerTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    dir_ = new TempDir();
    datatest::WriteSyntheticDataset(*dir_, 7, 20);
  }
  static void TearDownTestSuite() { delete dir_; }

  static RunConfig Config() {
    RunConfig c;
    c.model = testing::TinyBertConfig({.vocab_size = 85, .hidden = 32, .heads = 2, .max_positions = 16},
                                      NormPlacement::kPre);
    c.data.train = dir_->path("ds");
    c.data.vocab = dir_->path("vocab.txt");
    c.data.prefetch = 1;
    c.batch.global_batch = 32;
    c.batch.micro_batch = 32;
    c.schedule.lr = 1e-3;
    c.schedule.total_steps = 20;
    c.run.steps = 20;
    c.run.device = "cpu";
    c.run.log_every = 1000;
    c.eval.max_batches = 2;
    return c;
  }

  static TrainerOptions Options(const std::string& run_dir, const std::string& resume) {
    TrainerOptions o;
    o.run_dir = run_dir;
    o.resume = resume;
    return o;
  }

  static std::vector<float> Train(const RunConfig& c, const std::string& run_dir, const std::string& resume = "none") {
    auto t = Trainer::Create(c, Options(run_dir, resume), nullptr);
    EXPECT_TRUE(t.ok()) << t.status();
    if (!t.ok()) return {};
    const absl::Status s = (*t)->Run();
    EXPECT_TRUE(s.ok()) << s;
    return (*t)->model().ParamsToHost();
  }

  static TempDir* dir_;
};
TempDir* TrainerTest::dir_ = nullptr;

using testing::RelativeDifference;

TEST_F(TrainerTest, AccumulationEqualsOneLargeMicroBatch) {
  RunConfig c = Config();
  c.run.steps = c.schedule.total_steps = 6;
  const std::vector<float> whole = Train(c, dir_->path("acc_whole"));
  c.batch.micro_batch = 8;  // 4 micro-steps of 8 = one of 32
  const std::vector<float> accumulated = Train(c, dir_->path("acc_parts"));
  ASSERT_EQ(whole.size(), accumulated.size());
  EXPECT_LT(RelativeDifference(accumulated, whole), 1e-5);
  EXPECT_GT(RelativeDifference(whole, Train([&] { RunConfig z = c; z.run.steps = z.schedule.total_steps = 1; return z; }(),
                                            dir_->path("acc_one"))), 1e-4)
      << "the runs train at all";
}

TEST_F(TrainerTest, ResumeIsBitExact) {
  RunConfig c = Config();
  c.checkpoint.every = 10;
  const std::vector<float> straight = Train(c, dir_->path("straight"));
  RunConfig half = c;
  half.run.steps = 10;  // the schedule still spans 20 steps
  Train(half, dir_->path("resumed"));
  ASSERT_TRUE(LatestCheckpoint(dir_->path("resumed")).ok());
  const std::vector<float> resumed = Train(c, dir_->path("resumed"), "auto");
  ASSERT_EQ(straight.size(), resumed.size());
  EXPECT_EQ(straight, resumed) << "relative difference " << RelativeDifference(resumed, straight);
}

// BERT's phase 2: a fresh run at a longer seq_len starts from a phase-1 run's weights (and,
// unless reset, its optimizer moments) with its own schedule and a fresh data position; once it
// has checkpoints of its own, it resumes from those instead.
TEST_F(TrainerTest, PhaseTwoStartsFromPhaseOneAtALongerSeqLen) {
  datatest::WriteSyntheticDataset(*dir_, 7, 20, /*seq_len=*/32, "ds32");
  RunConfig phase1 = Config();
  phase1.model.max_positions = 32;  // as BERT: phase 1 at 128 of 512 positions
  phase1.run.steps = phase1.schedule.total_steps = 6;
  const std::vector<float> phase1_params = Train(phase1, dir_->path("phase1"));
  auto phase1_ckpt = LatestCheckpoint(dir_->path("phase1"));
  ASSERT_TRUE(phase1_ckpt.ok()) << phase1_ckpt.status();

  for (const std::string optimizer : {"keep", "reset"}) {
    SCOPED_TRACE(optimizer);
    RunConfig phase2 = phase1;
    phase2.data.train = dir_->path("ds32");
    phase2.run.steps = phase2.schedule.total_steps = 4;
    phase2.checkpoint.every = 2;
    phase2.checkpoint.init_from = dir_->path("phase1");  // a run directory: its newest checkpoint
    phase2.checkpoint.init_optimizer = optimizer;
    const std::string run_dir = dir_->path("phase2_" + optimizer);
    TrainerOptions o = Options(run_dir, "auto");
    auto t = Trainer::Create(phase2, o, nullptr);
    ASSERT_TRUE(t.ok()) << t.status();
    EXPECT_EQ((*t)->step(), 0) << "the schedule starts anew";
    EXPECT_EQ((*t)->model().ParamsToHost(), phase1_params);
    EXPECT_EQ((*t)->optimizer().step(), optimizer == "keep" ? 6 : 0);
    ASSERT_TRUE((*t)->Run().ok());
    EXPECT_EQ((*t)->step(), 4);
    auto state = ReadCheckpointState(*LatestCheckpoint(run_dir));
    ASSERT_TRUE(state.ok()) << state.status();
    EXPECT_EQ((*state)["run_config"]["data"]["train"], dir_->path("ds32"));

    // Started again, it resumes from its own newest checkpoint, not from phase 1.
    auto again = Trainer::Create(phase2, o, nullptr);
    ASSERT_TRUE(again.ok()) << again.status();
    EXPECT_EQ((*again)->step(), 4);
  }

  RunConfig bad = phase1;
  bad.checkpoint.init_from = dir_->path("no_such_run");
  auto refused = Trainer::Create(bad, Options(dir_->path("phase2_bad"), "auto"), nullptr);
  ASSERT_FALSE(refused.ok());
  EXPECT_TRUE(absl::StrContains(refused.status().message(), "checkpoint.init_from")) << refused.status();
  bad.checkpoint.init_from = dir_->path("phase1");
  bad.model.hidden = 48;
  refused = Trainer::Create(bad, Options(dir_->path("phase2_bad"), "auto"), nullptr);
  ASSERT_FALSE(refused.ok()) << "a model config other than the checkpoint's is refused";
  EXPECT_TRUE(absl::StrContains(refused.status().message(), "hidden")) << refused.status();
}

// Resuming with a config whose change alters the trajectory (here the schedule's length, through
// run.steps) is refused, naming the key and both values, unless --allow_config_change names it;
// a change that leaves the trajectory alone (evaluation) is accepted.
TEST_F(TrainerTest, ResumeRefusesAConfigChangeThatAltersTheTrajectory) {
  RunConfig c = Config();
  c.run.steps = c.schedule.total_steps = 4;
  Train(c, dir_->path("changed"));
  RunConfig longer = c;
  longer.run.steps = longer.schedule.total_steps = 8;
  TrainerOptions o = Options(dir_->path("changed"), "auto");
  auto refused = Trainer::Create(longer, o, nullptr);
  ASSERT_FALSE(refused.ok());
  EXPECT_TRUE(absl::StrContains(refused.status().message(), "schedule.total_steps (checkpoint 4, now 8)"))
      << refused.status();
  EXPECT_TRUE(absl::StrContains(refused.status().message(), "--allow_config_change")) << refused.status();
  RunConfig reseeded = c;
  reseeded.run.seed = 9;
  refused = Trainer::Create(reseeded, o, nullptr);
  ASSERT_FALSE(refused.ok());
  EXPECT_TRUE(absl::StrContains(refused.status().message(), "run.seed (checkpoint 1, now 9)")) << refused.status();

  RunConfig logged = c;
  logged.eval.every = 2;
  EXPECT_TRUE(Trainer::Create(logged, o, nullptr).ok());
  o.allow_config_change = {"schedule"};
  auto allowed = Trainer::Create(longer, o, nullptr);
  ASSERT_TRUE(allowed.ok()) << allowed.status();
  EXPECT_EQ((*allowed)->step(), 4);
}

// A dataset prepared with --val_docs 0 has nothing to evaluate: evaluation is an error (it once
// reported loss 0 and perplexity 1), and a run, which evaluates at least at its end, refuses it
// before training.
TEST_F(TrainerTest, NoValidationSequencesIsAnError) {
  datatest::WriteSyntheticDataset(*dir_, 7, /*val_docs=*/0, 16, "ds_noval");
  RunConfig c = Config();
  c.data.train = dir_->path("ds_noval");
  auto refused = Trainer::Create(c, Options(dir_->path("noval"), "none"), nullptr);
  ASSERT_FALSE(refused.ok());
  EXPECT_TRUE(absl::StrContains(refused.status().message(), "no validation sequences")) << refused.status();
  EXPECT_TRUE(absl::StrContains(refused.status().message(), "--val_docs")) << refused.status();

  auto data = OpenTrainData(c);
  ASSERT_TRUE(data.ok()) << data.status();
  auto val = MlmValidationSet::Create(data->dataset, data->vocab, c.data.masking);
  ASSERT_TRUE(val.ok()) << val.status();
  auto backend = MakeBackend("cpu");
  ASSERT_TRUE(backend.ok()) << backend.status();
  auto model = BertModel::Create(c.model, HeadOptions{}, backend->get());
  ASSERT_TRUE(model.ok()) << model.status();
  (*model)->Initialize(1);
  auto result = EvaluateMlm(**model, *val, 8, 0);
  ASSERT_FALSE(result.ok());
  EXPECT_TRUE(absl::StrContains(result.status().message(), "no masked tokens to evaluate")) << result.status();
}

// A stop request ends an evaluation between batches (Cancelled, after as many batches as the
// requests allowed); a negative max_batches is an error, not "all".
TEST_F(TrainerTest, EvaluationStopsBetweenBatchesWhenAsked) {
  RunConfig c = Config();
  auto data = OpenTrainData(c);
  ASSERT_TRUE(data.ok()) << data.status();
  auto val = MlmValidationSet::Create(data->dataset, data->vocab, c.data.masking);
  ASSERT_TRUE(val.ok()) << val.status();
  ASSERT_GE(val->num_batches(1), 3);
  auto backend = MakeBackend("cpu");
  ASSERT_TRUE(backend.ok()) << backend.status();
  auto model = BertModel::Create(c.model, HeadOptions{}, backend->get());
  ASSERT_TRUE(model.ok()) << model.status();
  (*model)->Initialize(1);
  int asked = 0;
  auto result = EvaluateMlm(**model, *val, 1, 0, nullptr, [&asked] { return ++asked == 3; });
  ASSERT_TRUE(absl::IsCancelled(result.status())) << result.status();
  EXPECT_TRUE(absl::StrContains(result.status().message(), "evaluation stopped after 2 of")) << result.status();
  EXPECT_EQ(asked, 3);
  result = EvaluateMlm(**model, *val, 1, 0, nullptr, [] { return false; });
  EXPECT_TRUE(result.ok()) << result.status();
  result = EvaluateMlm(**model, *val, 1, -1);
  ASSERT_FALSE(result.ok());
  EXPECT_TRUE(absl::StrContains(result.status().message(), "max_batches -1 is negative")) << result.status();
}

TEST_F(TrainerTest, NonFiniteStepsAreSkippedThenStopTheRun) {
  RunConfig c = Config();
  c.schedule.lr = 1e30;  // the first update sends the parameters to inf; every later loss is NaN
  c.optimizer.clip_norm = 0;
  c.run.max_bad_steps = 3;
  TrainerOptions o;
  o.run_dir = dir_->path("diverged");
  o.resume = "none";
  auto t = Trainer::Create(c, o, nullptr);
  ASSERT_TRUE(t.ok()) << t.status();
  const absl::Status s = (*t)->Run();
  ASSERT_FALSE(s.ok());
  EXPECT_TRUE(absl::StrContains(s.message(), "3 consecutive steps")) << s;
  EXPECT_LE((*t)->step(), 5);
  std::string metrics = *ReadFile(dir_->path("diverged/metrics.jsonl"));
  EXPECT_TRUE(absl::StrContains(metrics, "\"skipped\":true")) << metrics.substr(0, 400);
}

// run.log_layer_norms writes a "layers" record at steps 1, N+1, ...: per layer, the gradient and
// update norms of each group and the output norm; the update norms are those of the parameters'
// change, measured here from the initial and trained parameters of a one-step run.
TEST_F(TrainerTest, LayerNormsAreLoggedEveryNSteps) {
  RunConfig c = Config();
  c.run.steps = c.schedule.total_steps = 5;
  c.run.log_layer_norms = 2;
  Train(c, dir_->path("layer_norms"));
  auto records = ReadMetrics(dir_->path("layer_norms/metrics.jsonl"));
  ASSERT_TRUE(records.ok()) << records.status();
  std::vector<int64_t> steps;
  for (const nlohmann::json& r : *records) {
    if (r["kind"] != "layers") continue;
    steps.push_back(r["step"].get<int64_t>());
    for (const char* key : {"grad_norm", "update_norm"})
      for (const char* group : {"attn_qkv", "attn_out", "ffn_w1", "ffn_w2", "layer_norm"}) {
        ASSERT_TRUE(r[key].contains(group)) << key << "." << group << " in " << r.dump();
        ASSERT_EQ(r[key][group].size(), 2u) << r.dump();
        for (const auto& v : r[key][group]) EXPECT_GT(v.get<double>(), 0.0) << key << "." << group;
      }
    ASSERT_EQ(r["hidden_norm"].size(), 2u);
  }
  EXPECT_EQ(steps, (std::vector<int64_t>{1, 3, 5}));

  c.run.steps = c.schedule.total_steps = 1;
  c.run.log_layer_norms = 1;
  const std::vector<float> trained = Train(c, dir_->path("layer_norms_one"));
  auto backend = MakeCpuBackend();
  auto fresh = BertModel::Create(c.model, HeadOptions{}, backend.get());
  ASSERT_TRUE(fresh.ok()) << fresh.status();
  (*fresh)->Initialize(c.run.seed);
  const nlohmann::json expected =
      ComputeLayerUpdateNorms((*fresh)->layout(), (*fresh)->ParamsToHost(), trained).ToJson();
  auto one = ReadMetrics(dir_->path("layer_norms_one/metrics.jsonl"));
  ASSERT_TRUE(one.ok()) << one.status();
  bool found = false;
  for (const nlohmann::json& r : *one) {
    if (r["kind"] != "layers") continue;
    found = true;
    for (const auto& [group, per_layer] : expected.items())
      for (size_t l = 0; l < per_layer.size(); ++l)
        EXPECT_NEAR(r["update_norm"][group][l].get<double>(), per_layer[l].get<double>(), 1e-6 * per_layer[l].get<double>())
            << group << " layer " << l;
  }
  EXPECT_TRUE(found);
}

TEST_F(TrainerTest, LayerNormsRefuseZeroStageOne) {
  nlohmann::json j = Config().ToJson();
  j["run"]["zero_stage"] = 1;
  j["run"]["log_layer_norms"] = 10;
  auto c = RunConfig::FromJson(j);
  ASSERT_FALSE(c.ok());
  EXPECT_TRUE(absl::StrContains(c.status().message(), "run.log_layer_norms")) << c.status();
}

TEST_F(TrainerTest, BatchThatDoesNotDivideIsRefused) {
  RunConfig c = Config();
  c.batch.micro_batch = 12;
  TrainerOptions o;
  o.run_dir = dir_->path("bad_batch");
  auto t = Trainer::Create(c, o, nullptr);
  ASSERT_FALSE(t.ok());
  EXPECT_TRUE(absl::StrContains(t.status().message(), "global_batch")) << t.status();
}

// Starts `lamina pretrain` on a long run of the tiny config in run dir `name`, waits for its first
// progress records, then runs `kills` (shell commands on $pid) and waits for it; returns the
// wait status. Empty when LAMINA_BINARY is not set (not run through ctest).
std::optional<int> RunAndSignal(const TempDir& dir, const RunConfig& config, const std::string& name,
                                const std::string& kills) {
  const char* lamina = std::getenv("LAMINA_BINARY");
  if (lamina == nullptr) return std::nullopt;
  RunConfig c = config;
  c.run.steps = c.schedule.total_steps = 1000000;
  EXPECT_TRUE(WriteFileAtomic(dir.path(name + ".json"), c.ToJson().dump()).ok());
  const std::string run = dir.path(name);
  const std::string script = absl::StrCat(
      lamina, " pretrain --config ", dir.path(name + ".json"), " --out ", run, " > ", run, ".log 2>&1 & pid=$!; ",
      "for i in $(seq 600); do [ $(cat ", run, "/metrics.jsonl 2>/dev/null | wc -l) -ge 3 ] && break; sleep 0.1; done; ",
      kills, "; wait $pid");
  return std::system(("bash -c '" + script + "'").c_str());
}

// SIGTERM (Slurm preemption) finishes the step, writes a checkpoint, exits 0; --resume auto
// continues from it.
TEST_F(TrainerTest, SigtermCheckpointsAndExitsCleanly) {
  const std::optional<int> status = RunAndSignal(*dir_, Config(), "preempted", "kill -TERM $pid");
  if (!status) GTEST_SKIP() << "LAMINA_BINARY is not set (run through ctest)";
  const std::string run = dir_->path("preempted");
  EXPECT_EQ(*status, 0) << *ReadFile(run + ".log");
  auto ckpt = LatestCheckpoint(run);
  ASSERT_TRUE(ckpt.ok()) << ckpt.status() << "\n" << *ReadFile(run + ".log");
  auto state = ReadCheckpointState(*ckpt);
  ASSERT_TRUE(state.ok());
  EXPECT_GE((*state)["step"].get<int64_t>(), 3);
  EXPECT_TRUE(absl::StrContains(*ReadFile(run + ".log"), "stop requested"));
}

// A second stop signal (here SIGINT after SIGTERM, so that the two are not merged into one
// pending signal) exits at once, without the checkpoint the first one asked for.
TEST_F(TrainerTest, SecondStopSignalExitsAtOnce) {
  const std::optional<int> status = RunAndSignal(*dir_, Config(), "interrupted", "kill -TERM $pid; kill -INT $pid");
  if (!status) GTEST_SKIP() << "LAMINA_BINARY is not set (run through ctest)";
  const std::string log = *ReadFile(dir_->path("interrupted.log"));
  ASSERT_TRUE(WIFEXITED(*status)) << *status;
  // 128 + the signal handled second (both pending at once are handled lowest number first).
  EXPECT_TRUE(WEXITSTATUS(*status) == 128 + SIGINT || WEXITSTATUS(*status) == 128 + SIGTERM)
      << WEXITSTATUS(*status) << "\n" << log;
  EXPECT_TRUE(absl::StrContains(log, "second stop signal: exiting now")) << log;
}

// A tiny Pre-LN model on ~1.5 MB of real Wikipedia text, without warmup: validation MLM loss must
// fall clearly within a CI-sized budget.
TEST(TrainerOnWikipedia, TinyPreLnModelLowersValidationLoss) {
  const std::string data = datatest::SharedDataDir();
  const std::string vocab = data + "/vocab/bert-base-uncased-vocab.txt";
  const std::string wiki = data + "/enwiki-2015-wikiextractor/wiki_AA.txt.xz";
  if (!std::filesystem::exists(vocab) || !std::filesystem::exists(wiki)) GTEST_SKIP() << "no " << wiki;
  TempDir dir;
  auto tok = WordPieceTokenizer::Load(vocab);
  ASSERT_TRUE(tok.ok());
  PrepareOptions po;
  po.inputs = {wiki};
  po.out_dir = dir.path("ds");
  po.seq_len = 64;
  po.val_docs = 20;
  po.max_bytes = 1500000;
  po.progress = false;
  ASSERT_TRUE(PrepareCorpus(*tok, po).ok());
  RunConfig c;
  c.model.hidden = 64;
  c.model.layers = 2;
  c.model.heads = 2;
  c.model.ffn = 256;
  c.model.max_positions = 64;
  c.model.norm = NormPlacement::kPre;
  c.data.train = dir.path("ds");
  c.data.vocab = vocab;
  c.batch.global_batch = 32;
  c.batch.micro_batch = 32;
  c.schedule.lr = 2e-3;
  c.schedule.warmup_steps = 0;
  c.run.steps = c.schedule.total_steps = 150;
  c.run.device = "cpu";
  c.run.log_every = 50;
  c.eval.every = 0;
  c.eval.max_batches = 4;
  TrainerOptions o;
  o.run_dir = dir.path("run");
  auto t = Trainer::Create(c, o, nullptr);
  ASSERT_TRUE(t.ok()) << t.status();
  ASSERT_TRUE((*t)->Run().ok());
  // metrics.jsonl: the first training losses against the final validation loss.
  const std::string metrics = *ReadFile(dir.path("run/metrics.jsonl"));
  std::vector<double> train, val;
  for (absl::string_view line : absl::StrSplit(metrics, '\n')) {
    if (line.empty()) continue;
    auto j = nlohmann::json::parse(line);
    if (j["kind"] == "eval") val.push_back(j["mlm_loss"]);
    else if (j["kind"] == "train") train.push_back(j["loss"]);
  }
  ASSERT_GE(train.size(), 150u);
  ASSERT_FALSE(val.empty());
  const double start = (train[0] + train[1] + train[2]) / 3;
  EXPECT_GT(start, 9.5) << "an untrained model is near ln(30522) = 10.3";
  EXPECT_LT(val.back(), start - 2.5) << "validation loss " << val.back() << " vs initial " << start;
}

}  // namespace
}  // namespace lamina
