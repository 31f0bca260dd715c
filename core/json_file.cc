#include "core/json_file.h"

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "core/file_util.h"
#include "core/status.h"

namespace lamina {

absl::StatusOr<nlohmann::json> ParseJson(absl::string_view text, absl::string_view name) {
  try {
    return nlohmann::json::parse(text.begin(), text.end());
  } catch (const nlohmann::json::parse_error& e) {
    // what() starts "[json.exception.parse_error.101] parse error at line 3, column 14: ...".
    absl::string_view reason = e.what();
    if (const size_t end = reason.find("] "); absl::StartsWith(reason, "[json.exception") && end != reason.npos)
      reason.remove_prefix(end + 2);
    return absl::InvalidArgumentError(absl::StrCat(name, ": not valid JSON: ", reason));
  }
}

absl::StatusOr<nlohmann::json> ReadJsonFile(const std::string& path) {
  ASSIGN_OR_RETURN(const std::string text, ReadFile(path));
  return ParseJson(text, path);
}

}  // namespace lamina
