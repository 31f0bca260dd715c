// `lamina finetune --task mrpc|rte --checkpoint DIR --data GLUE_DIR [--lr 2e-5,3e-5] [--seeds N] [--out DIR]`,
// or `lamina finetune --config FILE [--set finetune.KEY=VALUE] [flags]` (the flags' names as keys):
// finetunes a pretrained checkpoint on a GLUE pair task for every learning rate and seed and
// reports the dev metrics with their statistics over seeds (finetune/finetune.h).
#include <cstdio>

#include "absl/flags/flag.h"
#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "finetune/job.h"
#include "launch/common_flags.h"
#include "launch/finetune_flags.h"
#include "launch/subcommand.h"
#include "checkpoint/load_model.h"

namespace lamina {
namespace {

// The keys of its --config's finetune section: its flags less --config and --set.
const std::vector<std::string>& FinetuneConfigKeys() {
  static const std::vector<std::string> keys = FlagNames({{"checkpoint", "out"}, FinetuneFlags()});
  return keys;
}

int RunFinetune(const std::vector<std::string>& args) {
  if (!args.empty()) return ReportError("finetune", "takes no positional arguments");
  auto section = ApplyFinetuneConfig(FinetuneConfigKeys());
  if (!section.ok()) return ReportError("finetune", std::string(section.status().message()));
  auto job = FinetuneJobFromFlags();
  if (!job.ok()) return ReportError("finetune", std::string(job.status().message()));
  job->checkpoint = absl::GetFlag(FLAGS_checkpoint);
  if (job->checkpoint.empty()) return ReportError("finetune", "--checkpoint DIR is required (a checkpoint or run directory)");
  auto resolved = ResolveCheckpoint(job->checkpoint);
  if (!resolved.ok()) return ReportError("finetune", std::string(resolved.status().message()));
  job->out_dir = absl::GetFlag(FLAGS_out);
  if (job->out_dir.empty())
    job->out_dir = absl::StrCat(*resolved, "/finetune-", absl::AsciiStrToLower(GlueTaskName(job->config.task)));
  (*section)["out"] = job->out_dir;
  if (absl::Status s = WriteFinetuneConfig(job->out_dir, *section); !s.ok())
    return ReportError("finetune", std::string(s.message()));
  auto report = RunFinetuneJob(*job, [](const std::string& line) { std::fprintf(stderr, "%s\n", line.c_str()); });
  if (!report.ok()) return ReportError("finetune", std::string(report.status().message()));
  std::printf("%s", report->Table().c_str());
  std::printf("results: %s/results.json\n", job->out_dir.c_str());
  return 0;
}

}  // namespace
}  // namespace lamina

LAMINA_SUBCOMMAND("finetune", "finetune a checkpoint on GLUE MRPC or RTE over learning rates and seeds",
                  lamina::RunFinetune,
                  lamina::FlagNames({{"config", "set"}, lamina::FinetuneConfigKeys()}));
