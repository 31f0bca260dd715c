#include "launch/subcommand.h"

#include <algorithm>
#include <cstdio>

#include "absl/flags/commandlineflag.h"
#include "absl/flags/reflection.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"

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

const std::vector<std::string>& BackendFlags() {
  static const std::vector<std::string> flags = {"device", "attention"};
  return flags;
}
const std::vector<std::string>& LoadModelFlags() {
  static const std::vector<std::string> flags = {"checkpoint", "vocab", "device", "attention"};
  return flags;
}
const std::vector<std::string>& FinetuneFlags() {
  static const std::vector<std::string> flags = {"task",         "data",         "lr",           "epochs", "batch",
                                                 "max_seq",      "seeds",        "seed",         "warmup_ratio",
                                                 "weight_decay", "predict_test", "vocab",        "device", "attention"};
  return flags;
}

std::vector<std::string> FlagNames(std::initializer_list<std::vector<std::string>> lists) {
  std::vector<std::string> names;
  for (const auto& list : lists)
    for (const std::string& n : list)
      if (std::find(names.begin(), names.end(), n) == names.end()) names.push_back(n);
  return names;
}

std::string SubcommandHelp(const Subcommand& cmd) {
  std::string s = absl::StrCat("lamina ", cmd.name, ": ", cmd.summary, "\n\nflags:\n");
  std::vector<std::string> names = cmd.flags;
  std::sort(names.begin(), names.end());
  for (const std::string& name : names) {
    const absl::CommandLineFlag* flag = absl::FindCommandLineFlag(name);
    if (flag == nullptr) {
      absl::StrAppend(&s, "  --", name, "\n");
      continue;
    }
    const std::string def = flag->DefaultValue();
    absl::StrAppend(&s, "  --", name, " (default ", def.empty() ? "\"\"" : def, ")\n      ",
                    flag->Help(), "\n");
  }
  if (names.empty()) absl::StrAppend(&s, "  (none)\n");
  return s;
}

namespace {

// The lamina flags named on a command line, in order ("--noprogress" as "progress"); names that
// are not flags (a negative value, say) or unknown ones (Abseil refuses those) are left out.
std::vector<std::string> NamedFlags(const std::vector<std::string>& args) {
  std::vector<std::string> names;
  for (const std::string& a : args) {
    if (a == "--") break;
    if (a.size() < 2 || a[0] != '-') continue;
    std::string name = a.substr(a[1] == '-' ? 2 : 1);
    name = name.substr(0, name.find('='));
    const absl::CommandLineFlag* flag = absl::FindCommandLineFlag(name);
    if (flag == nullptr && name.rfind("no", 0) == 0) {
      flag = absl::FindCommandLineFlag(name.substr(2));
      if (flag != nullptr && flag->IsOfType<bool>()) name = name.substr(2);
      else flag = nullptr;
    }
    if (flag != nullptr) names.push_back(name);
  }
  return names;
}

std::vector<std::string>& GivenFlags() {
  static std::vector<std::string> given;
  return given;
}

}  // namespace

bool FlagGiven(const std::string& name) {
  return std::find(GivenFlags().begin(), GivenFlags().end(), name) != GivenFlags().end();
}

void RecordGivenFlags(const std::vector<std::string>& args) { GivenFlags() = NamedFlags(args); }

std::string ForeignFlag(const Subcommand& cmd) {
  for (const std::string& name : GivenFlags()) {
    if (std::find(cmd.flags.begin(), cmd.flags.end(), name) != cmd.flags.end()) continue;
    std::vector<std::string> own = cmd.flags;
    std::sort(own.begin(), own.end());
    return absl::StrCat("--", name, " is not a flag of `lamina ", cmd.name, "` (it would be ignored); its flags: ",
                        own.empty() ? "none" : absl::StrCat("--", absl::StrJoin(own, ", --")), " (lamina ", cmd.name,
                        " --help)");
  }
  return "";
}

int ReportError(const std::string& subcommand, const std::string& message) {
  std::fprintf(stderr, "lamina %s: %s\n", subcommand.c_str(), message.c_str());
  return 1;
}

}  // namespace lamina
