// The finetuning subcommands through the lamina executable: fill-mask on an imported HF model
// against transformers, finetune and finetune-sweep end to end on a tiny GLUE directory, and
// user errors (malformed GLUE files, refused imports) as messages with a non-zero exit.
#include <sys/wait.h>

#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>

#include "absl/strings/str_cat.h"
#include "core/file_util.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"

namespace lamina {
namespace {

namespace fs = std::filesystem;

std::string Source() {
  const char* s = std::getenv("LAMINA_SOURCE_DIR");
  return s != nullptr ? s : ".";
}

struct Result {
  int code = -1;
  std::string out;  // stdout and stderr
};

// Runs `lamina ARGS` (skips the test when ctest did not say where the executable is).
Result Lamina(const std::string& args) {
  const char* bin = std::getenv("LAMINA_BINARY");
  Result r;
  if (bin == nullptr) return r;
  FILE* p = ::popen(absl::StrCat(bin, " ", args, " 2>&1").c_str(), "r");
  char buf[4096];
  size_t n;
  while ((n = std::fread(buf, 1, sizeof(buf), p)) > 0) r.out.append(buf, n);
  const int status = ::pclose(p);
  r.code = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  return r;
}

#define NEED_BINARY() \
  if (std::getenv("LAMINA_BINARY") == nullptr) GTEST_SKIP() << "LAMINA_BINARY is not set (run through ctest)"

std::string Temp(const std::string& name) {
  const std::string dir = ::testing::TempDir() + "/ftcli_" + name;
  fs::remove_all(dir);
  return dir;
}

std::string ImportFixture(const std::string& name) {
  const std::string out = Temp(name);
  const Result r = Lamina(absl::StrCat("import-hf --model ", Source(), "/tests/fixtures/hf/bert_mlm --out ", out));
  EXPECT_EQ(r.code, 0) << r.out;
  return out;
}

TEST(Cli, FillMaskOnAnImportedModelMatchesTransformers) {
  NEED_BINARY();
  const std::string ckpt = ImportFixture("fill");
  auto text = ReadFile(Source() + "/tests/fixtures/hf/reference.json");
  ASSERT_TRUE(text.ok());
  const nlohmann::json sentences = nlohmann::json::parse(*text)["bert_mlm"]["sentences"];
  std::string args = absl::StrCat("fill-mask --device cpu --json --top_k 256 --checkpoint ", ckpt);
  for (const auto& s : sentences) absl::StrAppend(&args, " '", s["text"].get<std::string>(), "'");
  const Result r = Lamina(args);
  ASSERT_EQ(r.code, 0) << r.out;
  const nlohmann::json out = nlohmann::json::parse(r.out);
  ASSERT_EQ(out.size(), sentences.size());
  double worst = 0;
  for (size_t i = 0; i < sentences.size(); ++i) {
    const auto& want = sentences[i];
    EXPECT_EQ(out[i]["tokens"], want["input_ids"].size()) << want["text"];
    ASSERT_EQ(out[i]["masks"].size(), want["mask_positions"].size());
    for (size_t m = 0; m < want["mask_positions"].size(); ++m) {
      const auto& mask = out[i]["masks"][m];
      EXPECT_EQ(mask["position"], want["mask_positions"][m]);  // the same tokenization as transformers'
      ASSERT_EQ(mask["predictions"].size(), 256u);
      for (const auto& p : mask["predictions"]) {
        const double ref = want["logprobs"][m][p["id"].get<int>()].get<double>();
        worst = std::max(worst, std::abs(p["logprob"].get<double>() - ref));
      }
    }
  }
  EXPECT_LT(worst, 1e-4);
  std::printf("fill-mask vs transformers: max |log-probability difference| %.3g\n", worst);
}

void WriteText(const std::string& path, const std::string& text) {
  fs::create_directories(fs::path(path).parent_path());
  std::ofstream(path) << text;
}

// MRPC-shaped files over the fixture's vocabulary: label 1 when the sentences are equal.
std::string TinyGlue(const std::string& name) {
  const std::string dir = Temp(name);
  const std::vector<std::string> s = {"the cat sat on the mat .", "a dog was in the house .", "paris is a city .",
                                      "the stock price fell .", "she said it was new ."};
  std::string train = "Quality\t#1 ID\t#2 ID\t#1 String\t#2 String\n", dev = train;
  std::string test = "index\t#1 ID\t#2 ID\t#1 String\t#2 String\n";
  for (size_t i = 0; i < s.size(); ++i) {
    for (size_t j = 0; j < s.size(); ++j) absl::StrAppend(&train, i == j ? 1 : 0, "\t1\t2\t", s[i], "\t", s[j], "\n");
    absl::StrAppend(&dev, 1, "\t1\t2\t", s[i], "\t", s[i], "\n", 0, "\t1\t2\t", s[i], "\t", s[(i + 1) % s.size()], "\n");
    absl::StrAppend(&test, 100 + i, "\t1\t2\t", s[i], "\t", s[(i + 2) % s.size()], "\n");
  }
  WriteText(dir + "/MRPC/train.tsv", train);
  WriteText(dir + "/MRPC/dev.tsv", dev);
  WriteText(dir + "/MRPC/test.tsv", test);
  return dir;
}

TEST(Cli, FinetuneWritesResultsAndPredictions) {
  NEED_BINARY();
  const std::string ckpt = ImportFixture("ft");
  const std::string glue = TinyGlue("glue");
  const std::string out = Temp("ft_out");
  const Result r = Lamina(absl::StrCat("finetune --task mrpc --device cpu --checkpoint ", ckpt, " --data ", glue,
                                       " --lr 1e-4,3e-4 --epochs 2 --batch 8 --max_seq 32 --seeds 2 --out ", out));
  ASSERT_EQ(r.code, 0) << r.out;
  EXPECT_NE(r.out.find("<- best"), std::string::npos) << r.out;
  auto results = ReadFile(out + "/results.json");
  ASSERT_TRUE(results.ok());
  const nlohmann::json j = nlohmann::json::parse(*results);
  EXPECT_EQ(j["runs"].size(), 4u);
  EXPECT_EQ(j["by_lr"][1]["final"]["f1"]["n"], 2);
  EXPECT_EQ(j["runs"][0]["epochs"].size(), 2u);
  EXPECT_EQ(j["examples"]["train"], 25);
  EXPECT_EQ(j["model"]["hidden"], 64);
  auto tsv = ReadFile(out + "/MRPC.tsv");
  ASSERT_TRUE(tsv.ok());
  EXPECT_EQ(tsv->rfind("index\tprediction\n100\t", 0), 0u) << *tsv;
  EXPECT_EQ(std::count(tsv->begin(), tsv->end(), '\n'), 6);
}

// finetune is configured as pretrain is: a config file's finetune section, --set finetune.KEY,
// and the flags as shorthands that win; the resolved section lands in OUT/config.json.
TEST(Cli, FinetuneTakesAConfigFileWithSetAndFlags) {
  NEED_BINARY();
  const std::string ckpt = ImportFixture("ft_config");
  const std::string glue = TinyGlue("glue_config");
  const std::string out = Temp("ft_config_out");
  const std::string config = Temp("ft_config.json");
  WriteText(config, absl::StrCat(R"({"finetune": {"task": "mrpc", "device": "cpu", "checkpoint": ")", ckpt,
                                 R"(", "data": ")", glue, R"(", "lr": [1e-4, 3e-4], "epochs": 2, "batch": 8,
                                    "max_seq": 32, "seeds": 3, "predict_test": false}})"));
  const Result r = Lamina(absl::StrCat("finetune --config ", config, " --set finetune.epochs=1 --seeds 2 --out ", out));
  ASSERT_EQ(r.code, 0) << r.out;
  auto results = ReadFile(out + "/results.json");
  ASSERT_TRUE(results.ok());
  const nlohmann::json j = nlohmann::json::parse(*results);
  EXPECT_EQ(j["runs"].size(), 4u) << "two lrs (file) x two seeds (the flag beats the file's 3)";
  EXPECT_EQ(j["runs"][0]["epochs"].size(), 1u) << "--set beats the file";
  EXPECT_FALSE(fs::exists(out + "/MRPC.tsv")) << "predict_test false";
  auto written = ReadFile(out + "/config.json");
  ASSERT_TRUE(written.ok());
  const nlohmann::json c = nlohmann::json::parse(*written)["finetune"];
  EXPECT_EQ(c["seeds"], 2);
  EXPECT_EQ(c["epochs"], 1);
  EXPECT_EQ(c["lr"], nlohmann::json::parse("[0.0001, 0.0003]"));
  EXPECT_EQ(c["task"], "mrpc");
  EXPECT_EQ(c["out"], out);

