// Where every parameter lives in the one flat parameter buffer (and, at the same offsets, in the
// gradient buffer, the optimizer moments and the backend's low-precision weight copy).
//
// Names follow Hugging Face BERT (`bert.encoder.layer.3.attention.self.query.weight`), so import,
// export and checkpoints map one to one. A Linear weight is [out, in] as in torch.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/status/statusor.h"
#include "core/tensor.h"
#include "model/config.h"

namespace lamina {

struct ParamInfo {
  std::string name;
  Shape shape;
  int64_t offset = 0;  // in elements from the start of the flat buffer
  bool decay = true;   // weight decay applies (not to biases, LayerNorm or embeddings' LN)
  int64_t numel() const { return shape.numel(); }
};

// Offsets of one encoder layer's tensors. query/key/value weights are laid out back to back so
// that `qkv_w` is one [3H, H] matrix (and `qkv_b` one [3H] vector): one GEMM computes all three.
struct LayerOffsets {
  int64_t qkv_w, qkv_b;
  int64_t attn_out_w, attn_out_b;
  int64_t ln_attn_g = -1, ln_attn_b = -1;  // post: after attention; pre: before it
  int64_t ffn_in_w, ffn_in_b;
  int64_t ffn_out_w, ffn_out_b;
  int64_t ln_ffn_g = -1, ln_ffn_b = -1;    // post: after the FFN; pre: before it
};

struct HeadOptions {
  bool mlm = true;          // cls.predictions.* (decoder tied to word embeddings)
  int64_t num_labels = 0;   // > 0 adds bert.pooler.* and classifier.*
};

class ParamLayout {
 public:
  static ParamLayout Build(const BertConfig& config, const HeadOptions& heads);

  int64_t total() const { return total_; }
  const std::vector<ParamInfo>& params() const { return params_; }
  // The entry for `name`, or an error listing that the name is unknown.
  absl::StatusOr<const ParamInfo*> Find(absl::string_view name) const;
  bool Contains(absl::string_view name) const { return index_.contains(name); }

  // Named offsets the encoder uses (-1 where the variant or heads lack the tensor).
  int64_t word_emb = -1, pos_emb = -1, type_emb = -1;
  int64_t emb_ln_g = -1, emb_ln_b = -1;
  std::vector<LayerOffsets> layers;
  int64_t final_ln_g = -1, final_ln_b = -1;  // Pre-LN only
  int64_t mlm_dense_w = -1, mlm_dense_b = -1, mlm_ln_g = -1, mlm_ln_b = -1, mlm_bias = -1;
  int64_t pooler_w = -1, pooler_b = -1, cls_w = -1, cls_b = -1;

 private:
  int64_t Add(std::string name, Shape shape, bool decay, bool align = true);

  std::vector<ParamInfo> params_;
  absl::flat_hash_map<std::string, size_t> index_;
  int64_t total_ = 0;
};

// A view into a flat buffer (parameters, gradients, moments or the compute copy) at `offset`.
inline TensorView ParamView(const TensorView& flat, int64_t offset, Shape shape) {
  LAMINA_CHECK(offset >= 0 && offset + shape.numel() <= flat.numel(), "param view at ", offset, " of ",
               shape.ToString(), " outside ", flat.numel());
  TensorView v = flat;
  v.data = static_cast<char*>(flat.data) + static_cast<size_t>(offset) * DTypeSize(flat.dtype);
  v.shape = shape;
  return v;
}

}  // namespace lamina
