// `lamina evaluate`: validation MLM loss, perplexity and accuracy of a checkpoint.
#include <cstdio>

#include "absl/flags/flag.h"
#include "absl/strings/str_cat.h"
#include "data/dataset.h"
#include "data/loader.h"
#include "data/wordpiece.h"
#include "launch/common_flags.h"
#include "launch/subcommand.h"
#include "pretrain/evaluate.h"
#include "checkpoint/load_model.h"

ABSL_FLAG(int64_t, eval_batch, 64, "evaluate: sequences per forward pass");
ABSL_FLAG(int64_t, max_batches, 0, "evaluate: evaluate at most this many batches (0 = the whole validation split)");

namespace lamina {
namespace {

int RunEvaluate(const std::vector<std::string>& args) {
  const std::string cmd = "evaluate";
  if (!args.empty()) return ReportError(cmd, absl::StrCat("unexpected argument '", args[0], "'"));
  if (absl::GetFlag(FLAGS_checkpoint).empty()) return ReportError(cmd, "--checkpoint DIR is required");
  if (absl::GetFlag(FLAGS_data).empty()) return ReportError(cmd, "--data DATASET_DIR is required");
  if (absl::GetFlag(FLAGS_eval_batch) <= 0) return ReportError(cmd, "--eval_batch must be positive");
  if (absl::GetFlag(FLAGS_max_batches) < 0)
    return ReportError(cmd, absl::StrCat("--max_batches must be 0 (the whole validation split) or positive, got ",
                                         absl::GetFlag(FLAGS_max_batches)));
  auto loaded = LoadModelFromFlags();
  if (!loaded.ok()) return ReportError(cmd, std::string(loaded.status().message()));
  auto tokenizer = TokenizerFromFlags(*loaded);
  if (!tokenizer.ok()) return ReportError(cmd, std::string(tokenizer.status().message()));
  auto dataset = MlmDataset::Open(absl::GetFlag(FLAGS_data), DatasetOptions::ForVocab(*tokenizer));
  if (!dataset.ok()) return ReportError(cmd, std::string(dataset.status().message()));
  MaskingConfig masking;
  masking.mask_prob = loaded->run_config["data"].value("mask_prob", masking.mask_prob);
  auto val = MlmValidationSet::Create(*dataset, MaskingVocab::FromTokenizer(*tokenizer), masking);
  if (!val.ok()) return ReportError(cmd, std::string(val.status().message()));
  auto r = EvaluateMlm(*loaded->model, *val, absl::GetFlag(FLAGS_eval_batch), absl::GetFlag(FLAGS_max_batches));
  if (!r.ok()) return ReportError(cmd, std::string(r.status().message()));
  std::printf("checkpoint %s\nvalidation: %lld sequences, %lld masked tokens\n", loaded->checkpoint.c_str(),
              static_cast<long long>(r->sequences), static_cast<long long>(r->tokens));
  std::printf("mlm loss %.4f  perplexity %.2f  accuracy %.4f\n", r->loss, r->perplexity(), r->accuracy);
  return 0;
}

}  // namespace
}  // namespace lamina

LAMINA_SUBCOMMAND("evaluate", "validation MLM loss, perplexity and accuracy of a checkpoint", lamina::RunEvaluate,
                  lamina::FlagNames({{"data", "eval_batch", "max_batches"}, lamina::LoadModelFlags()}));
