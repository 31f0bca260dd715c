#include "checkpoint/checkpoint.h"

#include <fcntl.h>
#include <stdio.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <ctime>
#include <filesystem>
#include <map>
#include <set>
#include <utility>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "core/json_file.h"
#include "core/file_util.h"
#include "core/safetensors.h"
#include "core/status.h"
#include "core/timer.h"

namespace lamina {
namespace {

namespace fs = std::filesystem;

constexpr char kFormat[] = "lamina-checkpoint";
constexpr char kModelFile[] = "model.safetensors";
constexpr char kOptimizerFile[] = "optimizer.safetensors";
constexpr char kStateFile[] = "state.json";

std::string CheckpointsRoot(const std::string& run_dir) { return (fs::path(run_dir) / "checkpoints").string(); }

// The step of a directory named exactly "step_<digits>"; -1 for anything else (temporaries too).
int64_t StepOfName(const std::string& name) {
  if (!absl::StartsWith(name, "step_") || name.size() == 5) return -1;
  const std::string digits = name.substr(5);
  if (!std::all_of(digits.begin(), digits.end(), [](char c) { return c >= '0' && c <= '9'; })) return -1;
  int64_t step;
  return absl::SimpleAtoi(digits, &step) ? step : -1;
}

// Left behind by a save that was interrupted: "step_N.tmp.PID" or "step_N.old.PID".
bool IsLeftover(const std::string& name) {
  return absl::StartsWith(name, "step_") && (absl::StrContains(name, ".tmp.") || absl::StrContains(name, ".old."));
}

bool IsComplete(const fs::path& dir) {
  std::error_code ec;
  for (const char* f : {kModelFile, kOptimizerFile, kStateFile})
    if (!fs::is_regular_file(dir / f, ec)) return false;
  return true;
}

// Complete checkpoints of a run, newest (highest step) first.
std::vector<std::pair<int64_t, fs::path>> CompleteCheckpoints(const std::string& root) {
  std::vector<std::pair<int64_t, fs::path>> out;
  std::error_code ec;
  for (const auto& entry : fs::directory_iterator(root, ec)) {
    const int64_t step = StepOfName(entry.path().filename().string());
    if (step >= 0 && entry.is_directory(ec) && IsComplete(entry.path())) out.emplace_back(step, entry.path());
  }
  std::sort(out.begin(), out.end(), [](const auto& a, const auto& b) { return a.first > b.first; });
  return out;
}

absl::Status RemoveTree(const fs::path& p) {
  std::error_code ec;
  fs::remove_all(p, ec);
  if (ec) return absl::InternalError(absl::StrCat("cannot remove ", p.string(), ": ", ec.message()));
  return absl::OkStatus();
}

absl::Status Rename(const fs::path& from, const fs::path& to) {
  if (::rename(from.c_str(), to.c_str()) != 0)
    return absl::InternalError(absl::StrCat("renaming ", from.string(), " to ", to.string(), ": ", std::strerror(errno)));
  return absl::OkStatus();
}

// Deletes a checkpoint without ever showing a half-deleted step_N: renamed away first.
absl::Status RemoveCheckpoint(const fs::path& dir) {
  const fs::path away = dir.string() + ".old." + std::to_string(::getpid());
  RETURN_IF_ERROR(Rename(dir, away));
  return RemoveTree(away);
}

// Moves the finished temporary directory to its final name, replacing a checkpoint of the same
// step if there is one.
absl::Status Publish(const fs::path& tmp, const fs::path& final_dir) {
  std::error_code ec;
  if (!fs::exists(final_dir, ec)) return Rename(tmp, final_dir);
  if (::renameat2(AT_FDCWD, tmp.c_str(), AT_FDCWD, final_dir.c_str(), RENAME_EXCHANGE) == 0)
    return RemoveTree(tmp);  // now holds the replaced checkpoint
  if (errno != EINVAL && errno != ENOSYS)
    return absl::InternalError(
        absl::StrCat("exchanging ", tmp.string(), " with ", final_dir.string(), ": ", std::strerror(errno)));
  const fs::path away = final_dir.string() + ".old." + std::to_string(::getpid());
  RETURN_IF_ERROR(Rename(final_dir, away));
  RETURN_IF_ERROR(Rename(tmp, final_dir));
  return RemoveTree(away);
}

nlohmann::json HeadsJson(const HeadOptions& h) { return {{"mlm", h.mlm}, {"num_labels", h.num_labels}}; }

// "model.hidden: checkpoint has 512, config has 768" for each key where the two objects differ.
void DiffObjects(const std::string& prefix, const nlohmann::json& ckpt, const nlohmann::json& mine,
                 std::vector<std::string>* diffs) {
  for (const JsonLeafChange& c : DiffJsonLeaves(ckpt, mine))
    diffs->push_back(absl::StrCat(prefix, c.key, ": checkpoint has ", c.before.value_or("nothing"), ", config has ",
                                  c.after.value_or("nothing")));
}

void FlattenLeaves(const nlohmann::json& j, const std::string& prefix, std::map<std::string, std::string>* out) {
  if (j.is_object() && !j.empty()) {
    for (const auto& [key, value] : j.items())
      FlattenLeaves(value, prefix.empty() ? key : absl::StrCat(prefix, ".", key), out);
    return;
  }
  (*out)[prefix] = j.dump();
}

// Reads, for each (prefix, flat) target, the tensor prefix + <param name> of every parameter of
// `layout` into `flat` (which keeps its values in the padding between parameters). The file must
// hold exactly those tensors.
absl::Status ReadFlat(const SafetensorsFile& file, const ParamLayout& layout,
                      const std::vector<std::pair<std::string, std::vector<float>*>>& targets) {
  std::set<std::string> expected;
  for (const auto& [prefix, flat] : targets) {
    for (const ParamInfo& p : layout.params()) {
      const std::string name = prefix + p.name;
      expected.insert(name);
      auto t = file.Find(name);
      if (!t.ok()) return absl::NotFoundError(absl::StrCat(file.path(), ": no tensor \"", name, "\", which the model has"));
      if ((*t)->shape != p.shape.dims())
        return absl::InvalidArgumentError(absl::StrCat(file.path(), ": tensor \"", name, "\" has shape ",
                                                       ShapeString((*t)->shape), ", the model has ", p.shape.ToString()));
      RETURN_IF_ERROR(file.ReadFloatsInto(**t, std::span<float>(flat->data() + p.offset, p.numel())));
    }
  }
  for (const SafetensorsTensorInfo& t : file.tensors()) {
    if (!expected.contains(t.name))
      return absl::InvalidArgumentError(absl::StrCat(file.path(), ": tensor \"", t.name, "\" is not a parameter of the model"));
  }
  return absl::OkStatus();
}

std::vector<SafetensorsEntry> Entries(const ParamLayout& layout, const std::string& prefix, const std::vector<float>& flat) {
  std::vector<SafetensorsEntry> entries;
  for (const ParamInfo& p : layout.params())
    entries.push_back({prefix + p.name, DType::kF32, p.shape.dims(), flat.data() + p.offset});
  return entries;
}

}  // namespace

std::string CheckpointDir(const std::string& run_dir, int64_t step) {
  return (fs::path(CheckpointsRoot(run_dir)) / absl::StrFormat("step_%08d", step)).string();
}

absl::StatusOr<std::string> SaveCheckpoint(const std::string& run_dir, const BertModel& model, const Optimizer& opt,
                                           const CheckpointState& state, int keep_last) {
  if (state.step < 0) return absl::InvalidArgumentError(absl::StrCat("checkpoint step must be >= 0, got ", state.step));
  const fs::path root = CheckpointsRoot(run_dir);
  std::error_code ec;
  fs::create_directories(root, ec);
  if (ec) return absl::PermissionDeniedError(absl::StrCat("cannot create ", root.string(), ": ", ec.message()));
  // Leftovers of interrupted saves (this process is the only writer of the run directory).
  for (const auto& entry : fs::directory_iterator(root, ec)) {
    if (IsLeftover(entry.path().filename().string())) RETURN_IF_ERROR(RemoveTree(entry.path()));
  }

  const ParamLayout& layout = model.layout();
  const std::vector<float> params = model.ParamsToHost();
  ASSIGN_OR_RETURN(const OptimizerState opt_state, opt.StateToHost());
  std::vector<SafetensorsEntry> moments = Entries(layout, "m.", opt_state.m);
  for (SafetensorsEntry& e : Entries(layout, "v.", opt_state.v)) moments.push_back(std::move(e));

  const nlohmann::json state_json = {
      {"format", kFormat},
      {"format_version", kCheckpointFormatVersion},
      {"step", state.step},
      {"optimizer_step", opt_state.step},
      {"data_position", state.data_position},
      {"seed", state.seed},
      {"run_config", state.run_config},
      {"model_config", model.config().ToJson()},
      {"heads", HeadsJson(model.heads())},
      {"optimizer", opt.config().ToJson()},
      {"timestamp", UtcTimestamp()},
      {"lamina_version", kLaminaVersion},
  };

  const fs::path final_dir = CheckpointDir(run_dir, state.step);
  const fs::path tmp = final_dir.string() + ".tmp." + std::to_string(::getpid());
  RETURN_IF_ERROR(RemoveTree(tmp));
  fs::create_directory(tmp, ec);
  if (ec) return absl::PermissionDeniedError(absl::StrCat("cannot create ", tmp.string(), ": ", ec.message()));
  // {"format": "pt"} lets Hugging Face tools load the parameters directly.
  RETURN_IF_ERROR(WriteSafetensors((tmp / kModelFile).string(), Entries(layout, "", params), {{"format", "pt"}}));
  RETURN_IF_ERROR(WriteSafetensors((tmp / kOptimizerFile).string(), moments));
  RETURN_IF_ERROR(WriteFileAtomic((tmp / kStateFile).string(), state_json.dump(2) + "\n"));
  RETURN_IF_ERROR(SyncDirectory(tmp.string()));
  RETURN_IF_ERROR(Publish(tmp, final_dir));
  RETURN_IF_ERROR(SyncDirectory(root.string()));

  if (keep_last > 0) {
    const auto complete = CompleteCheckpoints(root.string());
    for (size_t i = static_cast<size_t>(keep_last); i < complete.size(); ++i) {
      if (complete[i].second != final_dir) RETURN_IF_ERROR(RemoveCheckpoint(complete[i].second));
    }
    RETURN_IF_ERROR(SyncDirectory(root.string()));
  }
  return final_dir.string();
}

absl::StatusOr<std::string> LatestCheckpoint(const std::string& run_dir) {
  const auto complete = CompleteCheckpoints(CheckpointsRoot(run_dir));
  if (complete.empty()) return absl::NotFoundError(absl::StrCat("no complete checkpoint in ", CheckpointsRoot(run_dir)));
  return complete.front().second.string();
}

absl::StatusOr<std::string> RunConfigVocab(const nlohmann::json& run_config, const std::string& state_path) {
  const auto data = run_config.is_object() ? run_config.find("data") : run_config.end();
  if (data == run_config.end() || !data->is_object() || !data->contains("vocab") || !(*data)["vocab"].is_string())
    return absl::NotFoundError(absl::StrCat(state_path, ": no run_config.data.vocab; pass --vocab FILE"));
  return (*data)["vocab"].get<std::string>();
}

std::vector<JsonLeafChange> DiffJsonLeaves(const nlohmann::json& before, const nlohmann::json& after) {
  std::map<std::string, std::string> b, a;
  FlattenLeaves(before, "", &b);
  FlattenLeaves(after, "", &a);
  std::set<std::string> keys;
  for (const auto* side : {&b, &a})
    for (const auto& [key, value] : *side) keys.insert(key);
  const auto value_of = [](const std::map<std::string, std::string>& m, const std::string& key) {
    const auto it = m.find(key);
    return it == m.end() ? std::nullopt : std::optional<std::string>(it->second);
  };
  std::vector<JsonLeafChange> changes;
  for (const std::string& key : keys) {
    JsonLeafChange c{key, value_of(b, key), value_of(a, key)};
    if (c.before != c.after) changes.push_back(std::move(c));
  }
  return changes;
}

absl::StatusOr<nlohmann::json> ReadCheckpointState(const std::string& ckpt_dir) {
  const std::string path = (fs::path(ckpt_dir) / kStateFile).string();
  ASSIGN_OR_RETURN(nlohmann::json j, ReadJsonFile(path));
  auto bad = [&](auto&&... parts) { return absl::DataLossError(absl::StrCat(path, ": ", parts...)); };
  if (!j.is_object()) return bad("not a JSON object");
  if (!j.contains("format") || j["format"] != kFormat) return bad("not a lamina checkpoint (\"format\" is not \"", kFormat, "\")");
  if (!j.contains("format_version") || !j["format_version"].is_number_integer() ||
      j["format_version"].get<int64_t>() != kCheckpointFormatVersion)
    return bad("format_version ", j.value("format_version", nlohmann::json()).dump(), " is not supported (this lamina reads ",
               kCheckpointFormatVersion, ")");
  for (const char* key : {"step", "optimizer_step"}) {
    if (!j.contains(key) || !j[key].is_number_integer() || j[key].get<int64_t>() < 0)
      return bad("\"", key, "\" must be a non-negative integer");
  }
  if (!j.contains("seed") || !j["seed"].is_number_unsigned()) return bad("\"seed\" must be a non-negative integer");
  for (const char* key : {"model_config", "heads", "run_config"}) {
    if (!j.contains(key) || !j[key].is_object()) return bad("\"", key, "\" must be an object");
  }
  if (!j.contains("data_position")) return bad("\"data_position\" is missing");
  return j;
}

absl::StatusOr<BertConfig> CheckpointModelConfig(const std::string& ckpt_dir, HeadOptions* heads) {
  ASSIGN_OR_RETURN(nlohmann::json j, ReadCheckpointState(ckpt_dir));
  const std::string path = (fs::path(ckpt_dir) / kStateFile).string();
  auto config = BertConfig::FromJson(j["model_config"]);
  if (!config.ok()) return Annotate(config.status(), path);
  if (heads != nullptr) {
    const nlohmann::json& h = j["heads"];
    if (!h.contains("mlm") || !h["mlm"].is_boolean() || !h.contains("num_labels") || !h["num_labels"].is_number_integer())
      return absl::DataLossError(absl::StrCat(path, ": \"heads\" must be {\"mlm\": bool, \"num_labels\": int}"));
    heads->mlm = h["mlm"].get<bool>();
    heads->num_labels = h["num_labels"].get<int64_t>();
  }
  return config;
}

absl::StatusOr<CheckpointState> LoadCheckpoint(const std::string& ckpt_dir, BertModel* model, Optimizer* opt) {
  ASSIGN_OR_RETURN(nlohmann::json j, ReadCheckpointState(ckpt_dir));
  std::vector<std::string> diffs;
  DiffObjects("model.", j["model_config"], model->config().ToJson(), &diffs);
  DiffObjects("heads.", j["heads"], HeadsJson(model->heads()), &diffs);
  if (!diffs.empty())
    return absl::FailedPreconditionError(absl::StrCat("checkpoint ", ckpt_dir, " was written for another model: ",
                                                      absl::StrJoin(diffs, "; ")));

  const ParamLayout& layout = model->layout();
  std::vector<float> params = model->ParamsToHost();
  {
    ASSIGN_OR_RETURN(SafetensorsFile file, SafetensorsFile::Open((fs::path(ckpt_dir) / kModelFile).string()));
    RETURN_IF_ERROR(ReadFlat(file, layout, {{"", &params}}));
  }
  OptimizerState opt_state;
  if (opt != nullptr) {
    opt_state.m.assign(layout.total(), 0.0f);
    opt_state.v.assign(layout.total(), 0.0f);
    opt_state.step = j["optimizer_step"].get<int64_t>();
    ASSIGN_OR_RETURN(SafetensorsFile file, SafetensorsFile::Open((fs::path(ckpt_dir) / kOptimizerFile).string()));
    RETURN_IF_ERROR(ReadFlat(file, layout, {{"m.", &opt_state.m}, {"v.", &opt_state.v}}));
  }
  RETURN_IF_ERROR(model->LoadParams(params));
  if (opt != nullptr) RETURN_IF_ERROR(opt->LoadState(opt_state));
  CheckpointState state;
  state.step = j["step"].get<int64_t>();
  state.data_position = j["data_position"];
  state.seed = j["seed"].get<uint64_t>();
  state.run_config = j["run_config"];
  return state;
}

}  // namespace lamina
