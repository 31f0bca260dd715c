#include "dist/consistency.h"

#include <set>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "core/status.h"

namespace lamina {
namespace {

std::string Show(const nlohmann::json& value) { return value.dump(); }

std::optional<std::string> Differ(const nlohmann::json& mine, const nlohmann::json& reference,
                                  const std::string& path, absl::string_view mine_name,
                                  absl::string_view reference_name) {
  const std::string where = path.empty() ? "(the whole configuration)" : path;
  if (mine.is_object() && reference.is_object()) {
    std::set<std::string> keys;
    for (const auto& [key, value] : mine.items()) keys.insert(key);
    for (const auto& [key, value] : reference.items()) keys.insert(key);
    for (const std::string& key : keys) {
      const std::string child = path.empty() ? key : absl::StrCat(path, ".", key);
      const bool in_mine = mine.contains(key);
      const bool in_reference = reference.contains(key);
      if (!in_mine || !in_reference) {
        return absl::StrCat(child, ": ", mine_name, " has ", in_mine ? Show(mine[key]) : "no such key", ", ",
                            reference_name, " has ", in_reference ? Show(reference[key]) : "no such key");
      }
      if (auto d = Differ(mine[key], reference[key], child, mine_name, reference_name)) return d;
    }
    return std::nullopt;
  }
  if (mine.is_array() && reference.is_array()) {
    if (mine.size() != reference.size()) {
      return absl::StrCat(where, ": ", mine_name, " has ", mine.size(), " elements, ", reference_name, " has ",
                          reference.size());
    }
    for (size_t i = 0; i < mine.size(); ++i) {
      if (auto d = Differ(mine[i], reference[i], absl::StrCat(path, "[", i, "]"), mine_name, reference_name)) return d;
    }
    return std::nullopt;
  }
  if (mine == reference) return std::nullopt;
  return absl::StrCat(where, ": ", mine_name, " has ", Show(mine), ", ", reference_name, " has ", Show(reference));
}

}  // namespace

std::optional<std::string> FirstDifference(const nlohmann::json& mine, const nlohmann::json& reference,
                                           absl::string_view mine_name, absl::string_view reference_name) {
  return Differ(mine, reference, "", mine_name, reference_name);
}

absl::Status CheckSameEverywhere(Communicator& comm, const nlohmann::json& resolved_config,
                                 absl::string_view manifest_hash) {
  // Every rank compares the text form, so numbers are compared as rank 0 printed them.
  std::string config_text = resolved_config.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
  std::string hash(manifest_hash);
  const nlohmann::json mine = nlohmann::json::parse(config_text);
  RETURN_IF_ERROR(comm.BroadcastString(&config_text, 0));
  RETURN_IF_ERROR(comm.BroadcastString(&hash, 0));

  const std::string mine_name = absl::StrCat("rank ", comm.rank());
  std::optional<std::string> difference;
  if (comm.rank() != 0) {
    difference = FirstDifference(mine, nlohmann::json::parse(config_text), mine_name, "rank 0");
    if (!difference && hash != manifest_hash) {
      difference = absl::StrCat("data manifest hash: ", mine_name, " has ", manifest_hash, ", rank 0 has ", hash);
    }
  }

  // Everyone learns who differs, so all ranks fail together instead of some waiting forever.
  int32_t differs = difference ? 1 : 0;
  std::vector<int32_t> flags(comm.world_size());
  RETURN_IF_ERROR(comm.AllGather(CommBuffer{&differs, 1, DType::kI32, Device::kCpu},
                                 CommBuffer{flags.data(), comm.world_size(), DType::kI32, Device::kCpu}));
  std::vector<int> differing;
  for (int r = 0; r < comm.world_size(); ++r) {
    if (flags[r] != 0) differing.push_back(r);
  }
  if (differing.empty()) return absl::OkStatus();
  std::string first = difference.value_or("");
  RETURN_IF_ERROR(comm.BroadcastString(&first, differing.front()));
  return absl::FailedPreconditionError(absl::StrCat(
      "ranks disagree (rank", differing.size() > 1 ? "s " : " ", absl::StrJoin(differing, ", "),
      differing.size() > 1 ? " differ" : " differs", " from rank 0): ", first));
}

absl::Status AgreeOnStatus(Communicator& comm, const absl::Status& mine) {
  int32_t code = static_cast<int32_t>(mine.code());
  std::vector<int32_t> codes(comm.world_size());
  RETURN_IF_ERROR(comm.AllGather(CommBuffer{&code, 1, DType::kI32, Device::kCpu},
                                 CommBuffer{codes.data(), comm.world_size(), DType::kI32, Device::kCpu}));
  for (int r = 0; r < comm.world_size(); ++r) {
    if (codes[r] == static_cast<int32_t>(absl::StatusCode::kOk)) continue;
    std::string message(mine.message());
    RETURN_IF_ERROR(comm.BroadcastString(&message, r));
    return absl::Status(static_cast<absl::StatusCode>(codes[r]), absl::StrCat("rank ", r, ": ", message));
  }
  return absl::OkStatus();
}

absl::Status BroadcastParameters(Communicator& comm, TensorView flat_params) {
  if (flat_params.dtype != DType::kF32) {
    return absl::InvalidArgumentError(
        absl::StrCat("parameters to broadcast must be f32, not ", DTypeName(flat_params.dtype)));
  }
  return comm.Broadcast(flat_params, 0);
}

}  // namespace lamina