  WriteText(config, R"({"finetune": {"tsak": "mrpc"}})");
  const Result typo = Lamina(absl::StrCat("finetune --config ", config));
  EXPECT_EQ(typo.code, 1) << typo.out;
  EXPECT_NE(typo.out.find("finetune.tsak: unknown key (known: "), std::string::npos) << typo.out;
  WriteText(config, R"({"finetune": {"epochs": "many"}})");
  const Result bad = Lamina(absl::StrCat("finetune --config ", config));
  EXPECT_EQ(bad.code, 1) << bad.out;
  EXPECT_NE(bad.out.find("finetune.epochs: "), std::string::npos) << bad.out;
}

TEST(Cli, FinetuneReportsMalformedGlueFiles) {
  NEED_BINARY();
  const std::string ckpt = ImportFixture("bad");
  const std::string glue = TinyGlue("glue_bad");
  WriteText(glue + "/MRPC/dev.tsv", "Quality\t#1 ID\t#2 ID\t#1 String\t#2 String\n1\t1\tonly three\n");
  const Result r = Lamina(absl::StrCat("finetune --task mrpc --device cpu --checkpoint ", ckpt, " --data ", glue,
                                       " --out ", Temp("bad_out")));
  EXPECT_EQ(r.code, 1) << r.out;
  EXPECT_NE(r.out.find("lamina finetune: "), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("MRPC/dev.tsv"), std::string::npos) << r.out;
  const Result no_task = Lamina(absl::StrCat("finetune --checkpoint ", ckpt, " --data ", glue));
  EXPECT_EQ(no_task.code, 1);
  EXPECT_NE(no_task.out.find("--task mrpc|rte is required"), std::string::npos) << no_task.out;
}

