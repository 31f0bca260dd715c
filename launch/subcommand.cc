#include "launch/subcommand.h"

#include <algorithm>
#include <cstdio>

namespace lamina {
namespace {
std::vector<Subcommand>& Registry() {
  static std::vector<Subcommand> registry;
  return registry;
}
}  // namespace

const std::vector<Subcommand>& Subcommands() {
  std::sort(Registry().begin(), Registry().end(), [](const Subcommand& a, const Subcommand& b) { return a.name < b.name; });
  return Registry();
}

const Subcommand* FindSubcommand(const std::string& name) {
  for (const Subcommand& c : Registry())
    if (c.name == name) return &c;
  return nullptr;
}

bool RegisterSubcommand(Subcommand cmd) {
  Registry().push_back(std::move(cmd));
  return true;
}

int ReportError(const std::string& subcommand, const std::string& message) {
  std::fprintf(stderr, "lamina %s: %s\n", subcommand.c_str(), message.c_str());
  return 1;
}

}  // namespace lamina
