#include "model/config.h"

#include <cmath>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "core/json_file.h"
#include "core/status.h"

namespace lamina {
namespace {

template <typename T>
absl::Status ReadNumber(const nlohmann::json& j, const std::string& key, T* out) {
  const auto& v = j.at(key);
  if constexpr (std::is_integral_v<T>) {
    if (!v.is_number_integer())
      return absl::InvalidArgumentError(absl::StrCat("model.", key, ": expected an integer, got ", v.dump()));
    *out = v.get<T>();
  } else {
    if (!v.is_number()) return absl::InvalidArgumentError(absl::StrCat("model.", key, ": expected a number, got ", v.dump()));
    *out = v.get<T>();
  }
  return absl::OkStatus();
}

absl::Status ReadString(const nlohmann::json& j, const std::string& key, std::string* out) {
  const auto& v = j.at(key);
  if (!v.is_string()) return absl::InvalidArgumentError(absl::StrCat("model.", key, ": expected a string, got ", v.dump()));
  *out = v.get<std::string>();
  return absl::OkStatus();
}

}  // namespace

std::string NormName(NormPlacement n) {
  switch (n) {
    case NormPlacement::kPost: return "post";
    case NormPlacement::kPre: return "pre";
    case NormPlacement::kNone: return "none";
  }
  return "?";
}

std::string InitName(InitScheme i) {
  switch (i) {
    case InitScheme::kBert: return "bert";
    case InitScheme::kXavier: return "xavier";
    case InitScheme::kTFixup: return "tfixup";
  }
  return "?";
}

std::string ActivationName(HiddenActivation a) {
  switch (a) {
    case HiddenActivation::kGelu: return "gelu";
    case HiddenActivation::kGeluTanh: return "gelu_tanh";
  }
  return "?";
}

absl::Status BertConfig::Validate() const {
  auto err = [](auto&&... parts) { return absl::InvalidArgumentError(absl::StrCat("model.", parts...)); };
  if (vocab_size < 8) return err("vocab_size: must be at least 8, got ", vocab_size);
  if (hidden <= 0 || hidden % 8 != 0) return err("hidden: must be a positive multiple of 8, got ", hidden);
  if (layers <= 0) return err("layers: must be positive, got ", layers);
  if (heads <= 0 || hidden % heads != 0)
    return err("heads: hidden (", hidden, ") must be divisible by heads (", heads, ")");
  if (ffn <= 0 || ffn % 8 != 0) return err("ffn: must be a positive multiple of 8, got ", ffn);
  if (max_positions <= 0) return err("max_positions: must be positive, got ", max_positions);
  if (type_vocab <= 0) return err("type_vocab: must be positive, got ", type_vocab);
  if (!(hidden_dropout >= 0 && hidden_dropout < 1)) return err("hidden_dropout: must be in [0, 1), got ", hidden_dropout);
  if (!(attention_dropout >= 0 && attention_dropout < 1))
    return err("attention_dropout: must be in [0, 1), got ", attention_dropout);
  if (!(layer_norm_eps > 0)) return err("layer_norm_eps: must be positive, got ", layer_norm_eps);
  if (!(initializer_range > 0)) return err("initializer_range: must be positive, got ", initializer_range);
  if (norm == NormPlacement::kNone && init != InitScheme::kTFixup)
    return err("init: norm \"none\" trains only with init \"tfixup\" (plain BERT init without LayerNorm diverges)");
  if (norm != NormPlacement::kNone && init == InitScheme::kTFixup)
    return err("init: \"tfixup\" is for the LayerNorm-free encoder; set norm to \"none\"");
  return absl::OkStatus();
}

nlohmann::json BertConfig::ToJson() const {
  nlohmann::json j{{"vocab_size", vocab_size},
                        {"hidden", hidden},
                        {"layers", layers},
                        {"heads", heads},
                        {"ffn", ffn},
                        {"max_positions", max_positions},
                        {"type_vocab", type_vocab},
                        {"hidden_dropout", hidden_dropout},
                        {"attention_dropout", attention_dropout},
                        {"layer_norm_eps", layer_norm_eps},
                        {"initializer_range", initializer_range},
                        {"norm", NormName(norm)},
                        {"init", InitName(init)}};
  // Written only when not the default, so that the configs and checkpoints of builds before the
  // option compare equal to today's.
  if (activation != HiddenActivation::kGelu) j["activation"] = ActivationName(activation);
  return j;
}

absl::StatusOr<BertConfig> BertConfig::FromJson(const nlohmann::json& j) {
  if (!j.is_object()) return absl::InvalidArgumentError(absl::StrCat("model: expected an object, got ", j.dump()));
  BertConfig c;
  for (const auto& [key, value] : j.items()) {
    absl::Status s;
    if (key == "vocab_size") s = ReadNumber(j, key, &c.vocab_size);
    else if (key == "hidden") s = ReadNumber(j, key, &c.hidden);
    else if (key == "layers") s = ReadNumber(j, key, &c.layers);
    else if (key == "heads") s = ReadNumber(j, key, &c.heads);
    else if (key == "ffn") s = ReadNumber(j, key, &c.ffn);
    else if (key == "max_positions") s = ReadNumber(j, key, &c.max_positions);
    else if (key == "type_vocab") s = ReadNumber(j, key, &c.type_vocab);
    else if (key == "hidden_dropout") s = ReadNumber(j, key, &c.hidden_dropout);
    else if (key == "attention_dropout") s = ReadNumber(j, key, &c.attention_dropout);
    else if (key == "layer_norm_eps") s = ReadNumber(j, key, &c.layer_norm_eps);
    else if (key == "initializer_range") s = ReadNumber(j, key, &c.initializer_range);
    else if (key == "activation") {
      std::string v;
      s = ReadString(j, key, &v);
      if (s.ok() && v == "gelu") c.activation = HiddenActivation::kGelu;
      else if (s.ok() && v == "gelu_tanh") c.activation = HiddenActivation::kGeluTanh;
      else if (s.ok()) s = absl::InvalidArgumentError(absl::StrCat("model.activation: expected \"gelu\" or \"gelu_tanh\", got \"", v, "\""));
    } else if (key == "norm" || key == "init") {
      std::string v;
      s = ReadString(j, key, &v);
      if (s.ok() && key == "norm") {
        if (v == "post") c.norm = NormPlacement::kPost;
        else if (v == "pre") c.norm = NormPlacement::kPre;
        else if (v == "none") c.norm = NormPlacement::kNone;
        else s = absl::InvalidArgumentError(absl::StrCat("model.norm: expected \"post\", \"pre\" or \"none\", got \"", v, "\""));
      } else if (s.ok()) {
        if (v == "bert") c.init = InitScheme::kBert;
        else if (v == "xavier") c.init = InitScheme::kXavier;
        else if (v == "tfixup") c.init = InitScheme::kTFixup;
        else s = absl::InvalidArgumentError(
            absl::StrCat("model.init: expected \"bert\", \"xavier\" or \"tfixup\", got \"", v, "\""));
      }
    } else {
      s = absl::InvalidArgumentError(absl::StrCat("model.", key, ": unknown key"));
    }
    RETURN_IF_ERROR(s);
  }
  RETURN_IF_ERROR(c.Validate());
  return c;
}

absl::StatusOr<BertConfig> BertConfig::FromFile(const std::string& path) {
  ASSIGN_OR_RETURN(nlohmann::json j, ReadJsonFile(path));
  const nlohmann::json& model = (j.is_object() && j.contains("model")) ? j.at("model") : j;
  auto c = FromJson(model);
  if (!c.ok()) return Annotate(c.status(), path);
  return c;
}

}  // namespace lamina
