#include "launch/finetune_flags.h"

#include <filesystem>
#include <vector>

#include "absl/flags/commandlineflag.h"
#include "absl/flags/flag.h"
#include "absl/flags/reflection.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "absl/strings/str_join.h"
#include "core/json_file.h"
#include "core/file_util.h"
#include "core/status.h"
#include "launch/common_flags.h"
#include "launch/subcommand.h"
#include "pretrain/run_config.h"

ABSL_FLAG(std::string, task, "", "finetune: GLUE task, mrpc or rte");
ABSL_FLAG(std::string, lr, "2e-5,3e-5,5e-5", "finetune: peak learning rates, comma-separated; each is run with every seed");
ABSL_FLAG(int64_t, epochs, 3, "finetune: epochs over the training set");
ABSL_FLAG(int64_t, batch, 32, "finetune: examples per optimizer step");
ABSL_FLAG(int64_t, max_seq, 128, "finetune: longest [CLS] a [SEP] b [SEP] in tokens; longer pairs are cut longest-first");
ABSL_FLAG(int64_t, seeds, 1, "finetune: runs per learning rate, with seeds --seed, --seed+1, ...; grad-norms: initialisations (and batch orders) "
          "per depth, with seeds run.seed, run.seed+1, ...");
ABSL_FLAG(uint64_t, seed, 1, "finetune: the first seed (classifier init, shuffling, dropout)");
ABSL_FLAG(double, warmup_ratio, 0.1, "finetune: fraction of the updates over which the learning rate warms up linearly");
ABSL_FLAG(bool, predict_test, true,
          "finetune: after each run's last epoch, predict the test split (the GLUE submission file of the best run); "
          "--predict_test=false saves that time where only dev metrics matter");
ABSL_FLAG(double, weight_decay, 0.01, "finetune: AdamW decoupled weight decay (never on biases and LayerNorm)");

