#include "model/flops.h"

#include <utility>

#include "absl/strings/match.h"

namespace lamina {

std::vector<ParamGroupCount> CountParams(const ParamLayout& layout) {
  std::vector<ParamGroupCount> groups = {{"embeddings", 0}, {"encoder", 0}, {"final_ln", 0}, {"mlm_head", 0},
                                         {"pooler+classifier", 0}};
  for (const ParamInfo& p : layout.params()) {
    int g = 4;
    if (absl::StartsWith(p.name, "bert.embeddings.")) g = 0;
    else if (absl::StartsWith(p.name, "bert.encoder.layer.")) g = 1;
    else if (absl::StartsWith(p.name, "bert.encoder.LayerNorm")) g = 2;
    else if (absl::StartsWith(p.name, "cls.")) g = 3;
    groups[g].count += p.numel();
  }
  std::vector<ParamGroupCount> nonzero;
  for (const auto& g : groups)
    if (g.count > 0) nonzero.push_back(g);
  return nonzero;
}

int64_t TotalParams(const ParamLayout& layout) {
  int64_t n = 0;
  for (const ParamInfo& p : layout.params()) n += p.numel();
  return n;
}

double TrainFlopsPerToken(const BertConfig& c, int64_t seq, double mask_rate) {
  const double H = c.hidden, F = c.ffn, L = c.layers, V = c.vocab_size, T = static_cast<double>(seq);
  const double projections = 2.0 * (4.0 * H * H + 2.0 * H * F);  // QKV, output, FFN in and out
  const double attention = 2.0 * 2.0 * T * H;                    // QK^T and PV per token
  const double encoder = L * (projections + attention);
  const double head = mask_rate * 2.0 * (H * H + H * V);         // transform + decoder
  return 3.0 * (encoder + head);
}

double KnownPeakTflops(const std::string& backend_name) {
  for (const auto& [gpu, tflops] : {std::pair{"H100", 989.0}, {"H200", 989.0}, {"A100", 312.0}})
    if (backend_name.find(gpu) != std::string::npos) return tflops;
  return 0.0;
}

}  // namespace lamina