// --attention names CUDA kernels: a bad name, or flash on the CPU, is an error that says so.
// A text longer than the model's positions is cut with a word on stderr; a [MASK] past the cut
// is refused with that reason (it was reported as "no [MASK]").
TEST(Cli, FillMaskSaysWhereALongTextIsCut) {
  NEED_BINARY();
  const std::string ckpt = ImportFixture("fill_mask_cut");  // 64 positions
  std::string words;
  for (int i = 0; i < 70; ++i) absl::StrAppend(&words, "word ");
  const Result late = Lamina(absl::StrCat("fill-mask --device cpu --checkpoint ", ckpt, " \"", words, "the [MASK].\""));
  EXPECT_EQ(late.code, 1) << late.out;
  EXPECT_NE(late.out.find("the model reads at most 62 (max_positions 64 less [CLS] and [SEP]), and 1 [MASK] lie past "
                          "that cut"),
            std::string::npos)
      << late.out;
  const Result early = Lamina(absl::StrCat("fill-mask --device cpu --checkpoint ", ckpt, " \"the [MASK]. ", words, "\""));
  EXPECT_EQ(early.code, 0) << early.out;
  EXPECT_NE(early.out.find("only the first 62 are read (max_positions 64)"), std::string::npos) << early.out;
}

TEST(Cli, AttentionFlagIsCheckedEverywhere) {
  NEED_BINARY();
  const std::string ckpt = ImportFixture("attention");
  const Result bad = Lamina(absl::StrCat("fill-mask --device cpu --attention sdpa --checkpoint ", ckpt, " \"a [MASK].\""));
  EXPECT_EQ(bad.code, 1) << bad.out;
  EXPECT_NE(bad.out.find("--attention: expected \"auto\", \"gemm\" or \"flash\", got \"sdpa\""), std::string::npos)
      << bad.out;
  const Result cpu_flash =
      Lamina(absl::StrCat("fill-mask --device cpu --attention flash --checkpoint ", ckpt, " \"a [MASK].\""));
  EXPECT_EQ(cpu_flash.code, 1) << cpu_flash.out;
  EXPECT_NE(cpu_flash.out.find("is a CUDA kernel"), std::string::npos) << cpu_flash.out;
  const Result pretrain = Lamina(absl::StrCat("pretrain --config ", Source(),
                                              "/launch/configs/quickstart.json --device cpu --attention flash --out ",
                                              Temp("attention_run")));
  EXPECT_EQ(pretrain.code, 1) << pretrain.out;
  EXPECT_NE(pretrain.out.find("is a CUDA kernel"), std::string::npos) << pretrain.out;
  const Result cpu_gemm =
      Lamina(absl::StrCat("fill-mask --device cpu --attention gemm --checkpoint ", ckpt, " \"a [MASK].\""));
  EXPECT_EQ(cpu_gemm.code, 1) << cpu_gemm.out;  // a CUDA kernel too: the CPU has only the reference
  EXPECT_NE(cpu_gemm.out.find("\"gemm\" is a CUDA kernel"), std::string::npos) << cpu_gemm.out;
  // "auto", the default, is the reference on the CPU.
  const Result cpu_auto =
      Lamina(absl::StrCat("fill-mask --device cpu --attention auto --checkpoint ", ckpt, " \"a [MASK].\""));
  EXPECT_EQ(cpu_auto.code, 0) << cpu_auto.out;
}

