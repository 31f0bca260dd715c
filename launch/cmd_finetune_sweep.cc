// `lamina finetune-sweep --run RUN_DIR --task mrpc|rte --data GLUE_DIR [finetune flags]` (or --config FILE
// with a finetune section, as `lamina finetune`): finetunes
// every checkpoint of a pretraining run and writes the dev metrics against the pretraining step
// (OUT/sweep.json, OUT/sweep.tsv; OUT defaults to RUN_DIR/finetune/<task>).
#include <cstdio>

#include "absl/flags/flag.h"
#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "finetune/job.h"
#include "launch/common_flags.h"
#include "launch/finetune_flags.h"
#include "launch/subcommand.h"

ABSL_FLAG(std::string, run, "", "finetune-sweep: the pretraining run directory whose checkpoints/step_* are finetuned");

namespace lamina {
namespace {

// The keys of its --config's finetune section: its flags less --config and --set.
const std::vector<std::string>& SweepConfigKeys() {
  static const std::vector<std::string> keys = FlagNames({{"run", "out"}, FinetuneFlags()});
  return keys;
}

int RunFinetuneSweepCommand(const std::vector<std::string>& args) {
  if (!args.empty()) return ReportError("finetune-sweep", "takes no positional arguments");
  auto section = ApplyFinetuneConfig(SweepConfigKeys());
  if (!section.ok()) return ReportError("finetune-sweep", std::string(section.status().message()));
  auto job = FinetuneJobFromFlags();
  if (!job.ok()) return ReportError("finetune-sweep", std::string(job.status().message()));
  const std::string run_dir = absl::GetFlag(FLAGS_run);
  if (run_dir.empty()) return ReportError("finetune-sweep", "--run RUN_DIR is required");
  job->out_dir = absl::GetFlag(FLAGS_out);
  if (job->out_dir.empty())
    job->out_dir = absl::StrCat(run_dir, "/finetune/", absl::AsciiStrToLower(GlueTaskName(job->config.task)));
  (*section)["out"] = job->out_dir;
  if (absl::Status s = WriteFinetuneConfig(job->out_dir, *section); !s.ok())
    return ReportError("finetune-sweep", std::string(s.message()));
  auto sweep = RunFinetuneSweep(run_dir, *job, [](const std::string& line) { std::fprintf(stderr, "%s\n", line.c_str()); });
  if (!sweep.ok()) return ReportError("finetune-sweep", std::string(sweep.status().message()));
  std::printf("step\tbest_lr\tmedian score\n");
  for (const auto& p : (*sweep)["points"]) {
    const auto& f = p["final"];
    const auto& s = f.contains("score") ? f["score"] : f["accuracy"];
    std::printf("%lld\t%s\t%.4f\n", static_cast<long long>(p["step"].get<int64_t>()), p["best_lr"].dump().c_str(),
                s["median"].get<double>());
  }
  std::printf("sweep: %s/sweep.json, %s/sweep.tsv\n", job->out_dir.c_str(), job->out_dir.c_str());
  return 0;
}

}  // namespace
}  // namespace lamina

LAMINA_SUBCOMMAND("finetune-sweep", "finetune every checkpoint of a pretraining run (metric against step)",
                  lamina::RunFinetuneSweepCommand,
                  lamina::FlagNames({{"config", "set"}, lamina::SweepConfigKeys()}));
