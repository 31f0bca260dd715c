// File helpers: whole-file reads and crash-safe writes (temporary name, fsync, rename).
#pragma once

#include <string>
#include <string_view>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace lamina {

absl::StatusOr<std::string> ReadFile(const std::string& path);

// Writes `contents` to `path` atomically: a reader sees the old file or the new one, never a
// partial write, and a crash leaves the old file in place.
absl::Status WriteFileAtomic(const std::string& path, std::string_view contents);

// fsyncs a directory so that renames inside it are durable.
absl::Status SyncDirectory(const std::string& dir);

}  // namespace lamina
