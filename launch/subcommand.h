// Registration of `lamina` subcommands: a cmd_*.cc file defines one with
//   LAMINA_SUBCOMMAND(name, "one-line summary", RunFunction, FlagNames({{"config", "out"}, BackendFlags()}));
// where RunFunction(const std::vector<std::string>& positional_args) returns the exit code and the
// last argument names every flag it reads (its own and the shared ones): `lamina NAME --help`
// lists exactly those, and any other flag on its command line is an error.
#pragma once

#include <functional>
#include <initializer_list>
#include <string>
#include <vector>

namespace lamina {

struct Subcommand {
  std::string name;
  std::string summary;
  std::function<int(const std::vector<std::string>&)> run;
  std::vector<std::string> flags;  // the flags it reads, without dashes
};

// The flags of the shared helpers in common_flags.h and finetune_flags.h, to add to a
// subcommand's own with FlagNames.
// (Functions, not globals: subcommands register during static initialisation.)
const std::vector<std::string>& BackendFlags();    // BackendFromFlags, AddBackendOverrides
const std::vector<std::string>& LoadModelFlags();  // LoadModelFromFlags, TokenizerFromFlags
const std::vector<std::string>& FinetuneFlags();   // FinetuneJobFromFlags
// The union of the lists, in order, without repeats.
std::vector<std::string> FlagNames(std::initializer_list<std::vector<std::string>> lists);

const std::vector<Subcommand>& Subcommands();
const Subcommand* FindSubcommand(const std::string& name);
bool RegisterSubcommand(Subcommand cmd);

// Prints "lamina NAME: message" to stderr and returns exit code 1; for errors a user can fix.
int ReportError(const std::string& subcommand, const std::string& message);

// The flags named on this command line (`args`, after the subcommand's name), recorded by main
// before the subcommand runs: what a config file may not override. Names that are not lamina
// flags (a negative value, say, or a typo, which Abseil refuses) are left out.
void RecordGivenFlags(const std::vector<std::string>& args);
bool FlagGiven(const std::string& name);

// `lamina NAME --help`: the summary and each of the subcommand's flags with its default and help.
std::string SubcommandHelp(const Subcommand& cmd);
// The first recorded flag (RecordGivenFlags) that is not one of `cmd`'s, as an error message naming
// it and the subcommand's flags; empty when there is none.
std::string ForeignFlag(const Subcommand& cmd);
}  // namespace lamina

#define LAMINA_SUBCOMMAND_JOIN2(a, b) a##b
#define LAMINA_SUBCOMMAND_JOIN(a, b) LAMINA_SUBCOMMAND_JOIN2(a, b)
#define LAMINA_SUBCOMMAND(name, summary, fn, flags)                                   \
  static const bool LAMINA_SUBCOMMAND_JOIN(lamina_registered_subcommand_, __LINE__) = \
      ::lamina::RegisterSubcommand({name, summary, fn, flags})
