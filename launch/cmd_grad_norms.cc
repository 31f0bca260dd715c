// `lamina grad-norms --config C [--layers 6,12,24,48] [--batches K] [--seeds S] [--json]`: every
// layer's gradient norm per parameter group at initialisation, for each depth (Xiong et al. 2020,
// Section 3; pretrain/init_grad_norms.h).
#include <cstdio>

#include "absl/flags/flag.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "launch/common_flags.h"
#include "launch/finetune_flags.h"
#include "launch/subcommand.h"
#include "model/backend.h"
#include "pretrain/init_grad_norms.h"
#include "pretrain/run_config.h"

ABSL_FLAG(std::vector<std::string>, layers, {},
          "grad-norms: comma-separated depths (model.layers) to measure, e.g. 6,12,24,48; default the config's");
ABSL_FLAG(int64_t, batches, 4, "grad-norms: global batches per seed whose gradient norms are averaged");

namespace lamina {
namespace {

void PrintTable(const DepthGradNorms& d) {
  std::printf("depth %lld\n%5s", static_cast<long long>(d.layers), "layer");
  for (ParamGroup g : kParamGroups)
    if (d.grad_norm.of(g).has_value()) std::printf(" %11s", ParamGroupName(g));
  std::printf(" %11s\n", "hidden");
  for (int64_t l = 0; l < d.layers; ++l) {
    std::printf("%5lld", static_cast<long long>(l + 1));
    for (ParamGroup g : kParamGroups)
      if (d.grad_norm.of(g).has_value()) std::printf(" %11.4e", (*d.grad_norm.of(g))[l]);
    std::printf(" %11.4g\n", d.hidden_norm[l]);
  }
}

int RunGradNorms(const std::vector<std::string>& args) {
  const char* name = "grad-norms";
  if (!args.empty()) return ReportError(name, absl::StrCat("unexpected argument '", args[0], "'"));
  auto config = RunConfigFromFlags();
  if (!config.ok()) return ReportError(name, std::string(config.status().message()));
  InitGradNormsOptions options;
  for (const std::string& text : absl::GetFlag(FLAGS_layers)) {
    int64_t depth = 0;
    if (!absl::SimpleAtoi(text, &depth) || depth <= 0)
      return ReportError(name, absl::StrCat("--layers: expected positive integers separated by commas, got '", text, "'"));
    options.depths.push_back(depth);
  }
  options.batches = absl::GetFlag(FLAGS_batches);
  options.seeds = absl::GetFlag(FLAGS_seeds);
  auto backend = MakeBackend(config->run.device, config->run.backend_options());
  if (!backend.ok()) return ReportError(name, std::string(backend.status().message()));
  auto result = MeasureInitGradNorms(*config, options, backend->get());
  if (!result.ok()) return ReportError(name, std::string(result.status().message()));
  if (absl::GetFlag(FLAGS_json)) {
    std::printf("%s\n", result->ToJson(*config, options).dump().c_str());
    return 0;
  }
  std::printf("gradient norms at initialisation: norm %s, init %s, hidden %lld; mean over %lld batch(es) of %lld "
              "sequences of %lld tokens x %lld seed(s); dropout off\n",
              NormName(config->model.norm).c_str(), InitName(config->model.init).c_str(),
              static_cast<long long>(config->model.hidden), static_cast<long long>(options.batches),
              static_cast<long long>(config->batch.global_batch), static_cast<long long>(result->seq_len),
              static_cast<long long>(options.seeds));
  for (const DepthGradNorms& d : result->depths) PrintTable(d);
  return 0;
}

}  // namespace
}  // namespace lamina

LAMINA_SUBCOMMAND("grad-norms", "per-layer gradient norms at initialisation, for several depths", lamina::RunGradNorms,
                  lamina::FlagNames({{"config", "set", "layers", "batches", "seeds", "json"}, lamina::BackendFlags()}));
