// `lamina export-hf --checkpoint CKPT --out DIR [--vocab FILE]`: a lamina checkpoint as a
// transformers model directory (BertForMaskedLM for Post-LN, RobertaPreLayerNormForMaskedLM for
// Pre-LN; T-Fixup is refused). See checkpoint/hf_interchange.h.
#include <cstdio>

#include "absl/flags/flag.h"
#include "checkpoint/hf_interchange.h"
#include "launch/common_flags.h"
#include "launch/subcommand.h"

namespace lamina {
namespace {

int RunExportHf(const std::vector<std::string>& args) {
  if (!args.empty()) return ReportError("export-hf", "takes no positional arguments");
  const std::string checkpoint = absl::GetFlag(FLAGS_checkpoint), out = absl::GetFlag(FLAGS_out);
  if (checkpoint.empty()) return ReportError("export-hf", "--checkpoint DIR is required");
  if (out.empty()) return ReportError("export-hf", "--out DIR is required");
  auto result = ExportHf(checkpoint, out, absl::GetFlag(FLAGS_vocab));
  if (!result.ok()) return ReportError("export-hf", std::string(result.status().message()));
  for (const std::string& note : result->notes) std::printf("note: %s\n", note.c_str());
  std::printf("wrote %s (model_type %s)\n", out.c_str(), result->model_type.c_str());
  return 0;
}

}  // namespace
}  // namespace lamina

LAMINA_SUBCOMMAND("export-hf", "write a checkpoint as a Hugging Face model directory (config.json, safetensors)",
                  lamina::RunExportHf,
                  lamina::FlagNames({{"checkpoint", "out", "vocab"}}));
