// What changed between the resolved config a checkpoint was written with and the one a resumed
// run is given. A change that alters the trajectory (the learning rate schedule, the data order
// or masking, the batch, the optimizer, the seed) would silently make the resumed run a different
// experiment from the one its first steps belong to, so resuming refuses it unless the user names
// the key (`--allow_config_change`); every other change (logging, evaluation, checkpointing,
// device, kernels) is printed and accepted.
#pragma once

#include <string>
#include <vector>

#include "absl/status/status.h"
#include "nlohmann/json.hpp"

namespace lamina {

struct ConfigChange {
  std::string key;      // dotted, e.g. "schedule.total_steps"
  std::string before;   // the value's JSON text in the checkpoint's config ("(absent)" when missing)
  std::string after;    // and in the given config
  bool trajectory = false;  // changes the schedule, the data order or the update rule
};

// The leaves of the two configs that differ, by key.
std::vector<ConfigChange> DiffResolvedConfigs(const nlohmann::json& checkpoint_config, const nlohmann::json& config);

// OK when every trajectory-changing change is named in `allowed` (keys, or section names such as
// "schedule" for all its keys); otherwise an error naming each refused change with both values.
absl::Status CheckResumeConfigChanges(const std::vector<ConfigChange>& changes, const std::vector<std::string>& allowed,
                                      const std::string& checkpoint);

}  // namespace lamina
