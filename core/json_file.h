// JSON documents read from text or files, with errors that say where: the file, and the line,
// column and reason of a syntax error (nlohmann's parse error).
#pragma once

#include <string>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "nlohmann/json.hpp"

namespace lamina {

// Parses `text`; a syntax error is "NAME: not valid JSON: parse error at line L, column C: ...".
absl::StatusOr<nlohmann::json> ParseJson(absl::string_view text, absl::string_view name);

// ReadFile(path), then ParseJson named by the path.
absl::StatusOr<nlohmann::json> ReadJsonFile(const std::string& path);

}  // namespace lamina
