// Building a model from a checkpoint for evaluation and inference (evaluate, fill-mask,
// finetuning's starting point).
#pragma once

#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "model/backend.h"
#include "model/bert.h"
#include "nlohmann/json.hpp"

namespace lamina {

struct LoadedModel {
  std::string checkpoint;      // the checkpoint directory read
  nlohmann::json run_config;   // the resolved config of the run that wrote it
  std::unique_ptr<Backend> backend;
  std::unique_ptr<BertModel> model;
};

// `path` is a checkpoint directory, or a run directory whose newest checkpoint is taken.
absl::StatusOr<std::string> ResolveCheckpoint(const std::string& path);

// Reads the checkpoint's model config, builds the model on `device` (cpu, cuda, auto) with the
// given heads and loads its parameters (heads the checkpoint lacks keep their initialisation
// from `init_seed`).
absl::StatusOr<LoadedModel> LoadModel(const std::string& path, const std::string& device, const HeadOptions& heads,
                                      uint64_t init_seed = 1, const BackendOptions& backend_options = {});

}  // namespace lamina
