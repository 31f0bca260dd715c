#include "model/param_layout.h"

#include "absl/strings/str_cat.h"

namespace lamina {
namespace {
// 64 elements = 256 bytes in f32, 128 in bf16: every tensor starts where vector loads and
// cuBLASLt want it.
constexpr int64_t kAlignElems = 64;
}  // namespace

int64_t ParamLayout::Add(std::string name, Shape shape, bool decay, bool align) {
  if (align) total_ = (total_ + kAlignElems - 1) / kAlignElems * kAlignElems;
  const int64_t offset = total_;
  index_[name] = params_.size();
  params_.push_back(ParamInfo{std::move(name), shape, offset, decay});
  total_ += shape.numel();
  return offset;
}

ParamLayout ParamLayout::Build(const BertConfig& c, const HeadOptions& heads) {
  ParamLayout L;
  const int64_t H = c.hidden, F = c.ffn;
  const bool ln = c.norm != NormPlacement::kNone;
  L.word_emb = L.Add("bert.embeddings.word_embeddings.weight", {c.vocab_size, H}, true);
  L.pos_emb = L.Add("bert.embeddings.position_embeddings.weight", {c.max_positions, H}, true);
  L.type_emb = L.Add("bert.embeddings.token_type_embeddings.weight", {c.type_vocab, H}, true);
  if (ln) {
    L.emb_ln_g = L.Add("bert.embeddings.LayerNorm.weight", {H}, false);
    L.emb_ln_b = L.Add("bert.embeddings.LayerNorm.bias", {H}, false);
  }
  // Pre-LN's norms sit before the sublayers; they keep names of their own so that a Post-LN
  // checkpoint is never silently read as Pre-LN.
  const bool pre = c.norm == NormPlacement::kPre;
  for (int64_t i = 0; i < c.layers; ++i) {
    const std::string p = absl::StrCat("bert.encoder.layer.", i, ".");
    LayerOffsets o;
    o.qkv_w = L.Add(p + "attention.self.query.weight", {H, H}, true);
    L.Add(p + "attention.self.key.weight", {H, H}, true, /*align=*/false);
    L.Add(p + "attention.self.value.weight", {H, H}, true, /*align=*/false);
    o.qkv_b = L.Add(p + "attention.self.query.bias", {H}, false);
    L.Add(p + "attention.self.key.bias", {H}, false, /*align=*/false);
    L.Add(p + "attention.self.value.bias", {H}, false, /*align=*/false);
    if (pre) {
      o.ln_attn_g = L.Add(p + "attention.LayerNorm.weight", {H}, false);
      o.ln_attn_b = L.Add(p + "attention.LayerNorm.bias", {H}, false);
    }
    o.attn_out_w = L.Add(p + "attention.output.dense.weight", {H, H}, true);
    o.attn_out_b = L.Add(p + "attention.output.dense.bias", {H}, false);
    if (c.norm == NormPlacement::kPost) {
      o.ln_attn_g = L.Add(p + "attention.output.LayerNorm.weight", {H}, false);
      o.ln_attn_b = L.Add(p + "attention.output.LayerNorm.bias", {H}, false);
    }
    if (pre) {
      o.ln_ffn_g = L.Add(p + "intermediate.LayerNorm.weight", {H}, false);
      o.ln_ffn_b = L.Add(p + "intermediate.LayerNorm.bias", {H}, false);
    }
    o.ffn_in_w = L.Add(p + "intermediate.dense.weight", {F, H}, true);
    o.ffn_in_b = L.Add(p + "intermediate.dense.bias", {F}, false);
    o.ffn_out_w = L.Add(p + "output.dense.weight", {H, F}, true);
    o.ffn_out_b = L.Add(p + "output.dense.bias", {H}, false);
    if (c.norm == NormPlacement::kPost) {
      o.ln_ffn_g = L.Add(p + "output.LayerNorm.weight", {H}, false);
      o.ln_ffn_b = L.Add(p + "output.LayerNorm.bias", {H}, false);
    }
    L.layers.push_back(o);
  }
  if (pre) {
    L.final_ln_g = L.Add("bert.encoder.LayerNorm.weight", {H}, false);
    L.final_ln_b = L.Add("bert.encoder.LayerNorm.bias", {H}, false);
  }
  if (heads.mlm) {
    L.mlm_dense_w = L.Add("cls.predictions.transform.dense.weight", {H, H}, true);
    L.mlm_dense_b = L.Add("cls.predictions.transform.dense.bias", {H}, false);
    L.mlm_ln_g = L.Add("cls.predictions.transform.LayerNorm.weight", {H}, false);
    L.mlm_ln_b = L.Add("cls.predictions.transform.LayerNorm.bias", {H}, false);
    L.mlm_bias = L.Add("cls.predictions.bias", {c.vocab_size}, false);
  }
  if (heads.num_labels > 0) {
    L.pooler_w = L.Add("bert.pooler.dense.weight", {H, H}, true);
    L.pooler_b = L.Add("bert.pooler.dense.bias", {H}, false);
    L.cls_w = L.Add("classifier.weight", {heads.num_labels, H}, true);
    L.cls_b = L.Add("classifier.bias", {heads.num_labels}, false);
  }
  L.total_ = (L.total_ + kAlignElems - 1) / kAlignElems * kAlignElems;
  return L;
}

absl::StatusOr<const ParamInfo*> ParamLayout::Find(absl::string_view name) const {
  auto it = index_.find(name);
  if (it == index_.end()) return absl::NotFoundError(absl::StrCat("no parameter named ", name));
  return &params_[it->second];
}

}  // namespace lamina