namespace lamina {

namespace {

// --lr's text: comma-separated numbers.
absl::StatusOr<std::vector<double>> ParseLearningRates(absl::string_view text) {
  std::vector<double> lrs;
  for (absl::string_view part : absl::StrSplit(text, ',', absl::SkipWhitespace())) {
    double lr;
    if (!absl::SimpleAtod(absl::StripAsciiWhitespace(part), &lr))
      return absl::InvalidArgumentError(absl::StrCat("--lr: '", part, "' is not a number"));
    lrs.push_back(lr);
  }
  return lrs;
}

// A config value as the text its flag parses: lists (the learning rates) comma-joined.
absl::StatusOr<std::string> FlagText(const nlohmann::json& v) {
  if (v.is_string()) return v.get<std::string>();
  if (v.is_number() || v.is_boolean()) return v.dump();
  if (v.is_array() && !v.empty()) {
    std::vector<std::string> parts;
    for (const nlohmann::json& e : v) {
      if (!e.is_number()) return absl::InvalidArgumentError(absl::StrCat("expected a list of numbers, got ", v.dump()));
      parts.push_back(e.dump());
    }
    return absl::StrJoin(parts, ",");
  }
  return absl::InvalidArgumentError(absl::StrCat("expected a string, a number, true/false or a list of numbers, got ", v.dump()));
}

// A flag's current value as JSON: numbers and booleans typed, "lr" as a list, the rest strings.
nlohmann::json FlagJson(const std::string& name, const absl::CommandLineFlag& flag) {
  const std::string text = flag.CurrentValue();
  if (name == "lr") {
    const absl::StatusOr<std::vector<double>> lrs = ParseLearningRates(text);
    if (lrs.ok()) return *lrs;
  }
  if (flag.IsOfType<std::string>()) return text;
  nlohmann::json parsed = nlohmann::json::parse(text, nullptr, /*allow_exceptions=*/false);
  return parsed.is_discarded() ? nlohmann::json(text) : parsed;
}

}  // namespace

absl::StatusOr<nlohmann::json> ApplyFinetuneConfig(const std::vector<std::string>& keys) {
  const std::string path = absl::GetFlag(FLAGS_config);
  nlohmann::json root = {{"finetune", nlohmann::json::object()}};
  if (!path.empty()) {
    ASSIGN_OR_RETURN(root, ReadJsonFile(path));
    if (!root.is_object() || !root.contains("finetune") || !root["finetune"].is_object() || root.size() != 1)
      return absl::InvalidArgumentError(absl::StrCat(path, ": expected {\"finetune\": {KEY: VALUE, ...}}"));
  }
  const std::string where = path.empty() ? "--set" : path;
  for (const std::string& assignment : absl::GetFlag(FLAGS_set)) {
    if (!absl::StartsWith(assignment, "finetune."))
      return absl::InvalidArgumentError(absl::StrCat("--set ", assignment, ": expected finetune.KEY=VALUE"));
    RETURN_IF_ERROR(ApplyOverride(assignment, &root));
  }
  std::vector<std::string> sorted = keys;
  std::sort(sorted.begin(), sorted.end());
  for (const auto& [key, value] : root["finetune"].items()) {
    const auto known = std::find(keys.begin(), keys.end(), key) != keys.end();
    absl::CommandLineFlag* flag = known ? absl::FindCommandLineFlag(key) : nullptr;
    if (flag == nullptr)
      return absl::InvalidArgumentError(absl::StrCat(where, ": finetune.", key, ": unknown key (known: ",
                                                     absl::StrJoin(sorted, ", "), ")"));
    if (FlagGiven(key)) continue;  // the command line wins
    absl::StatusOr<std::string> text = FlagText(value);
    std::string error;
    if (!text.ok() || !flag->ParseFrom(*text, &error))
      return absl::InvalidArgumentError(absl::StrCat(where, ": finetune.", key, ": ",
                                                     text.ok() ? error : std::string(text.status().message())));
  }
  nlohmann::json resolved = nlohmann::json::object();
  for (const std::string& key : sorted)
    if (const absl::CommandLineFlag* flag = absl::FindCommandLineFlag(key)) resolved[key] = FlagJson(key, *flag);
  return resolved;
}

absl::Status WriteFinetuneConfig(const std::string& out_dir, const nlohmann::json& section) {
  std::error_code ec;
  std::filesystem::create_directories(out_dir, ec);
  if (ec) return absl::PermissionDeniedError(absl::StrCat("cannot create ", out_dir, ": ", ec.message()));
  return WriteFileAtomic(out_dir + "/config.json", nlohmann::json{{"finetune", section}}.dump(2) + "\n");
}

absl::StatusOr<FinetuneJob> FinetuneJobFromFlags() {
  FinetuneJob job;
  const std::string task = absl::GetFlag(FLAGS_task);
  if (task.empty()) return absl::InvalidArgumentError("--task mrpc|rte is required");
  ASSIGN_OR_RETURN(job.config.task, ParseGlueTask(task));
  job.glue_dir = absl::GetFlag(FLAGS_data);
  if (job.glue_dir.empty()) return absl::InvalidArgumentError("--data GLUE_DIR is required (it holds MRPC/ and RTE/)");
  ASSIGN_OR_RETURN(job.config.learning_rates, ParseLearningRates(absl::GetFlag(FLAGS_lr)));
  job.config.epochs = absl::GetFlag(FLAGS_epochs);
  job.config.batch = absl::GetFlag(FLAGS_batch);
  job.config.max_seq = absl::GetFlag(FLAGS_max_seq);
  job.config.seeds = absl::GetFlag(FLAGS_seeds);
  job.config.first_seed = absl::GetFlag(FLAGS_seed);
  job.config.warmup_ratio = absl::GetFlag(FLAGS_warmup_ratio);
  job.config.optimizer.weight_decay = static_cast<float>(absl::GetFlag(FLAGS_weight_decay));
  job.config.predict_test = absl::GetFlag(FLAGS_predict_test);
  RETURN_IF_ERROR(job.config.Validate());
  ASSIGN_OR_RETURN(const BackendChoice backend, BackendFromFlags());
  job.device = backend.device;
  job.backend = backend.options;
  job.vocab = absl::GetFlag(FLAGS_vocab);
  return job;
}

}  // namespace lamina
