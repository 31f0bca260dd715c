#include "checkpoint/hf_interchange.h"

#include <cstdio>
#include <cstdlib>
#include <ctime>
#include <filesystem>
#include <map>
#include <set>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "core/json_file.h"
#include "core/file_util.h"
#include "core/safetensors.h"
#include "core/status.h"
#include "core/timer.h"
#include "data/wordpiece.h"
#include "model/init.h"
#include "model/param_layout.h"
#include "checkpoint/checkpoint.h"
#include "checkpoint/load_model.h"

namespace lamina {
namespace {

namespace fs = std::filesystem;

const char* BasePrefix(HfFlavor f) { return f == HfFlavor::kBert ? "bert." : "roberta_prelayernorm."; }
const char* ModelType(HfFlavor f) { return f == HfFlavor::kBert ? "bert" : "roberta-prelayernorm"; }
const char* Architecture(HfFlavor f) { return f == HfFlavor::kBert ? "BertForMaskedLM" : "RobertaPreLayerNormForMaskedLM"; }

// The shortest decimal that reads back as the same float, as a double: 0.1f is written "0.1"
// (as transformers writes its configs), not 0.10000000149011612.
double ShortFloat(float f) {
  for (int precision = 6; precision <= 9; ++precision) {
    char buf[32];
    std::snprintf(buf, sizeof(buf), "%.*g", precision, static_cast<double>(f));
    const double d = std::strtod(buf, nullptr);
    if (static_cast<float>(d) == f) return d;
  }
  return static_cast<double>(f);
}

absl::Status CheckModelDir(const std::string& dir) {
  if (!fs::is_directory(dir)) return absl::NotFoundError(absl::StrCat(dir, ": not a directory"));
  if (fs::exists(fs::path(dir) / "model.safetensors")) return absl::OkStatus();
  if (fs::exists(fs::path(dir) / "model.safetensors.index.json"))
    return absl::UnimplementedError(absl::StrCat(
        dir, ": sharded safetensors (model.safetensors.index.json) are not read; save the model as one file "
             "(save_pretrained(..., max_shard_size=\"100GB\"))"));
  if (fs::exists(fs::path(dir) / "pytorch_model.bin"))
    return absl::UnimplementedError(absl::StrCat(
        dir, ": only pytorch_model.bin, a Python pickle, which lamina does not read (it runs no Python and pickles "
             "can execute code); convert it where transformers is installed: "
             "AutoModelForMaskedLM.from_pretrained(DIR).save_pretrained(OUT) writes model.safetensors"));
  for (const char* other : {"tf_model.h5", "flax_model.msgpack"}) {
    if (fs::exists(fs::path(dir) / other))
      return absl::UnimplementedError(absl::StrCat(dir, ": only ", other, "; lamina reads model.safetensors"));
  }
  return absl::NotFoundError(absl::StrCat(dir, ": no model.safetensors"));
}

template <typename T>
absl::Status HfValue(const nlohmann::json& hf, const std::string& key, T fallback, T* out) {
  if (!hf.contains(key) || hf[key].is_null()) {
    *out = fallback;
    return absl::OkStatus();
  }
  const nlohmann::json& v = hf[key];
  if constexpr (std::is_integral_v<T>) {
    if (!v.is_number_integer()) return absl::InvalidArgumentError(absl::StrCat("config.json: ", key, " must be an integer, got ", v.dump()));
  } else {
    if (!v.is_number()) return absl::InvalidArgumentError(absl::StrCat("config.json: ", key, " must be a number, got ", v.dump()));
  }
  *out = v.get<T>();
  return absl::OkStatus();
}

// Copies vocab.txt to `dst` after checking that it loads and fits the model's vocabulary.
absl::StatusOr<WordPieceTokenizer> CopyVocab(const std::string& src, const std::string& dst, int64_t vocab_size) {
  ASSIGN_OR_RETURN(WordPieceTokenizer tok, WordPieceTokenizer::Load(src));
  if (tok.vocab_size() > vocab_size)
    return absl::InvalidArgumentError(absl::StrCat(src, " has ", tok.vocab_size(), " tokens, more than the model's vocab_size ",
                                                   vocab_size));
  ASSIGN_OR_RETURN(std::string text, ReadFile(src));
  RETURN_IF_ERROR(WriteFileAtomic(dst, text));
  return tok;
}

absl::Status MakeDir(const std::string& dir) {
  std::error_code ec;
  fs::create_directories(dir, ec);
  if (ec) return absl::PermissionDeniedError(absl::StrCat("cannot create ", dir, ": ", ec.message()));
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<BertConfig> BertConfigFromHf(const nlohmann::json& hf, HfFlavor* flavor, int64_t* position_offset) {
  auto bad = [](auto&&... p) { return absl::InvalidArgumentError(absl::StrCat("config.json: ", p...)); };
  if (!hf.is_object()) return bad("not a JSON object");
  const std::string model_type = hf.value("model_type", "");
  if (model_type == "bert") {
    *flavor = HfFlavor::kBert;
  } else if (model_type == "roberta-prelayernorm") {
    *flavor = HfFlavor::kRobertaPreLayerNorm;
  } else {
    return bad("model_type \"", model_type,
               "\" is not supported: lamina imports \"bert\" (Post-LN) and \"roberta-prelayernorm\" (Pre-LN)");
  }
  if (hf.contains("hidden_act") && !hf["hidden_act"].is_string()) return bad("hidden_act: expected a string");
  const std::string act = hf.value("hidden_act", "gelu");
  HiddenActivation activation = HiddenActivation::kGelu;
  if (act == "gelu_new" || act == "gelu_pytorch_tanh") {
    activation = HiddenActivation::kGeluTanh;
  } else if (act != "gelu") {
    return bad("hidden_act \"", act, "\" is not supported: lamina computes \"gelu\" (the erf form) and \"gelu_new\" / ",
               "\"gelu_pytorch_tanh\" (the tanh form, model.activation \"gelu_tanh\")");
  }
  const std::string pos_type = hf.contains("position_embedding_type") && hf["position_embedding_type"].is_string()
                                   ? hf["position_embedding_type"].get<std::string>()
                                   : "absolute";
  if (pos_type != "absolute")
    return bad("position_embedding_type \"", pos_type, "\" is not supported: lamina has absolute position embeddings only");
  for (const char* key : {"is_decoder", "add_cross_attention"}) {
    if (hf.contains(key) && hf[key].is_boolean() && hf[key].get<bool>())
      return bad(key, " is true: lamina's encoder is bidirectional with no cross-attention");
  }
  if (hf.contains("tie_word_embeddings") && hf["tie_word_embeddings"].is_boolean() && !hf["tie_word_embeddings"].get<bool>())
    return bad("tie_word_embeddings is false: lamina's MLM decoder is the word embedding matrix");

  BertConfig c;
  c.norm = *flavor == HfFlavor::kBert ? NormPlacement::kPost : NormPlacement::kPre;
  c.init = InitScheme::kBert;
  c.activation = activation;
  // Defaults are transformers' BertConfig defaults, for keys an old config.json leaves out.
  RETURN_IF_ERROR(HfValue<int64_t>(hf, "vocab_size", 30522, &c.vocab_size));
  RETURN_IF_ERROR(HfValue<int64_t>(hf, "hidden_size", 768, &c.hidden));
  RETURN_IF_ERROR(HfValue<int64_t>(hf, "num_hidden_layers", 12, &c.layers));
  RETURN_IF_ERROR(HfValue<int64_t>(hf, "num_attention_heads", 12, &c.heads));
  RETURN_IF_ERROR(HfValue<int64_t>(hf, "intermediate_size", 3072, &c.ffn));
  RETURN_IF_ERROR(HfValue<int64_t>(hf, "max_position_embeddings", 512, &c.max_positions));
  RETURN_IF_ERROR(HfValue<int64_t>(hf, "type_vocab_size", 2, &c.type_vocab));
  RETURN_IF_ERROR(HfValue<float>(hf, "hidden_dropout_prob", 0.1f, &c.hidden_dropout));
  RETURN_IF_ERROR(HfValue<float>(hf, "attention_probs_dropout_prob", 0.1f, &c.attention_dropout));
  RETURN_IF_ERROR(HfValue<float>(hf, "layer_norm_eps", 1e-12f, &c.layer_norm_eps));
  RETURN_IF_ERROR(HfValue<float>(hf, "initializer_range", 0.02f, &c.initializer_range));
  *position_offset = 0;
  if (*flavor == HfFlavor::kRobertaPreLayerNorm) {
    int64_t pad = 1;
    RETURN_IF_ERROR(HfValue<int64_t>(hf, "pad_token_id", 1, &pad));
    if (pad < 0) return bad("pad_token_id must be >= 0, got ", pad);
    *position_offset = pad + 1;
    if (c.max_positions <= *position_offset)
      return bad("max_position_embeddings ", c.max_positions, " leaves no positions after the ", *position_offset,
                 " RoBERTa reserves (pad_token_id + 1)");
    c.max_positions -= *position_offset;
  }
  if (absl::Status s = c.Validate(); !s.ok()) return bad("lamina cannot build this model: ", s.message());
  return c;
}

std::string HfParamName(const std::string& name, HfFlavor flavor) {
  if (flavor == HfFlavor::kBert) return name;
  const std::string base = BasePrefix(flavor);
  if (name == "bert.encoder.LayerNorm.weight") return base + "LayerNorm.weight";
  if (name == "bert.encoder.LayerNorm.bias") return base + "LayerNorm.bias";
  if (absl::StartsWith(name, "bert.")) return base + name.substr(5);
  if (absl::StartsWith(name, "cls.predictions.transform.dense.")) return "lm_head.dense." + name.substr(32);
  if (absl::StartsWith(name, "cls.predictions.transform.LayerNorm.")) return "lm_head.layer_norm." + name.substr(36);
  if (name == "cls.predictions.bias") return "lm_head.bias";
  return "";
}

absl::StatusOr<HfImportResult> ImportHf(const std::string& model_dir, const std::string& out_dir,
                                        const HfImportOptions& options) {
  RETURN_IF_ERROR(CheckModelDir(model_dir));
  const std::string config_path = (fs::path(model_dir) / "config.json").string();
  ASSIGN_OR_RETURN(const nlohmann::json hf, ReadJsonFile(config_path));
  HfFlavor flavor;
  int64_t pos_offset = 0;
  auto config_or = BertConfigFromHf(hf, &flavor, &pos_offset);
  if (!config_or.ok()) return Annotate(config_or.status(), model_dir);
  HfImportResult result;
  result.config = *config_or;
  const BertConfig& config = result.config;

  const std::string st_path = (fs::path(model_dir) / "model.safetensors").string();
  ASSIGN_OR_RETURN(SafetensorsFile st, SafetensorsFile::Open(st_path));
  const std::string base = BasePrefix(flavor);
  bool prefixed = false;
  for (const SafetensorsTensorInfo& t : st.tensors()) prefixed |= absl::StartsWith(t.name, base);
  // A bare base model (BertModel.save_pretrained) stores "embeddings.*" where the MLM model has "bert.embeddings.*".
  auto file_name = [&](const std::string& hf_name) {
    return (!prefixed && absl::StartsWith(hf_name, base)) ? hf_name.substr(base.size()) : hf_name;
  };
  const std::string head_prefix = flavor == HfFlavor::kBert ? "cls.predictions." : "lm_head.";
  bool has_head = false;
  for (const SafetensorsTensorInfo& t : st.tensors()) has_head |= absl::StartsWith(t.name, head_prefix);

  const ParamLayout layout = ParamLayout::Build(config, HeadOptions{true, 0});
  std::vector<float> host;
  InitParams(config, layout, options.init_seed, &host);
  std::set<std::string> used;
  auto read = [&](const std::string& name, const std::vector<int64_t>& want) -> absl::StatusOr<std::vector<float>> {
    ASSIGN_OR_RETURN(const SafetensorsTensorInfo* t, st.Find(name));
    if (t->shape != want)
      return absl::InvalidArgumentError(absl::StrCat(st_path, ": ", name, " has shape ", ShapeString(t->shape),
                                                     ", config.json implies ", ShapeString(want)));
    used.insert(name);
    return st.ReadFloats(name);
  };
  for (const ParamInfo& p : layout.params()) {
    const std::string name = file_name(HfParamName(p.name, flavor));
    const bool head = absl::StartsWith(p.name, "cls.");
    if (head && !has_head) continue;  // keeps lamina's initialisation
    if (!st.Find(name).ok())
      return absl::NotFoundError(absl::StrCat(st_path, ": no tensor \"", name, "\", which a ", Architecture(flavor),
                                              " of this config has"));
    std::vector<int64_t> want = p.shape.dims();
    if (p.offset == layout.pos_emb) want[0] += pos_offset;
    ASSIGN_OR_RETURN(std::vector<float> values, read(name, want));
    const size_t skip = p.offset == layout.pos_emb ? static_cast<size_t>(pos_offset * config.hidden) : 0;
    std::copy(values.begin() + skip, values.end(), host.begin() + p.offset);
  }
  if (!has_head) {
    result.notes.push_back(absl::StrCat("no ", head_prefix, "* in the model: the MLM head is initialised (BERT init, seed ",
                                        options.init_seed, ")"));
  }

  // The pooler is kept for finetuning; lamina names it as BERT does.
  std::vector<std::pair<std::string, std::vector<int64_t>>> pooler = {
      {"bert.pooler.dense.weight", {config.hidden, config.hidden}}, {"bert.pooler.dense.bias", {config.hidden}}};
  std::vector<std::vector<float>> pooler_values;
  const bool has_pooler = st.Find(file_name(HfParamName(pooler[0].first, flavor))).ok();
  if (has_pooler) {
    for (const auto& [lamina_name, shape] : pooler) {
      ASSIGN_OR_RETURN(std::vector<float> v, read(file_name(HfParamName(lamina_name, flavor)), shape));
      pooler_values.push_back(std::move(v));
    }
    result.notes.push_back("kept the pooler (bert.pooler.*) for finetuning");
  }

  // Tied decoder: stored copies must be the tensors they are tied to.
  const std::string decoder = flavor == HfFlavor::kBert ? "cls.predictions.decoder." : "lm_head.decoder.";
  const std::vector<std::pair<std::string, int64_t>> tied = {{decoder + "weight", layout.word_emb},
                                                             {decoder + "bias", layout.mlm_bias}};
  for (const auto& [name, offset] : tied) {
    if (!st.Find(name).ok()) continue;
    const bool weight = offset == layout.word_emb;
    const int64_t numel = weight ? config.vocab_size * config.hidden : config.vocab_size;
    const std::vector<int64_t> want =
        weight ? std::vector<int64_t>{config.vocab_size, config.hidden} : std::vector<int64_t>{config.vocab_size};
    ASSIGN_OR_RETURN(std::vector<float> v, read(name, want));
    for (int64_t i = 0; i < numel; ++i) {
      if (v[i] != host[offset + i])
        return absl::InvalidArgumentError(absl::StrCat(
            st_path, ": ", name, " differs from the tensor it is tied to (element ", i,
            "): lamina's MLM decoder is the word embedding matrix and cannot hold an untied one"));
    }
    result.notes.push_back(absl::StrCat(name, ": equal to the tensor it is tied to"));
  }
  std::vector<std::string> unknown;
  for (const SafetensorsTensorInfo& t : st.tensors()) {
    if (used.contains(t.name)) continue;
    if (flavor == HfFlavor::kBert && absl::StartsWith(t.name, "cls.seq_relationship.")) {
      result.notes.push_back(absl::StrCat("dropped ", t.name, " (next-sentence prediction head)"));
    } else if (absl::EndsWith(t.name, "embeddings.position_ids")) {
      result.notes.push_back(absl::StrCat("dropped ", t.name, " (a buffer, not a parameter)"));
    } else {
      unknown.push_back(t.name);
    }
  }
  if (!unknown.empty()) {
    if (unknown.size() > 5) unknown.resize(5);
    return absl::InvalidArgumentError(absl::StrCat(st_path, ": tensors lamina has no place for: ",
                                                   absl::StrJoin(unknown, ", ")));
  }

  RETURN_IF_ERROR(MakeDir(out_dir));
  const std::string vocab_src = options.vocab.empty() ? (fs::path(model_dir) / "vocab.txt").string() : options.vocab;
  if (!fs::exists(vocab_src))
    return absl::NotFoundError(absl::StrCat(vocab_src, ": no vocab.txt; pass --vocab FILE (a BERT WordPiece vocab)"));
  const std::string vocab_dst = fs::absolute(fs::path(out_dir) / "vocab.txt").lexically_normal().string();
  RETURN_IF_ERROR(CopyVocab(vocab_src, vocab_dst, config.vocab_size).status());

  std::vector<SafetensorsEntry> entries;
  for (const ParamInfo& p : layout.params()) entries.push_back({p.name, DType::kF32, p.shape.dims(), host.data() + p.offset});
  for (size_t i = 0; i < pooler_values.size(); ++i)
    entries.push_back({pooler[i].first, DType::kF32, pooler[i].second, pooler_values[i].data()});
  RETURN_IF_ERROR(WriteSafetensors((fs::path(out_dir) / "model.safetensors").string(), entries, {{"format", "pt"}}));

  const nlohmann::json model_json = config.ToJson();
  const nlohmann::json state = {
      {"format", "lamina-checkpoint"},
      {"format_version", kCheckpointFormatVersion},
      {"step", 0},
      {"optimizer_step", 0},
      {"data_position", nlohmann::json::object()},
      {"seed", options.init_seed},
      {"run_config", {{"model", model_json}, {"data", {{"vocab", vocab_dst}}}}},
      {"model_config", model_json},
      {"heads", {{"mlm", true}, {"num_labels", 0}}},
      {"imported_from", {{"dir", fs::absolute(model_dir).lexically_normal().string()},
                         {"model_type", ModelType(flavor)},
                         {"architectures", hf.value("architectures", nlohmann::json::array())},
                         {"notes", result.notes}}},
      {"timestamp", UtcTimestamp()},
      {"lamina_version", kLaminaVersion},
  };
  RETURN_IF_ERROR(WriteFileAtomic((fs::path(out_dir) / "state.json").string(), state.dump(2) + "\n"));
  result.checkpoint = out_dir;
  return result;
}

absl::StatusOr<HfExportResult> ExportHf(const std::string& checkpoint, const std::string& out_dir,
                                        const std::string& vocab) {
  ASSIGN_OR_RETURN(std::string ckpt, ResolveCheckpoint(checkpoint));
  ASSIGN_OR_RETURN(nlohmann::json state, ReadCheckpointState(ckpt));
  const std::string state_path = (fs::path(ckpt) / "state.json").string();
  if (!state["run_config"].contains("model"))
    return absl::DataLossError(absl::StrCat(state_path, ": no run_config.model"));
  auto config_or = BertConfig::FromJson(state["run_config"]["model"]);
  if (!config_or.ok()) return Annotate(config_or.status(), state_path);
  const BertConfig& config = *config_or;
  if (config.norm == NormPlacement::kNone)
    return absl::UnimplementedError(
        "T-Fixup (norm \"none\") cannot be exported: no transformers model computes an encoder without LayerNorm "
        "whose embedding sum is scaled by sqrt(hidden); the weights would load into BERT or RoBERTa-PreLayerNorm "
        "and silently compute something else");
  const HfFlavor flavor = config.norm == NormPlacement::kPost ? HfFlavor::kBert : HfFlavor::kRobertaPreLayerNorm;
  HfExportResult result;
  result.model_type = ModelType(flavor);

  std::string vocab_src = vocab;
  if (vocab_src.empty()) {
    ASSIGN_OR_RETURN(vocab_src, RunConfigVocab(state["run_config"], state_path));
  }
  RETURN_IF_ERROR(MakeDir(out_dir));
  ASSIGN_OR_RETURN(WordPieceTokenizer tok,
                   CopyVocab(vocab_src, (fs::path(out_dir) / "vocab.txt").string(), config.vocab_size));
  const int64_t pos_offset = flavor == HfFlavor::kBert ? 0 : tok.pad_id() + 1;

  const std::string st_path = (fs::path(ckpt) / "model.safetensors").string();
  ASSIGN_OR_RETURN(SafetensorsFile st, SafetensorsFile::Open(st_path));
  const ParamLayout layout = ParamLayout::Build(config, HeadOptions{true, 0});
  std::vector<std::vector<float>> values;
  std::vector<SafetensorsEntry> entries;
  values.reserve(layout.params().size());
  for (const ParamInfo& p : layout.params()) {
    auto t = st.Find(p.name);
    if (!t.ok())
      return absl::NotFoundError(absl::StrCat(st_path, ": no tensor \"", p.name, "\" (export needs the encoder and the MLM head)"));
    if ((*t)->shape != p.shape.dims())
      return absl::InvalidArgumentError(absl::StrCat(st_path, ": ", p.name, " has shape ", ShapeString((*t)->shape),
                                                     ", the model config implies ", p.shape.ToString()));
    ASSIGN_OR_RETURN(std::vector<float> v, st.ReadFloats(p.name));
    std::vector<int64_t> shape = p.shape.dims();
    if (p.offset == layout.pos_emb && pos_offset > 0) {
      v.insert(v.begin(), static_cast<size_t>(pos_offset * config.hidden), 0.0f);
      shape[0] += pos_offset;
    }
    values.push_back(std::move(v));
    entries.push_back({HfParamName(p.name, flavor), DType::kF32, shape, values.back().data()});
  }
  for (const SafetensorsTensorInfo& t : st.tensors()) {
    if (!layout.Contains(t.name)) result.notes.push_back(absl::StrCat("not exported: ", t.name, " (no place in ", Architecture(flavor), ")"));
  }
  if (pos_offset > 0)
    result.notes.push_back(absl::StrCat("position embeddings shifted by ", pos_offset,
                                        " rows (RoBERTa numbers positions from pad_token_id + 1)"));
  RETURN_IF_ERROR(WriteSafetensors((fs::path(out_dir) / "model.safetensors").string(), entries, {{"format", "pt"}}));

  // The keys transformers 5 writes for these models (tests compare with its own config.json).
  nlohmann::json hf = {
      {"add_cross_attention", false},
      {"architectures", {Architecture(flavor)}},
      {"attention_probs_dropout_prob", ShortFloat(config.attention_dropout)},
      {"bos_token_id", nullptr},
      {"classifier_dropout", nullptr},
      {"dtype", "float32"},
      {"eos_token_id", nullptr},
      {"hidden_act", config.activation == HiddenActivation::kGeluTanh ? "gelu_new" : "gelu"},
      {"hidden_dropout_prob", ShortFloat(config.hidden_dropout)},
      {"hidden_size", config.hidden},
      {"initializer_range", ShortFloat(config.initializer_range)},
      {"intermediate_size", config.ffn},
      {"is_decoder", false},
      {"layer_norm_eps", ShortFloat(config.layer_norm_eps)},
      {"max_position_embeddings", config.max_positions + pos_offset},
      {"model_type", ModelType(flavor)},
      {"num_attention_heads", config.heads},
      {"num_hidden_layers", config.layers},
      {"pad_token_id", tok.pad_id()},
      {"position_embedding_type", "absolute"},
      {"tie_word_embeddings", true},
      {"type_vocab_size", config.type_vocab},
      {"use_cache", true},
      {"vocab_size", config.vocab_size},
  };
  if (flavor == HfFlavor::kRobertaPreLayerNorm) {
    hf["bos_token_id"] = tok.cls_id();
    hf["eos_token_id"] = tok.sep_id();
  }
  RETURN_IF_ERROR(WriteFileAtomic((fs::path(out_dir) / "config.json").string(), hf.dump(2) + "\n"));
  // AutoTokenizer would pick RoBERTa's byte-level BPE for roberta-prelayernorm; the vocab is WordPiece.
  const nlohmann::json tokenizer_config = {{"tokenizer_class", "BertTokenizer"},
                                           {"do_lower_case", true},
                                           {"model_max_length", config.max_positions}};
  RETURN_IF_ERROR(WriteFileAtomic((fs::path(out_dir) / "tokenizer_config.json").string(), tokenizer_config.dump(2) + "\n"));
  return result;
}

}  // namespace lamina
