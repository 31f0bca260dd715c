// Registration of `lamina` subcommands: a cmd_*.cc file defines one with
//   LAMINA_SUBCOMMAND(name, "one-line summary", RunFunction);
// where RunFunction(const std::vector<std::string>& positional_args) returns the exit code.
#pragma once

#include <functional>
#include <string>
#include <vector>

namespace lamina {

struct Subcommand {
  std::string name;
  std::string summary;
  std::function<int(const std::vector<std::string>&)> run;
};

const std::vector<Subcommand>& Subcommands();
const Subcommand* FindSubcommand(const std::string& name);
bool RegisterSubcommand(Subcommand cmd);

// Prints "lamina NAME: message" to stderr and returns exit code 1; for errors a user can fix.
int ReportError(const std::string& subcommand, const std::string& message);

}  // namespace lamina

#define LAMINA_SUBCOMMAND_JOIN2(a, b) a##b
#define LAMINA_SUBCOMMAND_JOIN(a, b) LAMINA_SUBCOMMAND_JOIN2(a, b)
#define LAMINA_SUBCOMMAND(name, summary, fn)                                          \
  static const bool LAMINA_SUBCOMMAND_JOIN(lamina_registered_subcommand_, __LINE__) = \
      ::lamina::RegisterSubcommand({name, summary, fn})
