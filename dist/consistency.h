// Making sure every rank starts the same run: the same resolved configuration and data
// manifest, and the same initial parameters.
#pragma once

#include <optional>
#include <string>

#include "absl/status/status.h"
#include "absl/strings/string_view.h"
#include "core/tensor.h"
#include "dist/communicator.h"
#include "nlohmann/json.hpp"

namespace lamina {

// The first place, in key order, where `mine` differs from `reference`, as
// "optimizer.lr: <mine_name> has 0.001, <reference_name> has 0.002" (array elements as
// "schedule[2]", a missing key as "has no such key"); nullopt when they are equal.
std::optional<std::string> FirstDifference(const nlohmann::json& mine, const nlohmann::json& reference,
                                           absl::string_view mine_name, absl::string_view reference_name);

// Rank 0 broadcasts its resolved configuration and manifest hash; every rank compares them with
// its own. All ranks return the same result (the failure flags are gathered), so none goes on
// alone: OK everywhere, or everywhere an error naming the ranks that differ and the first
// difference of the lowest such rank, e.g.
//   "ranks disagree (rank 1 differs from rank 0): optimizer.lr: rank 1 has 0.001, rank 0 has 0.002"
absl::Status CheckSameEverywhere(Communicator& comm, const nlohmann::json& resolved_config,
                                 absl::string_view manifest_hash);

// Makes a per-rank check collective: OK on every rank when `mine` is OK on every rank; else, on
// every rank, the error of the lowest failing rank with its code and "rank R: " before its
// message. For checks whose outcome may differ between ranks (the GPUs each one sees) and after
// which the ranks must take the same path.
absl::Status AgreeOnStatus(Communicator& comm, const absl::Status& mine);

// Copies rank 0's flat f32 parameters (host or device) to every rank, so all replicas start
// identical whatever each rank initialised.
absl::Status BroadcastParameters(Communicator& comm, TensorView flat_params);

}  // namespace lamina
