// `lamina info --config FILE [--set model.KEY=V]`: parameter counts per group and training FLOPs
// per token of a model config or of a run config's model.
#include <cstdio>

#include "absl/flags/flag.h"
#include "absl/strings/str_format.h"
#include "launch/common_flags.h"
#include "launch/subcommand.h"
#include "model/config.h"
#include "model/flops.h"
#include "model/param_layout.h"
#include "pretrain/run_config.h"

ABSL_FLAG(double, mask_rate, 0.15, "Fraction of tokens the MLM head predicts (its FLOPs scale with it)");
ABSL_FLAG(int64_t, num_labels, 0, "info: also count a classification head with this many labels");

namespace lamina {
namespace {

int RunInfo(const std::vector<std::string>& args) {
  if (!args.empty()) return ReportError("info", "takes no positional arguments");
  const std::string path = absl::GetFlag(FLAGS_config);
  if (path.empty()) return ReportError("info", "--config FILE is required");
  // A model config, or a whole run config (its model section), as every other subcommand takes.
  auto run_config = LoadRunConfig(path, absl::GetFlag(FLAGS_set));
  if (!run_config.ok()) return ReportError("info", std::string(run_config.status().message()));
  const BertConfig* config = &run_config->model;
  const int64_t seq = absl::GetFlag(FLAGS_seq_len);
  const double mask_rate = absl::GetFlag(FLAGS_mask_rate);
  if (seq <= 0 || seq > config->max_positions)
    return ReportError("info", absl::StrFormat("--seq_len must be in [1, %d]", config->max_positions));
  if (!(mask_rate >= 0 && mask_rate <= 1)) return ReportError("info", "--mask_rate must be in [0, 1]");
  const ParamLayout layout = ParamLayout::Build(*config, HeadOptions{true, absl::GetFlag(FLAGS_num_labels)});
  std::printf("model: %lld layers, hidden %lld, %lld heads, ffn %lld, vocab %lld, norm %s, init %s, activation %s\n",
              static_cast<long long>(config->layers), static_cast<long long>(config->hidden),
              static_cast<long long>(config->heads), static_cast<long long>(config->ffn),
              static_cast<long long>(config->vocab_size), NormName(config->norm).c_str(),
              InitName(config->init).c_str(), ActivationName(config->activation).c_str());
  std::printf("%-20s %15s\n", "parameters", "count");
  for (const ParamGroupCount& g : CountParams(layout))
    std::printf("%-20s %15s\n", g.group.c_str(), absl::StrFormat("%d", g.count).c_str());
  const int64_t total = TotalParams(layout);
  std::printf("%-20s %15s  (%.1fM; decoder tied to the word embeddings)\n", "total",
              absl::StrFormat("%d", total).c_str(), total / 1e6);
  const double flops = TrainFlopsPerToken(*config, seq, mask_rate);
  std::printf("train FLOPs per token at seq %lld, mask rate %.2f: %.4g (%.3f GFLOP per sequence)\n",
              static_cast<long long>(seq), mask_rate, flops, flops * seq / 1e9);
  return 0;
}

}  // namespace
}  // namespace lamina

LAMINA_SUBCOMMAND("info", "parameter counts and FLOPs per token of a model config", lamina::RunInfo,
                  lamina::FlagNames({{"config", "set", "seq_len", "mask_rate", "num_labels"}}));
