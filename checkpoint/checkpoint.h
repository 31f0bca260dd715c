// Training checkpoints: RUN_DIR/checkpoints/step_00001234/ holds
//   model.safetensors      f32 parameters by their Hugging Face names (ParamLayout order)
//   optimizer.safetensors  f32 moments "m.<param name>" and "v.<param name>"
//   state.json             {"format": "lamina-checkpoint", "format_version", "step", "optimizer_step",
//                           "data_position", "seed", "run_config", "model_config", "heads",
//                           "optimizer", "timestamp", "lamina_version"}
//
// Crash safety: a checkpoint is written into checkpoints/step_N.tmp.PID, every file and the
// directory are fsynced, and only then is it renamed to step_N (the parent fsynced after). Readers
// only look at names matching step_<digits> that hold all three files, so a kill -9 at any moment
// leaves every earlier checkpoint loadable; the next save removes the leftover temporary directory.
// Saving a step that already exists swaps the directories atomically (renameat2 RENAME_EXCHANGE)
// where the file system allows it; elsewhere the old one is renamed away first, and a crash in that
// short window leaves the older checkpoints as the newest complete one.
//
// One process saves into a run directory at a time (rank 0 in distributed runs).
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "model/bert.h"
#include "model/config.h"
#include "model/optimizer.h"
#include "nlohmann/json.hpp"

namespace lamina {

inline constexpr int kCheckpointFormatVersion = 1;
// Recorded in state.json for provenance.
inline constexpr char kLaminaVersion[] = "0.1.0";

// What the training loop owns and gets back on resume. The model's parameters, the moments and
// the optimizer's step count come from (and go back to) the model and optimizer themselves.
struct CheckpointState {
  int64_t step = 0;                                   // training steps completed
  nlohmann::json data_position = nlohmann::json::object();  // opaque to checkpoints: the loader's cursor
  uint64_t seed = 0;                                  // the run's RNG seed
  nlohmann::json run_config = nlohmann::json::object();     // the resolved run config
};

// "RUN_DIR/checkpoints/step_00001234".
std::string CheckpointDir(const std::string& run_dir, int64_t step);

// Writes the checkpoint of `state.step` and then deletes all but the newest `keep_last` complete
// checkpoints (keep_last <= 0 keeps them all). Returns the checkpoint's directory.
absl::StatusOr<std::string> SaveCheckpoint(const std::string& run_dir, const BertModel& model, const Optimizer& opt,
                                           const CheckpointState& state, int keep_last);

// The newest complete checkpoint of the run (by step); NotFound when there is none.
absl::StatusOr<std::string> LatestCheckpoint(const std::string& run_dir);

// Restores parameters (and the compute copy) and, when `opt` is not null, the moments and the
// optimizer step. Refuses a checkpoint whose model config or heads differ from the model's (the
// error names each differing key) or whose tensors do not match the model's layout. Everything
// is checked before anything is changed: on error the model and optimizer are untouched.
absl::StatusOr<CheckpointState> LoadCheckpoint(const std::string& ckpt_dir, BertModel* model, Optimizer* opt);

// The leaves of two JSON objects (nested objects flattened to dotted keys) whose values differ,
// by key; a side without the key has no value. What a checkpoint's recorded configs are checked
// against the present ones with (LoadCheckpoint here, the resume check in pretrain/).
struct JsonLeafChange {
  std::string key;
  std::optional<std::string> before, after;  // each value's JSON text
};
std::vector<JsonLeafChange> DiffJsonLeaves(const nlohmann::json& before, const nlohmann::json& after);

// state.json of a checkpoint, checked for format and version (tools read the model config here).
absl::StatusOr<nlohmann::json> ReadCheckpointState(const std::string& ckpt_dir);
// The vocabulary file of the run that wrote a checkpoint: run_config.data.vocab of its state
// (`state_path` names the file in the error when there is none).
absl::StatusOr<std::string> RunConfigVocab(const nlohmann::json& run_config, const std::string& state_path);
// The model config and heads a checkpoint was written with, to build a model that can load it.
absl::StatusOr<BertConfig> CheckpointModelConfig(const std::string& ckpt_dir, HeadOptions* heads = nullptr);

}  // namespace lamina
