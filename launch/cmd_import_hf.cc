// `lamina import-hf --model HF_DIR --out CKPT [--vocab FILE]`: a Hugging Face BERT (or
// RoBERTa-PreLayerNorm) model directory to a lamina checkpoint (checkpoint/hf_interchange.h).
#include <cstdio>

#include "absl/flags/flag.h"
#include "checkpoint/hf_interchange.h"
#include "launch/common_flags.h"
#include "launch/subcommand.h"

ABSL_FLAG(std::string, model, "", "import-hf: a transformers model directory (config.json, model.safetensors, vocab.txt)");
ABSL_FLAG(uint64_t, init_seed, 1, "import-hf: seed of the MLM head's initialisation when the model has none (BertModel)");

namespace lamina {
namespace {

int RunImportHf(const std::vector<std::string>& args) {
  if (!args.empty()) return ReportError("import-hf", "takes no positional arguments");
  const std::string model = absl::GetFlag(FLAGS_model), out = absl::GetFlag(FLAGS_out);
  if (model.empty()) return ReportError("import-hf", "--model HF_DIR is required");
  if (out.empty()) return ReportError("import-hf", "--out CKPT_DIR is required");
  HfImportOptions options;
  options.vocab = absl::GetFlag(FLAGS_vocab);
  options.init_seed = absl::GetFlag(FLAGS_init_seed);
  auto result = ImportHf(model, out, options);
  if (!result.ok()) return ReportError("import-hf", std::string(result.status().message()));
  for (const std::string& note : result->notes) std::printf("note: %s\n", note.c_str());
  std::printf("wrote %s (%s, %lld layers, hidden %lld, vocab %lld)\n", result->checkpoint.c_str(),
              NormName(result->config.norm) == "post" ? "Post-LN" : "Pre-LN",
              static_cast<long long>(result->config.layers), static_cast<long long>(result->config.hidden),
              static_cast<long long>(result->config.vocab_size));
  return 0;
}

}  // namespace
}  // namespace lamina

LAMINA_SUBCOMMAND("import-hf", "convert a Hugging Face BERT model (safetensors) to a lamina checkpoint", lamina::RunImportHf,
                  lamina::FlagNames({{"model", "out", "vocab", "init_seed"}}));
