#include "finetune/job.h"

#include <algorithm>
#include <filesystem>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "core/json_file.h"
#include "core/file_util.h"
#include "core/status.h"
#include "checkpoint/checkpoint.h"

namespace lamina {
namespace {

namespace fs = std::filesystem;

absl::StatusOr<std::string> VocabOf(const std::string& checkpoint) {
  ASSIGN_OR_RETURN(nlohmann::json state, ReadCheckpointState(checkpoint));
  return RunConfigVocab(state["run_config"], checkpoint + "/state.json");
}

absl::StatusOr<nlohmann::json> ReadJson(const std::string& path) {
  ASSIGN_OR_RETURN(nlohmann::json j, ReadJsonFile(path));
  return j;
}

}  // namespace

absl::StatusOr<FinetuneReport> RunFinetuneJob(const FinetuneJob& job, const FinetuneLog& log) {
  RETURN_IF_ERROR(job.config.Validate());
  ASSIGN_OR_RETURN(std::string checkpoint, ResolveCheckpoint(job.checkpoint));
  std::string vocab = job.vocab;
  if (vocab.empty()) {
    ASSIGN_OR_RETURN(vocab, VocabOf(checkpoint));
  }
  ASSIGN_OR_RETURN(WordPieceTokenizer tokenizer, WordPieceTokenizer::Load(vocab));
  ASSIGN_OR_RETURN(TaskData data, LoadTaskData(job.config.task, job.glue_dir, tokenizer));
  const HeadOptions heads{false, NumGlueLabels(job.config.task)};
  const ModelFactory factory = [&](uint64_t seed) { return LoadModel(checkpoint, job.device, heads, seed, job.backend); };
  ASSIGN_OR_RETURN(FinetuneReport report, FinetuneAll(job.config, factory, tokenizer, data, log));
  ASSIGN_OR_RETURN(nlohmann::json state, ReadCheckpointState(checkpoint));
  const nlohmann::json context = {
      {"checkpoint", fs::absolute(checkpoint).lexically_normal().string()},
      {"pretrain_step", state["step"]},
      {"model", state["run_config"].value("model", nlohmann::json::object())},
      {"vocab", vocab},
      {"glue_dir", job.glue_dir},
      {"device", job.device},
      {"attention", AttentionKernelName(job.backend.attention)},
      {"examples", {{"train", data.train.size()}, {"dev", data.dev.size()}, {"test", data.test.size()}}},
  };
  RETURN_IF_ERROR(WriteFinetuneOutputs(report, data, job.out_dir, context));
  return report;
}

absl::StatusOr<std::vector<RunCheckpoint>> ListRunCheckpoints(const std::string& run_dir) {
  const fs::path root = fs::path(run_dir) / "checkpoints";
  std::error_code ec;
  if (!fs::is_directory(root, ec)) return absl::NotFoundError(absl::StrCat(run_dir, ": no checkpoints/ directory (not a run directory?)"));
  std::vector<RunCheckpoint> out;
  for (const auto& entry : fs::directory_iterator(root, ec)) {
    const std::string name = entry.path().filename().string();
    int64_t step;
    if (!absl::StartsWith(name, "step_") || name.size() == 5 ||
        !std::all_of(name.begin() + 5, name.end(), [](char c) { return c >= '0' && c <= '9'; }) ||
        !absl::SimpleAtoi(name.substr(5), &step))
      continue;
    if (!fs::is_regular_file(entry.path() / "model.safetensors", ec) || !fs::is_regular_file(entry.path() / "state.json", ec))
      continue;
    out.push_back({step, entry.path().string()});
  }
  if (out.empty()) return absl::NotFoundError(absl::StrCat(root.string(), ": no complete checkpoint"));
  std::sort(out.begin(), out.end(), [](const RunCheckpoint& a, const RunCheckpoint& b) { return a.step < b.step; });
  return out;
}

absl::StatusOr<nlohmann::json> RunFinetuneSweep(const std::string& run_dir, const FinetuneJob& job, const FinetuneLog& log) {
  RETURN_IF_ERROR(job.config.Validate());
  ASSIGN_OR_RETURN(std::vector<RunCheckpoint> checkpoints, ListRunCheckpoints(run_dir));
  const nlohmann::json config_json = job.config.ToJson();
  const std::vector<std::string> metrics = GlueMetricNames(job.config.task);
  nlohmann::json points = nlohmann::json::array();
  std::string tsv = "step\tcheckpoint\tbest_lr";
  for (const std::string& m : metrics) absl::StrAppend(&tsv, "\t", m, "_mean\t", m, "_std\t", m, "_median\t", m, "_max");
  absl::StrAppend(&tsv, "\n");
  for (const RunCheckpoint& c : checkpoints) {
    const std::string out = (fs::path(job.out_dir) / absl::StrFormat("step_%08d", c.step)).string();
    const std::string results_path = out + "/results.json";
    nlohmann::json results;
    bool reuse = false;
    if (fs::exists(results_path)) {
      ASSIGN_OR_RETURN(results, ReadJson(results_path));
      reuse = results.value("config", nlohmann::json()) == config_json;
    }
    if (reuse) {
      if (log) log(absl::StrCat("step ", c.step, ": ", results_path, " exists with this config, not finetuned again"));
    } else {
      if (log) log(absl::StrCat("step ", c.step, ": finetuning ", c.dir));
      FinetuneJob one = job;
      one.checkpoint = c.dir;
      one.out_dir = out;
      RETURN_IF_ERROR(RunFinetuneJob(one, log).status());
      ASSIGN_OR_RETURN(results, ReadJson(results_path));
    }
    const nlohmann::json& best = results["best"];
    nlohmann::json point = {{"step", c.step}, {"checkpoint", c.dir}, {"results", results_path}, {"best_lr", best["lr"]},
                            {"final", best["final"]}};
    absl::StrAppend(&tsv, c.step, "\t", c.dir, "\t", best["lr"].dump());
    for (const std::string& m : metrics) {
      const nlohmann::json& s = best["final"][m];
      absl::StrAppend(&tsv, absl::StrFormat("\t%.6f\t%.6f\t%.6f\t%.6f", s["mean"].get<double>(), s["std"].get<double>(),
                                            s["median"].get<double>(), s["max"].get<double>()));
    }
    absl::StrAppend(&tsv, "\n");
    points.push_back(point);
  }
  const nlohmann::json sweep = {{"run_dir", fs::absolute(run_dir).lexically_normal().string()},
                                {"task", GlueTaskName(job.config.task)},
                                {"config", config_json},
                                {"metric_selection", "per step: the learning rate with the highest median final-epoch dev score"},
                                {"points", points}};
  RETURN_IF_ERROR(WriteFileAtomic(job.out_dir + "/sweep.json", sweep.dump(2) + "\n"));
  RETURN_IF_ERROR(WriteFileAtomic(job.out_dir + "/sweep.tsv", tsv));
  return sweep;
}

}  // namespace lamina