TEST(Cli, SweepFinetunesEveryCheckpointAndResumes) {
  NEED_BINARY();
  const std::string ckpt = ImportFixture("sweep_src");
  const std::string run = Temp("sweep_run");
  for (int step : {100, 20}) {
    const std::string dir = absl::StrCat(run, "/checkpoints/step_", std::string(8 - std::to_string(step).size(), '0'), step);
    fs::create_directories(dir);
    fs::copy_file(ckpt + "/model.safetensors", dir + "/model.safetensors");
    auto state = ReadFile(ckpt + "/state.json");
    nlohmann::json j = nlohmann::json::parse(*state);
    j["step"] = step;
    std::ofstream(dir + "/state.json") << j.dump();
  }
  const std::string glue = TinyGlue("sweep_glue");
  const std::string args = absl::StrCat("finetune-sweep --task mrpc --device cpu --run ", run, " --data ", glue,
                                        " --lr 3e-4 --epochs 1 --batch 8 --max_seq 32 --seeds 2");
  Result r = Lamina(args);
  ASSERT_EQ(r.code, 0) << r.out;
  auto sweep = ReadFile(run + "/finetune/mrpc/sweep.json");
  ASSERT_TRUE(sweep.ok());
  const nlohmann::json j = nlohmann::json::parse(*sweep);
  ASSERT_EQ(j["points"].size(), 2u);
  EXPECT_EQ(j["points"][0]["step"], 20);
  EXPECT_EQ(j["points"][1]["step"], 100);
  EXPECT_EQ(j["points"][0]["final"]["accuracy"]["n"], 2);
  auto tsv = ReadFile(run + "/finetune/mrpc/sweep.tsv");
  ASSERT_TRUE(tsv.ok());
  EXPECT_EQ(tsv->rfind("step\tcheckpoint\tbest_lr\taccuracy_mean", 0), 0u) << *tsv;
  r = Lamina(args);  // everything is done: nothing is finetuned again
  ASSERT_EQ(r.code, 0) << r.out;
  EXPECT_NE(r.out.find("exists with this config, not finetuned again"), std::string::npos) << r.out;
  EXPECT_EQ(r.out.find("epoch 1/1"), std::string::npos) << r.out;
}

TEST(Cli, ImportAndExportRefusalsAreMessages) {
  NEED_BINARY();
  const std::string bin = Temp("bin");
  fs::create_directories(bin);
  fs::copy_file(Source() + "/tests/fixtures/hf/bert_mlm/config.json", bin + "/config.json");
  std::ofstream(bin + "/pytorch_model.bin") << "PK";
  Result r = Lamina(absl::StrCat("import-hf --model ", bin, " --out ", Temp("bin_out")));
  EXPECT_EQ(r.code, 1);
  EXPECT_NE(r.out.find("lamina import-hf: "), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("pickle"), std::string::npos) << r.out;
  r = Lamina(absl::StrCat("export-hf --checkpoint ", Temp("missing"), " --out ", Temp("x")));
  EXPECT_EQ(r.code, 1);
  EXPECT_NE(r.out.find("lamina export-hf: "), std::string::npos) << r.out;
}

}  // namespace
}  // namespace lamina
