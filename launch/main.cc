// The `lamina` executable: `lamina SUBCOMMAND [flags...]`. Each subcommand lives in its own
// cmd_*.cc and registers itself with the flags it reads; `lamina --help` lists the subcommands,
// `lamina SUBCOMMAND --help` that subcommand's flags, and a flag of another subcommand is an error.
#include <cstdio>
#include <cstring>
#include <string>
#include <vector>

#include "absl/flags/parse.h"
#include "absl/flags/usage.h"
#include "absl/strings/str_cat.h"
#include "absl/flags/flag.h"
#include "launch/common_flags.h"
#include "launch/subcommand.h"

namespace lamina {
namespace {

std::string Overview() {
  std::string s =
      "BERT-style masked-LM pretraining and GLUE finetuning (Post-LN, Pre-LN, T-Fixup).\n\n"
      "usage: lamina SUBCOMMAND [--flag=value ...] [args ...]\n\nsubcommands:\n";
  for (const Subcommand& c : Subcommands()) absl::StrAppend(&s, "  ", c.name, std::string(18 - std::min<size_t>(17, c.name.size()), ' '), c.summary, "\n");
  absl::StrAppend(&s, "\n`lamina SUBCOMMAND --help` lists the subcommand's flags with their defaults.");
  return s;
}

}  // namespace
}  // namespace lamina

int main(int argc, char** argv) {
  using namespace lamina;
  absl::SetProgramUsageMessage(Overview());
  if (argc < 2 || std::strcmp(argv[1], "--help") == 0 || std::strcmp(argv[1], "-h") == 0 ||
      std::strcmp(argv[1], "help") == 0 || std::strcmp(argv[1], "--helpfull") == 0) {
    std::fprintf(stderr, "%s\n", Overview().c_str());
    return argc < 2 ? 2 : 0;
  }
  // Two-word subcommands ("bench train") take precedence over one-word ones.
  int consumed = 1;
  const Subcommand* cmd = nullptr;
  if (argc >= 3) cmd = FindSubcommand(std::string(argv[1]) + " " + argv[2]);
  if (cmd != nullptr) {
    consumed = 2;
  } else {
    cmd = FindSubcommand(argv[1]);
  }
  if (cmd == nullptr) {
    std::fprintf(stderr, "lamina: unknown subcommand '%s'\n\n%s\n", argv[1], Overview().c_str());
    return 2;
  }
  const std::vector<std::string> words(argv + 1 + consumed, argv + argc);
  for (const std::string& w : words) {
    if (w == "--") break;
    if (w == "--help" || w == "-help" || w == "-h" || w == "--helpfull" || w == "--helpshort") {
      std::printf("%s", SubcommandHelp(*cmd).c_str());
      return 0;
    }
  }
  RecordGivenFlags(words);
  if (const std::string foreign = ForeignFlag(*cmd); !foreign.empty()) {
    std::fprintf(stderr, "lamina %s: %s\n", cmd->name.c_str(), foreign.c_str());
    return 2;
  }
  // Parse flags with the subcommand name removed; what remains are positional arguments.
  // `--set key=value` may repeat (and values may hold commas), so its occurrences are collected
  // here rather than by Abseil, which keeps only the last.
  std::vector<char*> args = {argv[0]};
  std::vector<std::string> overrides;
  for (int i = 1 + consumed; i < argc; ++i) {
    const std::string a = argv[i];
    if ((a == "--set" || a == "-set") && i + 1 < argc) {
      overrides.push_back(argv[++i]);
    } else if (a.rfind("--set=", 0) == 0 || a.rfind("-set=", 0) == 0) {
      overrides.push_back(a.substr(a.find('=') + 1));
    } else {
      args.push_back(argv[i]);
    }
  }
  std::vector<char*> rest = absl::ParseCommandLine(static_cast<int>(args.size()), args.data());
  absl::SetFlag(&FLAGS_set, overrides);
  std::vector<std::string> positional(rest.begin() + 1, rest.end());
  return cmd->run(positional);
}
