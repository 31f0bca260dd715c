#include "checkpoint/load_model.h"

#include <filesystem>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "core/safetensors.h"
#include "core/status.h"
#include "checkpoint/checkpoint.h"

namespace lamina {

absl::StatusOr<std::string> ResolveCheckpoint(const std::string& path) {
  namespace fs = std::filesystem;
  if (fs::exists(fs::path(path) / "state.json")) return path;
  if (fs::is_directory(fs::path(path) / "checkpoints")) {
    auto latest = LatestCheckpoint(path);
    if (!latest.ok()) return Annotate(latest.status(), path);
    return latest;
  }
  return absl::NotFoundError(
      absl::StrCat(path, ": neither a checkpoint (no state.json) nor a run directory (no checkpoints/)"));
}

absl::StatusOr<LoadedModel> LoadModel(const std::string& path, const std::string& device, const HeadOptions& heads,
                                      uint64_t init_seed, const BackendOptions& backend_options) {
  LoadedModel m;
  ASSIGN_OR_RETURN(m.checkpoint, ResolveCheckpoint(path));
  ASSIGN_OR_RETURN(nlohmann::json state, ReadCheckpointState(m.checkpoint));
  if (!state.contains("run_config") || !state["run_config"].contains("model"))
    return absl::DataLossError(absl::StrCat(m.checkpoint, "/state.json: no run_config.model"));
  m.run_config = state["run_config"];
  auto config = BertConfig::FromJson(m.run_config["model"]);
  if (!config.ok()) return Annotate(config.status(), absl::StrCat(m.checkpoint, "/state.json"));
  ASSIGN_OR_RETURN(m.backend, MakeBackend(device, backend_options));
  ASSIGN_OR_RETURN(m.model, BertModel::Create(*config, heads, m.backend.get()));
  m.model->Initialize(init_seed);

  // Parameters by name: every tensor of the encoder must be there; heads the checkpoint does not
  // have (a classifier on top of a pretrained encoder) keep their initialisation.
  const std::string file = m.checkpoint + "/model.safetensors";
  ASSIGN_OR_RETURN(SafetensorsFile st, SafetensorsFile::Open(file));
  std::vector<float> host = m.model->ParamsToHost();
  for (const ParamInfo& p : m.model->layout().params()) {
    auto t = st.Find(p.name);
    if (!t.ok()) {
      const bool optional_head = absl::StartsWith(p.name, "bert.pooler.") || absl::StartsWith(p.name, "classifier.");
      if (optional_head) continue;
      return absl::NotFoundError(absl::StrCat(file, ": no tensor ", p.name, " (a checkpoint of another model?)"));
    }
    int64_t numel = 1;
    for (int64_t d : (*t)->shape) numel *= d;
    if (numel != p.numel() || static_cast<int>((*t)->shape.size()) != p.shape.rank())
      return absl::InvalidArgumentError(absl::StrCat(file, ": ", p.name, " has the wrong shape for ", p.shape.ToString()));
    RETURN_IF_ERROR(st.ReadFloatsInto(**t, std::span<float>(host.data() + p.offset, p.numel())));
  }
  RETURN_IF_ERROR(m.model->LoadParams(host));
  return m;
}

}  // namespace lamina
