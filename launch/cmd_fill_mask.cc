// `lamina fill-mask`: the most likely tokens for each [MASK] of some text.
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <numeric>

#include "absl/flags/flag.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "data/wordpiece.h"
#include "launch/common_flags.h"
#include "launch/subcommand.h"
#include "nlohmann/json.hpp"
#include "checkpoint/load_model.h"

ABSL_FLAG(int, top_k, 5, "fill-mask: how many candidates to print per [MASK]");

namespace lamina {
namespace {

int RunFillMask(const std::vector<std::string>& texts) {
  const std::string cmd = "fill-mask";
  if (texts.empty()) return ReportError(cmd, "give one or more texts with [MASK], e.g. \"the capital of france is [MASK].\"");
  if (absl::GetFlag(FLAGS_checkpoint).empty()) return ReportError(cmd, "--checkpoint DIR is required");
  const int top_k = absl::GetFlag(FLAGS_top_k);
  if (top_k <= 0) return ReportError(cmd, "--top_k must be positive");
  auto loaded = LoadModelFromFlags();
  if (!loaded.ok()) return ReportError(cmd, std::string(loaded.status().message()));
  auto tok = TokenizerFromFlags(*loaded);
  if (!tok.ok()) return ReportError(cmd, std::string(tok.status().message()));
  BertModel& model = *loaded->model;
  const int64_t max_len = model.config().max_positions;
  nlohmann::json out = nlohmann::json::array();
  for (const std::string& text : texts) {
    std::vector<int32_t> ids = {tok->cls_id()};
    tok->Encode(text, &ids);
    const int64_t tokens = static_cast<int64_t>(ids.size()) - 1;  // the text's, without [CLS]
    if (tokens > max_len - 2) {
      // The model sees [CLS] + max_len - 2 tokens + [SEP]: a [MASK] past that cut is never seen.
      const auto cut = ids.begin() + (max_len - 1);
      const int64_t masks_cut = std::count(cut, ids.end(), tok->mask_id());
      if (masks_cut > 0)
        return ReportError(cmd, absl::StrCat("\"", text, "\" is ", tokens, " tokens; the model reads at most ", max_len - 2,
                                             " (max_positions ", max_len, " less [CLS] and [SEP]), and ", masks_cut,
                                             " [MASK] lie past that cut: shorten the text before them"));
      std::fprintf(stderr, "fill-mask: \"%s\" is %lld tokens; only the first %lld are read (max_positions %lld)\n",
                   text.c_str(), static_cast<long long>(tokens), static_cast<long long>(max_len - 2),
                   static_cast<long long>(max_len));
      ids.resize(max_len - 1);
    }
    ids.push_back(tok->sep_id());
    EncoderBatch b;
    b.batch = 1;
    b.seq = static_cast<int64_t>(ids.size());
    b.input_ids = ids;
    b.token_types.assign(ids.size(), 0);
    b.attention_mask.assign(ids.size(), 1);
    for (size_t i = 0; i < ids.size(); ++i) {
      if (ids[i] == tok->mask_id()) {
        b.mlm_positions.push_back(static_cast<int32_t>(i));
        b.mlm_labels.push_back(tok->mask_id());
      }
    }
    if (b.mlm_positions.empty()) return ReportError(cmd, absl::StrCat("no [MASK] in \"", text, "\""));
    auto s = model.ForwardMlm(b, ForwardOptions{});
    if (!s.ok()) return ReportError(cmd, std::string(s.status().message()));
    const std::vector<float> logits = model.LogitsToHost();
    const int64_t V = model.config().vocab_size;
    nlohmann::json masks = nlohmann::json::array();
    if (!absl::GetFlag(FLAGS_json)) std::printf("%s\n", text.c_str());
    for (size_t m = 0; m < b.mlm_positions.size(); ++m) {
      const float* row = logits.data() + m * V;
      // Log-softmax over the model's vocabulary, in double.
      const int64_t n = V;
      const double mx = *std::max_element(row, row + n);
      double z = 0;
      for (int64_t v = 0; v < n; ++v) z += std::exp(row[v] - mx);
      const double log_z = mx + std::log(z);
      std::vector<int32_t> order(n);
      std::iota(order.begin(), order.end(), 0);
      const int k = static_cast<int>(std::min<int64_t>(top_k, n));
      std::partial_sort(order.begin(), order.begin() + k, order.end(),
                        [&](int32_t a, int32_t c) { return row[a] > row[c] || (row[a] == row[c] && a < c); });
      nlohmann::json preds = nlohmann::json::array();
      for (int i = 0; i < k; ++i) {
        const double logp = row[order[i]] - log_z;
        // A model vocabulary padded past the tokenizer's has ids without a token.
        const std::string token = order[i] < tok->vocab_size() ? tok->token(order[i]) : absl::StrCat("<", order[i], ">");
        preds.push_back({{"token", token}, {"id", order[i]}, {"prob", std::exp(logp)}, {"logprob", logp}});
        if (!absl::GetFlag(FLAGS_json)) std::printf("  [MASK] %zu  %-16s %.4f\n", m + 1, token.c_str(), std::exp(logp));
      }
      masks.push_back({{"position", b.mlm_positions[m]}, {"predictions", preds}});
    }
    out.push_back({{"text", text}, {"tokens", ids.size()}, {"masks", masks}});
  }
  if (absl::GetFlag(FLAGS_json)) std::printf("%s\n", out.dump(2).c_str());
  return 0;
}

}  // namespace
}  // namespace lamina

LAMINA_SUBCOMMAND("fill-mask", "top tokens and probabilities for each [MASK] of some text", lamina::RunFillMask,
                  lamina::FlagNames({{"json", "top_k"}, lamina::LoadModelFlags()}));
