// The encoder's architecture, read from the "model" section of a JSON config.
#pragma once

#include <cstdint>
#include <string>

#include "absl/status/statusor.h"
#include "nlohmann/json.hpp"

namespace lamina {

enum class NormPlacement { kPost, kPre, kNone };  // Post-LN BERT, Pre-LN (Xiong et al.), T-Fixup (no LN)
// kXavier: the original Transformer's init, which Xiong et al.'s analysis assumes (docs/model.md).
enum class InitScheme { kBert, kXavier, kTFixup };
// The FFN's (and the MLM head's) GELU: BERT's exact erf form, or the tanh approximation
// (transformers' "gelu_new" / "gelu_pytorch_tanh"), which cuBLASLt's GELU epilogues compute.
enum class HiddenActivation { kGelu, kGeluTanh };

struct BertConfig {
  int64_t vocab_size = 30522;
  int64_t hidden = 768;
  int64_t layers = 12;
  int64_t heads = 12;
  int64_t ffn = 3072;
  int64_t max_positions = 512;
  int64_t type_vocab = 2;
  float hidden_dropout = 0.1f;
  float attention_dropout = 0.1f;
  float layer_norm_eps = 1e-12f;
  float initializer_range = 0.02f;
  NormPlacement norm = NormPlacement::kPost;
  InitScheme init = InitScheme::kBert;
  HiddenActivation activation = HiddenActivation::kGelu;

  int64_t head_dim() const { return hidden / heads; }
  // Checks the fields together; the error names the offending key.
  absl::Status Validate() const;
  nlohmann::json ToJson() const;
  // Reads a "model" object; unknown keys and wrongly typed values are errors naming the key.
  static absl::StatusOr<BertConfig> FromJson(const nlohmann::json& j);
  // Reads a file holding either a bare model object or a full config with a "model" section.
  static absl::StatusOr<BertConfig> FromFile(const std::string& path);
};

std::string NormName(NormPlacement n);
std::string InitName(InitScheme i);
std::string ActivationName(HiddenActivation a);

}  // namespace lamina
