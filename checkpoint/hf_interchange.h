// Hugging Face checkpoint interchange: `lamina import-hf` and `lamina export-hf`.
//
// Import reads a model directory written by transformers' save_pretrained (config.json +
// model.safetensors, and vocab.txt unless given separately) and writes a lamina checkpoint
// directory (model.safetensors by lamina's names, state.json, vocab.txt) that LoadModel reads:
//   - model_type "bert" (BertForMaskedLM, BertForPreTraining, BertModel; names with or without the
//     "bert." prefix) becomes a Post-LN model. cls.seq_relationship.* (next-sentence head) is
//     dropped; a tied cls.predictions.decoder.weight/.bias must equal the word embeddings / the
//     bias it is tied to; without cls.predictions.* (BertModel) the MLM head is initialised as
//     lamina initialises it (BERT init, `init_seed`). A pooler, when present, is kept (finetuning
//     starts from it).
//   - model_type "roberta-prelayernorm" becomes a Pre-LN model (the inverse of the export below).
// Refused, with the reason: pickle checkpoints (pytorch_model.bin: lamina runs no Python), sharded
// or TF/Flax files, hidden_act other than "gelu" (erf) and "gelu_new" / "gelu_pytorch_tanh" (tanh
// form: model.activation "gelu_tanh", exported as "gelu_new"), relative position
// embeddings, decoders / cross-attention, an untied decoder, any tensor lamina has no place for.
//
// Export writes config.json, model.safetensors (f32), vocab.txt and tokenizer_config.json:
//   - Post-LN -> BertForMaskedLM, tensors under the same names (the decoder is tied, so it is not
//     stored, as save_pretrained does); bit-exact with the checkpoint.
//   - Pre-LN -> RobertaPreLayerNormForMaskedLM, which computes exactly lamina's Pre-LN encoder
//     (LN on the embeddings, LN before each sublayer, a final LN, the same MLM head). RoBERTa
//     numbers positions from padding_idx + 1 (padding_idx = pad_token_id = the vocab's [PAD]), and
//     gives padded tokens position padding_idx; lamina numbers them from 0. So the position table
//     is written with padding_idx + 1 zero rows first and max_position_embeddings grows by as
//     many. For right-padded inputs (lamina's, BertTokenizer's) every real token then sees the
//     same position vector; padded positions differ, but no real token attends to them.
//     token_type_ids must be passed explicitly (RoBERTa tokenizers do not produce them).
//   - T-Fixup (norm "none") is refused: no transformers model computes an encoder without
//     LayerNorm whose embeddings are scaled by sqrt(hidden).
// Classification heads (pooler, classifier) are not exported: both targets are MLM models.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "model/config.h"
#include "nlohmann/json.hpp"

namespace lamina {

enum class HfFlavor { kBert, kRobertaPreLayerNorm };

// lamina's config from a transformers config.json object. `position_offset` receives the rows
// the HF position table has before position 0 (0 for BERT, pad_token_id + 1 for RoBERTa).
absl::StatusOr<BertConfig> BertConfigFromHf(const nlohmann::json& hf, HfFlavor* flavor, int64_t* position_offset);

// The Hugging Face name of a lamina parameter in a model of `flavor` with its base-model prefix
// ("bert." or "roberta_prelayernorm."); empty for tensors the HF MLM model has no place for.
std::string HfParamName(const std::string& lamina_name, HfFlavor flavor);

struct HfImportOptions {
  std::string vocab;        // vocab.txt; empty = MODEL_DIR/vocab.txt
  uint64_t init_seed = 1;   // for an MLM head the HF model lacks
};

struct HfImportResult {
  BertConfig config;
  std::string checkpoint;             // the directory written
  std::vector<std::string> notes;     // what was dropped, initialised or checked
};

absl::StatusOr<HfImportResult> ImportHf(const std::string& model_dir, const std::string& out_dir,
                                        const HfImportOptions& options);

struct HfExportResult {
  std::string model_type;             // "bert" or "roberta-prelayernorm"
  std::vector<std::string> notes;
};

// `checkpoint` is a checkpoint or run directory; `vocab` overrides the run's data.vocab.
absl::StatusOr<HfExportResult> ExportHf(const std::string& checkpoint, const std::string& out_dir,
                                        const std::string& vocab);

}  // namespace lamina
