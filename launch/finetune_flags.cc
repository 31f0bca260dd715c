#include "launch/finetune_flags.h"

#include <vector>

#include "absl/flags/flag.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "core/status.h"
#include "launch/common_flags.h"

ABSL_FLAG(std::string, task, "", "finetune: GLUE task, mrpc or rte");
ABSL_FLAG(std::string, lr, "2e-5,3e-5,5e-5", "finetune: peak learning rates, comma-separated; each is run with every seed");
ABSL_FLAG(int64_t, epochs, 3, "finetune: epochs over the training set");
ABSL_FLAG(int64_t, batch, 32, "finetune: examples per optimizer step");
ABSL_FLAG(int64_t, max_seq, 128, "finetune: longest [CLS] a [SEP] b [SEP] in tokens; longer pairs are cut longest-first");
ABSL_FLAG(int64_t, seeds, 1, "finetune: runs per learning rate, with seeds --seed, --seed+1, ...; grad-norms: initialisations (and batch orders) "
          "per depth, with seeds run.seed, run.seed+1, ...");
ABSL_FLAG(uint64_t, seed, 1, "finetune: the first seed (classifier init, shuffling, dropout)");
ABSL_FLAG(double, warmup_ratio, 0.1, "finetune: fraction of the updates over which the learning rate warms up linearly");
ABSL_FLAG(bool, predict_test, true,
          "finetune: after each run's last epoch, predict the test split (the GLUE submission file of the best run); "
          "--predict_test=false saves that time where only dev metrics matter");
ABSL_FLAG(double, weight_decay, 0.01, "finetune: AdamW decoupled weight decay (never on biases and LayerNorm)");

namespace lamina {

absl::StatusOr<FinetuneJob> FinetuneJobFromFlags() {
  FinetuneJob job;
  const std::string task = absl::GetFlag(FLAGS_task);
  if (task.empty()) return absl::InvalidArgumentError("--task mrpc|rte is required");
  ASSIGN_OR_RETURN(job.config.task, ParseGlueTask(task));
  job.glue_dir = absl::GetFlag(FLAGS_data);
  if (job.glue_dir.empty()) return absl::InvalidArgumentError("--data GLUE_DIR is required (it holds MRPC/ and RTE/)");
  job.config.learning_rates.clear();
  for (absl::string_view part : absl::StrSplit(absl::GetFlag(FLAGS_lr), ',', absl::SkipWhitespace())) {
    double lr;
    if (!absl::SimpleAtod(absl::StripAsciiWhitespace(part), &lr))
      return absl::InvalidArgumentError(absl::StrCat("--lr: '", part, "' is not a number"));
    job.config.learning_rates.push_back(lr);
  }
  job.config.epochs = absl::GetFlag(FLAGS_epochs);
  job.config.batch = absl::GetFlag(FLAGS_batch);
  job.config.max_seq = absl::GetFlag(FLAGS_max_seq);
  job.config.seeds = absl::GetFlag(FLAGS_seeds);
  job.config.first_seed = absl::GetFlag(FLAGS_seed);
  job.config.warmup_ratio = absl::GetFlag(FLAGS_warmup_ratio);
  job.config.optimizer.weight_decay = static_cast<float>(absl::GetFlag(FLAGS_weight_decay));
  job.config.predict_test = absl::GetFlag(FLAGS_predict_test);
  RETURN_IF_ERROR(job.config.Validate());
  ASSIGN_OR_RETURN(const BackendChoice backend, BackendFromFlags());
  job.device = backend.device;
  job.backend = backend.options;
  job.vocab = absl::GetFlag(FLAGS_vocab);
  return job;
}

}  // namespace lamina
