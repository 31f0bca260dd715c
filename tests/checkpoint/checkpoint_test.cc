// Checkpoints on a tiny CPU model: bit-exact round trips, pruning, what counts as the latest
// checkpoint, refusal of foreign or damaged checkpoints, and survival of a SIGKILL mid-save.
#include "checkpoint/checkpoint.h"

#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstring>
#include <filesystem>
#include <random>
#include <thread>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "core/file_util.h"
#include "core/safetensors.h"
#include "core/timer.h"
#include "gtest/gtest.h"
#include "tests/testing/tiny_config.h"

namespace lamina {
namespace {

namespace fs = std::filesystem;

BertConfig TinyConfig() {
  return testing::TinyBertConfig({.vocab_size = 40, .hidden = 16, .heads = 2, .max_positions = 12},
                                 NormPlacement::kPre);
}

std::vector<float> RandomVector(size_t n, uint32_t seed) {
  std::mt19937 gen(seed);
  std::normal_distribution<float> d(0.0f, 1.0f);
  std::vector<float> out(n);
  for (float& x : out) x = d(gen);
  return out;
}

// A model with its optimizer whose parameters, moments and step all depend on `seed`.
struct Trained {
  std::unique_ptr<Backend> backend = MakeCpuBackend();
  std::unique_ptr<BertModel> model;
  std::unique_ptr<Optimizer> opt;

  explicit Trained(uint32_t seed, BertConfig config = TinyConfig(), HeadOptions heads = HeadOptions{}) {
    model = *BertModel::Create(config, heads, backend.get());
    model->Initialize(seed);
    opt = *Optimizer::Create(OptimizerConfig{}, model.get());
    const size_t n = model->layout().total();
    OptimizerState state;
    state.step = 1000 + seed;
    state.m = RandomVector(n, seed + 1);
    state.v = RandomVector(n, seed + 2);
    for (float& x : state.v) x = x * x;
    LAMINA_CHECK(opt->LoadState(state).ok(), "test optimizer state");
  }
  std::vector<float> M() const { return opt->StateToHost()->m; }
  std::vector<float> V() const { return opt->StateToHost()->v; }
};

// The values of every parameter of `layout` in a flat buffer, padding excluded, as raw bits.
std::vector<uint32_t> ParamBits(const ParamLayout& layout, const std::vector<float>& flat) {
  std::vector<uint32_t> bits;
  for (const ParamInfo& p : layout.params()) {
    for (int64_t i = 0; i < p.numel(); ++i) {
      uint32_t b;
      std::memcpy(&b, &flat[p.offset + i], 4);
      bits.push_back(b);
    }
  }
  return bits;
}

CheckpointState State(int64_t step) {
  CheckpointState s;
  s.step = step;
  s.data_position = {{"shard", 3}, {"sequence", 12345 + step}};
  s.seed = 0xFEDCBA9876543210ull;
  s.run_config = {{"schedule", {{"name", "constant"}, {"lr", 1e-3}}}};
  return s;
}

class CheckpointTest : public ::testing::Test {
 protected:
  void SetUp() override {
    run_ = (fs::path(::testing::TempDir()) /
            absl::StrCat("ckpt_", ::getpid(), "_", ::testing::UnitTest::GetInstance()->current_test_info()->name()))
               .string();
    fs::remove_all(run_);
    fs::create_directories(run_);
  }
  void TearDown() override { fs::remove_all(run_); }

  std::vector<std::string> Names() const {
    std::vector<std::string> names;
    for (const auto& e : fs::directory_iterator(fs::path(run_) / "checkpoints")) names.push_back(e.path().filename());
    std::sort(names.begin(), names.end());
    return names;
  }

