#include "core/status.h"

#include <cstdio>
#include <cstdlib>

namespace lamina {

void Fatal(absl::string_view file, int line, absl::string_view message) {
  std::fprintf(stderr, "lamina: internal error at %.*s:%d: %.*s\n", static_cast<int>(file.size()), file.data(), line,
               static_cast<int>(message.size()), message.data());
  std::fflush(stderr);
  std::abort();
}

}  // namespace lamina
