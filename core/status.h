// absl::Status helpers used across lamina.
#pragma once

#include <utility>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/string_view.h"

#define LAMINA_CONCAT_INNER(a, b) a##b
#define LAMINA_CONCAT(a, b) LAMINA_CONCAT_INNER(a, b)

// Returns from the enclosing function when `expr` (an absl::Status) is not OK.
#define RETURN_IF_ERROR(expr)                      \
  do {                                             \
    ::absl::Status _lamina_status = (expr);        \
    if (!_lamina_status.ok()) return _lamina_status; \
  } while (0)

// `ASSIGN_OR_RETURN(auto x, F());` declares x from an absl::StatusOr or returns its error.
#define ASSIGN_OR_RETURN(lhs, expr) ASSIGN_OR_RETURN_IMPL(LAMINA_CONCAT(_lamina_or_, __COUNTER__), lhs, expr)
#define ASSIGN_OR_RETURN_IMPL(tmp, lhs, expr) \
  auto tmp = (expr);                          \
  if (!tmp.ok()) return tmp.status();         \
  lhs = std::move(tmp).value()

namespace lamina {

// Prefixes an error with where it happened ("reading config.json: ...").
inline absl::Status Annotate(const absl::Status& s, absl::string_view where) {
  if (s.ok()) return s;
  return absl::Status(s.code(), absl::StrCat(where, ": ", s.message()));
}

// Aborts with a message when an invariant that only a bug can break does not hold.
[[noreturn]] void Fatal(absl::string_view file, int line, absl::string_view message);

}  // namespace lamina

// For programming errors (shape mismatches between internal calls), not for user input.
#define LAMINA_CHECK(cond, ...)                                                         \
  do {                                                                                  \
    if (!(cond)) ::lamina::Fatal(__FILE__, __LINE__, ::absl::StrCat("check failed: " #cond " " __VA_OPT__(, ) __VA_ARGS__)); \
  } while (0)
