#include "pretrain/run_config.h"

#include <filesystem>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "core/json_file.h"
#include "core/status.h"

namespace lamina {
namespace {

const char* const kSections[] = {"model", "optimizer", "schedule", "data", "batch", "eval", "checkpoint", "run"};

absl::Status TypeError(const std::string& key, const char* expected, const nlohmann::json& v) {
  return absl::InvalidArgumentError(absl::StrCat(key, ": expected ", expected, ", got ", v.dump()));
}

// Reads the fields of one section through a visitor; unknown keys are errors.
class SectionReader {
 public:
  SectionReader(std::string section, const nlohmann::json& j) : section_(std::move(section)), j_(j) {}

  absl::Status Check() const {
    if (!j_.is_object()) return TypeError(section_, "an object", j_);
    return absl::OkStatus();
  }
  template <typename T>
  absl::Status Read(const char* key, T* out) {
    known_.push_back(key);
    if (!j_.contains(key)) return absl::OkStatus();
    const nlohmann::json& v = j_.at(key);
    const std::string name = absl::StrCat(section_, ".", key);
    if constexpr (std::is_same_v<T, bool>) {
      if (!v.is_boolean()) return TypeError(name, "true or false", v);
    } else if constexpr (std::is_integral_v<T>) {
      if (!v.is_number_integer()) return TypeError(name, "an integer", v);
      if constexpr (std::is_unsigned_v<T>) {
        if (v.is_number_integer() && !v.is_number_unsigned()) return TypeError(name, "a non-negative integer", v);
      }
    } else if constexpr (std::is_floating_point_v<T>) {
      if (!v.is_number()) return TypeError(name, "a number", v);
    } else {
      if (!v.is_string()) return TypeError(name, "a string", v);
    }
    *out = v.get<T>();
    return absl::OkStatus();
  }
  absl::Status Finish() const {
    for (const auto& [key, value] : j_.items()) {
      if (std::find(known_.begin(), known_.end(), key) == known_.end())
        return absl::InvalidArgumentError(absl::StrCat(section_, ".", key, ": unknown key"));
    }
    return absl::OkStatus();
  }

