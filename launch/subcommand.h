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

#define LAMINA_SUBCOMMAND(name, summary, fn) \
  static const bool lamina_registered_##fn = ::lamina::RegisterSubcommand({name, summary, fn})