  std::string run_;
};

TEST_F(CheckpointTest, RoundTripIsBitExact) {
  Trained a(1);
  auto dir = SaveCheckpoint(run_, *a.model, *a.opt, State(5), 3);
  ASSERT_TRUE(dir.ok()) << dir.status();
  EXPECT_EQ(*dir, run_ + "/checkpoints/step_00000005");

  Trained b(2);
  ASSERT_NE(ParamBits(b.model->layout(), b.model->ParamsToHost()), ParamBits(a.model->layout(), a.model->ParamsToHost()));
  auto state = LoadCheckpoint(*dir, b.model.get(), b.opt.get());
  ASSERT_TRUE(state.ok()) << state.status();
  const ParamLayout& layout = a.model->layout();
  EXPECT_EQ(ParamBits(layout, b.model->ParamsToHost()), ParamBits(layout, a.model->ParamsToHost()));
  EXPECT_EQ(ParamBits(layout, b.M()), ParamBits(layout, a.M()));
  EXPECT_EQ(ParamBits(layout, b.V()), ParamBits(layout, a.V()));
  EXPECT_EQ(b.opt->step(), 1001);
  EXPECT_EQ(state->step, 5);
  EXPECT_EQ(state->data_position, State(5).data_position);
  EXPECT_EQ(state->seed, 0xFEDCBA9876543210ull);
  EXPECT_EQ(state->run_config, State(5).run_config);

  // Without an optimizer (evaluation) only the parameters are restored.
  Trained c(3);
  const std::vector<float> m_before = c.M();
  ASSERT_TRUE(LoadCheckpoint(*dir, c.model.get(), nullptr).ok());
  EXPECT_EQ(ParamBits(layout, c.model->ParamsToHost()), ParamBits(layout, a.model->ParamsToHost()));
  EXPECT_EQ(c.M(), m_before);
  EXPECT_EQ(c.opt->step(), 1003);

  // The files are plain safetensors under Hugging Face names, and state.json is readable by tools.
  auto model_file = SafetensorsFile::Open(*dir + "/model.safetensors");
  ASSERT_TRUE(model_file.ok()) << model_file.status();
  EXPECT_EQ(model_file->tensors().size(), layout.params().size());
  EXPECT_TRUE(model_file->Find("bert.encoder.layer.1.attention.self.query.weight").ok());
  EXPECT_EQ(model_file->metadata().at("format"), "pt");
  auto opt_file = SafetensorsFile::Open(*dir + "/optimizer.safetensors");
  ASSERT_TRUE(opt_file.ok());
  EXPECT_EQ(opt_file->tensors().size(), 2 * layout.params().size());
  EXPECT_TRUE(opt_file->Find("v.cls.predictions.bias").ok());
  HeadOptions heads{false, 7};
  auto config = CheckpointModelConfig(*dir, &heads);
  ASSERT_TRUE(config.ok()) << config.status();
  EXPECT_EQ(config->ToJson(), TinyConfig().ToJson());
  EXPECT_TRUE(heads.mlm);
  EXPECT_EQ(heads.num_labels, 0);
  auto j = ReadCheckpointState(*dir);
  ASSERT_TRUE(j.ok());
  EXPECT_EQ((*j)["lamina_version"], kLaminaVersion);
  EXPECT_EQ((*j)["optimizer"]["name"], "adamw");
}

TEST_F(CheckpointTest, KeepLastPrunesOlderCheckpoints) {
  Trained a(1);
  for (int64_t step = 1; step <= 5; ++step) ASSERT_TRUE(SaveCheckpoint(run_, *a.model, *a.opt, State(step * 10), 2).ok());
  EXPECT_EQ(Names(), (std::vector<std::string>{"step_00000040", "step_00000050"}));
  EXPECT_EQ(*LatestCheckpoint(run_), run_ + "/checkpoints/step_00000050");
  // Saving an older step never deletes the checkpoint just written.
  ASSERT_TRUE(SaveCheckpoint(run_, *a.model, *a.opt, State(7), 1).ok());
  EXPECT_EQ(Names(), (std::vector<std::string>{"step_00000007", "step_00000050"}));
  // keep_last 0 keeps everything.
  for (int64_t step = 1; step <= 3; ++step) ASSERT_TRUE(SaveCheckpoint(run_, *a.model, *a.opt, State(step), 0).ok());
  EXPECT_EQ(Names().size(), 5u);
}

TEST_F(CheckpointTest, SavingAnExistingStepReplacesIt) {
  Trained a(1), b(2), c(3);
  ASSERT_TRUE(SaveCheckpoint(run_, *a.model, *a.opt, State(4), 0).ok());
  ASSERT_TRUE(SaveCheckpoint(run_, *b.model, *b.opt, State(4), 0).ok());
  EXPECT_EQ(Names(), (std::vector<std::string>{"step_00000004"}));
  ASSERT_TRUE(LoadCheckpoint(*LatestCheckpoint(run_), c.model.get(), c.opt.get()).ok());
  EXPECT_EQ(c.model->ParamsToHost(), b.model->ParamsToHost());
}

TEST_F(CheckpointTest, LatestIgnoresTemporariesAndIncompleteCheckpoints) {
  EXPECT_EQ(LatestCheckpoint(run_).status().code(), absl::StatusCode::kNotFound);
  Trained a(1);
  ASSERT_TRUE(SaveCheckpoint(run_, *a.model, *a.opt, State(5), 0).ok());
  const fs::path root = fs::path(run_) / "checkpoints";
  const fs::path good = root / "step_00000005";
  // A complete-looking temporary, a checkpoint without state.json, a stray name and a plain file.
  fs::copy(good, root / "step_00000009.tmp.4242");
  fs::copy(good, root / "step_00000008.old.4242");
  fs::copy(good, root / "step_00000007");
  fs::remove(root / "step_00000007" / "state.json");
  fs::copy(good, root / "step_0000000x");
  ASSERT_TRUE(WriteFileAtomic((root / "step_00000010").string(), "not a directory").ok());
  EXPECT_EQ(*LatestCheckpoint(run_), good.string());
  // The next save removes the leftovers of interrupted saves and leaves the rest alone.
  ASSERT_TRUE(SaveCheckpoint(run_, *a.model, *a.opt, State(6), 0).ok());
  EXPECT_EQ(Names(), (std::vector<std::string>{"step_00000005", "step_00000006", "step_00000007", "step_0000000x",
                                               "step_00000010"}));
  EXPECT_EQ(*LatestCheckpoint(run_), (root / "step_00000006").string());
}

TEST_F(CheckpointTest, RefusesACheckpointOfAnotherModel) {
  Trained a(1);
  auto dir = SaveCheckpoint(run_, *a.model, *a.opt, State(1), 0);
  ASSERT_TRUE(dir.ok());
  BertConfig wider = TinyConfig();
  wider.hidden = 32;
  wider.ffn = 64;
  Trained b(2, wider);
  const std::vector<float> before = b.model->ParamsToHost();
  auto s = LoadCheckpoint(*dir, b.model.get(), b.opt.get());
  ASSERT_FALSE(s.ok());
  EXPECT_EQ(s.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_TRUE(absl::StrContains(s.status().message(), "model.hidden: checkpoint has 16, config has 32")) << s.status();
  EXPECT_TRUE(absl::StrContains(s.status().message(), "model.ffn: checkpoint has 32, config has 64")) << s.status();
  EXPECT_FALSE(absl::StrContains(s.status().message(), "model.layers")) << s.status();
  EXPECT_EQ(b.model->ParamsToHost(), before);

  Trained classifier(3, TinyConfig(), HeadOptions{true, 2});
  s = LoadCheckpoint(*dir, classifier.model.get(), nullptr);
  ASSERT_FALSE(s.ok());
  EXPECT_TRUE(absl::StrContains(s.status().message(), "heads.num_labels: checkpoint has 0, config has 2")) << s.status();
}

TEST_F(CheckpointTest, DamagedFilesAreErrorsNamingTheFileAndLeaveTheModelUntouched) {
  Trained a(1);
  const std::string dir = *SaveCheckpoint(run_, *a.model, *a.opt, State(1), 0);
  Trained b(2);
  const std::vector<float> params = b.model->ParamsToHost();
  const std::vector<float> m = b.M();

  // Truncated optimizer state: nothing is restored, not even the (intact) parameters.
  const std::string opt_path = dir + "/optimizer.safetensors";
  const std::string opt_bytes = *ReadFile(opt_path);
  fs::resize_file(opt_path, opt_bytes.size() - 100);
  auto s = LoadCheckpoint(dir, b.model.get(), b.opt.get());
  ASSERT_FALSE(s.ok());
  EXPECT_TRUE(absl::StrContains(s.status().message(), opt_path)) << s.status();
  EXPECT_TRUE(absl::StrContains(s.status().message(), "truncated")) << s.status();
  EXPECT_EQ(b.model->ParamsToHost(), params);
  EXPECT_EQ(b.M(), m);
  EXPECT_EQ(b.opt->step(), 1002);
  ASSERT_TRUE(WriteFileAtomic(opt_path, opt_bytes).ok());

  // Truncated parameters.
  const std::string model_path = dir + "/model.safetensors";
  const std::string model_bytes = *ReadFile(model_path);
  fs::resize_file(model_path, model_bytes.size() / 2);
  s = LoadCheckpoint(dir, b.model.get(), nullptr);
  ASSERT_FALSE(s.ok());
  EXPECT_TRUE(absl::StrContains(s.status().message(), model_path)) << s.status();
  EXPECT_EQ(b.model->ParamsToHost(), params);

  // A parameter missing, one of the wrong shape, one too many.
  const ParamLayout& layout = a.model->layout();
  const std::vector<float> flat = a.model->ParamsToHost();
  auto write_model = [&](auto edit) {
    std::vector<SafetensorsEntry> entries;
    for (const ParamInfo& p : layout.params()) {
      std::vector<int64_t> dims;
      for (int i = 0; i < p.shape.rank(); ++i) dims.push_back(p.shape[i]);
      entries.push_back({p.name, DType::kF32, dims, flat.data() + p.offset});
    }
    edit(&entries);
    ASSERT_TRUE(WriteSafetensors(model_path, entries).ok());
  };
  write_model([](std::vector<SafetensorsEntry>* e) { e->erase(e->begin() + 3); });
  s = LoadCheckpoint(dir, b.model.get(), nullptr);
  EXPECT_TRUE(absl::StrContains(s.status().message(), absl::StrCat(model_path, ": no tensor \"", layout.params()[3].name,
                                                                   "\", which the model has")))
      << s.status();
  write_model([](std::vector<SafetensorsEntry>* e) { (*e)[0].shape = {(*e)[0].shape[1], (*e)[0].shape[0]}; });
  s = LoadCheckpoint(dir, b.model.get(), nullptr);
  EXPECT_TRUE(absl::StrContains(s.status().message(), absl::StrCat("tensor \"", layout.params()[0].name,
                                                                   "\" has shape [16, 40], the model has [40, 16]")))
      << s.status();
  write_model([&](std::vector<SafetensorsEntry>* e) { e->push_back({"extra", DType::kF32, {1}, flat.data()}); });
  s = LoadCheckpoint(dir, b.model.get(), nullptr);
  EXPECT_TRUE(absl::StrContains(s.status().message(), "tensor \"extra\" is not a parameter of the model")) << s.status();
  EXPECT_EQ(b.model->ParamsToHost(), params);

  // state.json of a future format.
  ASSERT_TRUE(WriteFileAtomic(dir + "/state.json", R"({"format": "lamina-checkpoint", "format_version": 2})").ok());
  s = LoadCheckpoint(dir, b.model.get(), nullptr);
  EXPECT_TRUE(absl::StrContains(s.status().message(), "format_version 2 is not supported")) << s.status();
}

// A child process saves checkpoints in a loop and is killed with SIGKILL at random moments. After
// every kill the newest complete checkpoint must load, and some kills must have landed mid-save.
TEST_F(CheckpointTest, SurvivesSigkillMidSave) {
  Trained a(1);
  ASSERT_TRUE(SaveCheckpoint(run_, *a.model, *a.opt, State(1), 2).ok());
  Timer timer;
  ASSERT_TRUE(SaveCheckpoint(run_, *a.model, *a.opt, State(2), 2).ok());
  const double save_seconds = timer.Seconds();
  std::mt19937 gen(7);
  std::uniform_real_distribution<double> delay(0.0, 3.0 * save_seconds);
  int interrupted = 0;
  int64_t next_step = 3;
  const int kRounds = 40;
  for (int round = 0; round < kRounds; ++round) {
    const pid_t pid = ::fork();
    ASSERT_GE(pid, 0);
    if (pid == 0) {
      for (int64_t step = next_step;; ++step) {
        if (!SaveCheckpoint(run_, *a.model, *a.opt, State(step), 2).ok()) ::_exit(3);
      }
    }
    std::this_thread::sleep_for(std::chrono::duration<double>(delay(gen)));
    ASSERT_EQ(::kill(pid, SIGKILL), 0);
    int status = 0;
    ASSERT_EQ(::waitpid(pid, &status, 0), pid);
    ASSERT_TRUE(WIFSIGNALED(status)) << "the saving child failed on its own (status " << status << ")";

    for (const std::string& name : Names()) {
      if (absl::StrContains(name, ".tmp.") || absl::StrContains(name, ".old.")) {
        ++interrupted;
        break;
      }
    }
    auto latest = LatestCheckpoint(run_);
    ASSERT_TRUE(latest.ok()) << latest.status();
    Trained b(2);
    auto state = LoadCheckpoint(*latest, b.model.get(), b.opt.get());
    ASSERT_TRUE(state.ok()) << "round " << round << ": " << state.status();
    EXPECT_EQ(b.model->ParamsToHost(), a.model->ParamsToHost());
    EXPECT_EQ(b.opt->step(), 1001);
    EXPECT_GE(state->step, next_step - 1);
    next_step = state->step + 1;
  }
  EXPECT_GE(interrupted, 3) << "too few kills landed inside a save to test anything";
  std::printf("%d of %d kills interrupted a save (one save takes %.1f ms)\n", interrupted, kRounds, save_seconds * 1e3);
  // The next save cleans up whatever the kills left behind.
  ASSERT_TRUE(SaveCheckpoint(run_, *a.model, *a.opt, State(next_step), 2).ok());
  for (const std::string& name : Names()) EXPECT_EQ(name.find('.'), std::string::npos) << name;
  EXPECT_EQ(Names().size(), 2u);
}

// The vocab that tools default to: run_config.data.vocab, or an error naming the state file (a
// checkpoint written by an older or hand-made run config must not end in a JSON exception).
TEST(RunConfigVocab, ReadsTheRunsVocabOrSaysWhatIsMissing) {
  EXPECT_EQ(*RunConfigVocab({{"data", {{"vocab", "v.txt"}}}}, "ck/state.json"), "v.txt");
  for (const nlohmann::json& rc : {nlohmann::json::object(), nlohmann::json{{"data", 3}},
                                   nlohmann::json{{"data", {{"vocab", 7}}}}, nlohmann::json(nullptr)}) {
    const absl::StatusOr<std::string> vocab = RunConfigVocab(rc, "ck/state.json");
    ASSERT_FALSE(vocab.ok()) << rc.dump();
    EXPECT_EQ(vocab.status().message(), "ck/state.json: no run_config.data.vocab; pass --vocab FILE");
  }
}

}  // namespace
}  // namespace lamina