 private:
  std::string section_;
  const nlohmann::json j_;  // a copy: sections are often temporaries
  std::vector<std::string> known_;
};

absl::Status Positive(const std::string& key, double v) {
  if (!(v > 0)) return absl::InvalidArgumentError(absl::StrCat(key, ": must be positive, got ", v));
  return absl::OkStatus();
}
absl::Status NonNegative(const std::string& key, double v) {
  if (!(v >= 0)) return absl::InvalidArgumentError(absl::StrCat(key, ": must be >= 0, got ", v));
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<int> BatchConfig::Accumulation(int ranks) const {
  const int64_t per_step = micro_batch * ranks;
  if (per_step <= 0 || global_batch % per_step != 0)
    return absl::InvalidArgumentError(absl::StrCat("batch.global_batch (", global_batch,
                                                   ") must be a multiple of batch.micro_batch (", micro_batch,
                                                   ") x ranks (", ranks, ")"));
  return static_cast<int>(global_batch / per_step);
}

nlohmann::json RunConfig::ToJson() const {
  nlohmann::json j;
  j["model"] = model.ToJson();
  j["optimizer"] = optimizer.ToJson();
  j["schedule"] = schedule.ToJson();
  j["data"] = {{"train", data.train},
               {"vocab", data.vocab},
               {"mask_prob", data.masking.mask_prob},
               {"mask_token_prob", data.masking.mask_token_prob},
               {"random_token_prob", data.masking.random_token_prob},
               {"max_predictions", data.masking.max_predictions},
               {"whole_word", data.masking.whole_word},
               {"prefetch", data.prefetch}};
  j["batch"] = {{"global_batch", batch.global_batch}, {"micro_batch", batch.micro_batch}};
  j["eval"] = {{"every", eval.every}, {"batch_size", eval.batch_size}, {"max_batches", eval.max_batches}};
  j["checkpoint"] = {{"every", checkpoint.every},
                     {"keep", checkpoint.keep},
                     {"init_from", checkpoint.init_from},
                     {"init_optimizer", checkpoint.init_optimizer}};
  j["run"] = {{"steps", run.steps},
              {"seed", run.seed},
              {"device", run.device},
              {"log_every", run.log_every},
              {"log_layer_norms", run.log_layer_norms},
              {"max_bad_steps", run.max_bad_steps},
              {"peak_tflops", run.peak_tflops},
              {"grad_bucket_mb", run.grad_bucket_mb},
              {"grad_bf16", run.grad_bf16},
              {"grad_overlap", run.grad_overlap},
              {"zero_stage", run.zero_stage},
              {"attention", AttentionKernelName(run.attention)},
              {"gemm_autotune", run.gemm_autotune}};
  return j;
}

absl::StatusOr<RunConfig> RunConfig::FromJson(const nlohmann::json& j) {
  if (!j.is_object()) return TypeError("config", "an object", j);
  for (const auto& [key, value] : j.items()) {
    if (std::find(std::begin(kSections), std::end(kSections), key) == std::end(kSections))
      return absl::InvalidArgumentError(absl::StrCat(
          key, ": unknown section (expected model, optimizer, schedule, data, batch, eval, checkpoint, run)"));
  }
  auto section = [&](const char* name) { return j.contains(name) ? j.at(name) : nlohmann::json::object(); };
  RunConfig c;
  ASSIGN_OR_RETURN(c.model, BertConfig::FromJson(section("model")));
  ASSIGN_OR_RETURN(c.optimizer, OptimizerConfig::FromJson(section("optimizer")));

  SectionReader run("run", section("run"));
  RETURN_IF_ERROR(run.Check());
  RETURN_IF_ERROR(run.Read("steps", &c.run.steps));
  RETURN_IF_ERROR(run.Read("seed", &c.run.seed));
  RETURN_IF_ERROR(run.Read("device", &c.run.device));
  RETURN_IF_ERROR(run.Read("log_every", &c.run.log_every));
  RETURN_IF_ERROR(run.Read("log_layer_norms", &c.run.log_layer_norms));
  RETURN_IF_ERROR(run.Read("max_bad_steps", &c.run.max_bad_steps));
  RETURN_IF_ERROR(run.Read("peak_tflops", &c.run.peak_tflops));
  RETURN_IF_ERROR(run.Read("grad_bucket_mb", &c.run.grad_bucket_mb));
  RETURN_IF_ERROR(run.Read("grad_bf16", &c.run.grad_bf16));
  RETURN_IF_ERROR(run.Read("grad_overlap", &c.run.grad_overlap));
  RETURN_IF_ERROR(run.Read("zero_stage", &c.run.zero_stage));
  std::string attention = AttentionKernelName(c.run.attention);
  RETURN_IF_ERROR(run.Read("attention", &attention));
  ASSIGN_OR_RETURN(c.run.attention, ParseAttentionKernel(attention, "run.attention"));
  RETURN_IF_ERROR(run.Read("gemm_autotune", &c.run.gemm_autotune));
  RETURN_IF_ERROR(run.Finish());
  RETURN_IF_ERROR(Positive("run.steps", c.run.steps));
  RETURN_IF_ERROR(Positive("run.log_every", c.run.log_every));
  RETURN_IF_ERROR(NonNegative("run.log_layer_norms", c.run.log_layer_norms));
  RETURN_IF_ERROR(Positive("run.max_bad_steps", c.run.max_bad_steps));
  RETURN_IF_ERROR(NonNegative("run.peak_tflops", c.run.peak_tflops));
  RETURN_IF_ERROR(Positive("run.grad_bucket_mb", c.run.grad_bucket_mb));
  if (c.run.zero_stage != 0 && c.run.zero_stage != 1)
    return absl::InvalidArgumentError(absl::StrCat("run.zero_stage: expected 0 (replicated optimizer) or 1 (sharded ",
                                                   "optimizer state); stages 2 and 3 are not implemented, got ",
                                                   c.run.zero_stage));
  if (c.run.zero_stage == 1 && c.run.log_layer_norms > 0)
    return absl::InvalidArgumentError(
        "run.log_layer_norms: not available with run.zero_stage 1, where each rank holds only a shard of the "
        "averaged gradients; set run.zero_stage=0 for the diagnostic runs");
  if (c.run.device != "cpu" && c.run.device != "cuda" && c.run.device != "auto")
    return absl::InvalidArgumentError(absl::StrCat("run.device: expected \"cpu\", \"cuda\" or \"auto\", got \"", c.run.device, "\""));

  // A decaying schedule runs over the whole run unless it says otherwise; the default schedule
  // is BERT's linear decay, here without warmup.
  nlohmann::json schedule = section("schedule");
  if (schedule.is_object()) {
    if (!schedule.contains("name")) schedule["name"] = "linear";
    if (!schedule.contains("lr")) schedule["lr"] = 1e-4;
    const bool decays = schedule["name"] == "linear" || schedule["name"] == "polynomial";
    if (decays && !schedule.contains("total_steps")) schedule["total_steps"] = c.run.steps;
  }
  ASSIGN_OR_RETURN(c.schedule, ScheduleConfig::FromJson(schedule));

  SectionReader data("data", section("data"));
  RETURN_IF_ERROR(data.Check());
  RETURN_IF_ERROR(data.Read("train", &c.data.train));
  RETURN_IF_ERROR(data.Read("vocab", &c.data.vocab));
  RETURN_IF_ERROR(data.Read("mask_prob", &c.data.masking.mask_prob));
  RETURN_IF_ERROR(data.Read("mask_token_prob", &c.data.masking.mask_token_prob));
  RETURN_IF_ERROR(data.Read("random_token_prob", &c.data.masking.random_token_prob));
  RETURN_IF_ERROR(data.Read("max_predictions", &c.data.masking.max_predictions));
  RETURN_IF_ERROR(data.Read("whole_word", &c.data.masking.whole_word));
  RETURN_IF_ERROR(data.Read("prefetch", &c.data.prefetch));
  RETURN_IF_ERROR(data.Finish());
  const MaskingConfig& m = c.data.masking;
  if (!(m.mask_prob > 0 && m.mask_prob < 1))
    return absl::InvalidArgumentError(absl::StrCat("data.mask_prob: must be in (0, 1), got ", m.mask_prob));
  if (!(m.mask_token_prob >= 0 && m.random_token_prob >= 0 && m.mask_token_prob + m.random_token_prob <= 1))
    return absl::InvalidArgumentError("data.mask_token_prob + data.random_token_prob: must be probabilities summing to at most 1");
  RETURN_IF_ERROR(NonNegative("data.max_predictions", m.max_predictions));
  RETURN_IF_ERROR(NonNegative("data.prefetch", c.data.prefetch));

  SectionReader batch("batch", section("batch"));
  RETURN_IF_ERROR(batch.Check());
  RETURN_IF_ERROR(batch.Read("global_batch", &c.batch.global_batch));
  RETURN_IF_ERROR(batch.Read("micro_batch", &c.batch.micro_batch));
  RETURN_IF_ERROR(batch.Finish());
  RETURN_IF_ERROR(Positive("batch.global_batch", c.batch.global_batch));
  RETURN_IF_ERROR(Positive("batch.micro_batch", c.batch.micro_batch));

  SectionReader eval("eval", section("eval"));
  RETURN_IF_ERROR(eval.Check());
  RETURN_IF_ERROR(eval.Read("every", &c.eval.every));
  RETURN_IF_ERROR(eval.Read("batch_size", &c.eval.batch_size));
  RETURN_IF_ERROR(eval.Read("max_batches", &c.eval.max_batches));
  RETURN_IF_ERROR(eval.Finish());
  RETURN_IF_ERROR(NonNegative("eval.every", c.eval.every));
  RETURN_IF_ERROR(Positive("eval.batch_size", c.eval.batch_size));
  RETURN_IF_ERROR(NonNegative("eval.max_batches", c.eval.max_batches));

  SectionReader ckpt("checkpoint", section("checkpoint"));
  RETURN_IF_ERROR(ckpt.Check());
  RETURN_IF_ERROR(ckpt.Read("every", &c.checkpoint.every));
  RETURN_IF_ERROR(ckpt.Read("keep", &c.checkpoint.keep));
  RETURN_IF_ERROR(ckpt.Read("init_from", &c.checkpoint.init_from));
  RETURN_IF_ERROR(ckpt.Read("init_optimizer", &c.checkpoint.init_optimizer));
  RETURN_IF_ERROR(ckpt.Finish());
  if (c.checkpoint.init_optimizer != "keep" && c.checkpoint.init_optimizer != "reset")
    return absl::InvalidArgumentError(absl::StrCat("checkpoint.init_optimizer: expected \"keep\" or \"reset\", got \"",
                                                   c.checkpoint.init_optimizer, "\""));
  RETURN_IF_ERROR(NonNegative("checkpoint.every", c.checkpoint.every));
  RETURN_IF_ERROR(Positive("checkpoint.keep", c.checkpoint.keep));
  return c;
}

absl::Status ApplyOverride(const std::string& assignment, nlohmann::json* config) {
  const size_t eq = assignment.find('=');
  if (eq == std::string::npos || eq == 0)
    return absl::InvalidArgumentError(absl::StrCat("--set ", assignment, ": expected key=value, e.g. optimizer.weight_decay=0"));
  const std::string key = assignment.substr(0, eq), text = assignment.substr(eq + 1);
  nlohmann::json value = nlohmann::json::parse(text, nullptr, /*allow_exceptions=*/false);
  if (value.is_discarded()) value = text;  // a bare word is a string: model.norm=pre
  std::vector<std::string> parts = absl::StrSplit(key, '.');
  nlohmann::json* node = config;
  for (size_t i = 0; i + 1 < parts.size(); ++i) {
    node = &(*node)[parts[i]];
    if (node->is_null()) *node = nlohmann::json::object();
    if (!node->is_object())
      return absl::InvalidArgumentError(absl::StrCat("--set ", key, ": ", parts[i], " is not an object"));
  }
  (*node)[parts.back()] = value;
  return absl::OkStatus();
}

absl::StatusOr<RunConfig> LoadRunConfig(const std::string& path, const std::vector<std::string>& overrides) {
  ASSIGN_OR_RETURN(nlohmann::json j, ReadJsonFile(path));
  if (!j.is_object()) return absl::InvalidArgumentError(absl::StrCat(path, ": expected a JSON object"));
  // A bare model object (launch/configs/model/*.json: no key is a section name) is the model
  // section of a config whose other sections keep their defaults.
  const bool bare_model = std::none_of(j.items().begin(), j.items().end(), [](const auto& item) {
    return std::find(std::begin(kSections), std::end(kSections), item.key()) != std::end(kSections);
  });
  if (bare_model && !j.empty()) j = nlohmann::json{{"model", std::move(j)}};
  const std::filesystem::path base = std::filesystem::path(path).parent_path();
  for (auto& [key, value] : j.items()) {
    if (!value.is_string()) continue;
    const std::filesystem::path file = base / value.get<std::string>();
    absl::StatusOr<nlohmann::json> section = ReadJsonFile(file.string());
    if (!section.ok()) return Annotate(section.status(), absl::StrCat(path, ": section ", key));
    value = *std::move(section);
  }
  for (const std::string& o : overrides) RETURN_IF_ERROR(ApplyOverride(o, &j));
  auto c = RunConfig::FromJson(j);
  if (!c.ok()) return Annotate(c.status(), path);
  return c;
}

}  // namespace lamina
