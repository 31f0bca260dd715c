#include "model/bert.h"

#include <algorithm>
#include <cmath>
#include <functional>

#include "absl/strings/str_cat.h"
#include "core/status.h"
#include "model/init.h"

namespace lamina {
namespace {

// The backend's form of the model's GELU (FFN and MLM head).
Activation HiddenAct(const BertConfig& c) {
  return c.activation == HiddenActivation::kGeluTanh ? Activation::kGeluTanh : Activation::kGelu;
}

// Dropout sites; with the layer index and the step they name a Philox stream.
enum DropoutSite : int { kEmbeddingDropout = 0, kAttentionProbDropout = 1, kAttentionOutDropout = 2,
                         kFfnOutDropout = 3, kClassifierDropout = 4 };
// The logits' rows are padded to a multiple of this many elements (16 bytes of bf16).
constexpr int64_t kLogitsPitchMultiple = 8;

using TakeFn = std::function<TensorView(DType, Shape)>;

}  // namespace

// What one encoder layer saves for its backward pass.
struct BertModel::LayerActs {
  TensorView x_in;                 // layer input [BT, H]
  TensorView attn_in;              // input of the QKV projection (Pre-LN: LN(x_in); else x_in)
  TensorView ln_a_mean, ln_a_rstd;  // Pre-LN's norm before attention
  TensorView qkv, att_saved, ctx;
  TensorView sum_a;                // x_in + attention branch
  TensorView x_mid;                // Post-LN: LN(sum_a); else sum_a
  TensorView ln_attn_mean, ln_attn_rstd;  // Post-LN's norm after attention
  TensorView ffn_in;               // Pre-LN: LN(x_mid); else x_mid
  TensorView ln_f_mean, ln_f_rstd;  // Pre-LN's norm before the FFN
  TensorView ffn_pre, ffn_act;     // [BT, F]
  TensorView sum_f;                // x_mid + FFN branch
  TensorView out;                  // Post-LN: LN(sum_f); else sum_f
  TensorView ln_ffn_mean, ln_ffn_rstd;  // Post-LN's norm after the FFN
};

struct BertModel::Acts {
  int64_t B = 0, T = 0, N = 0;  // batch, sequence, head rows (masked positions or examples)
  int64_t first_sample = 0;     // EncoderBatch::first_sample: offsets the dropout streams
  TensorView ids, types, mask, head_index, targets;  // i32 on the device
  TensorView emb_sum, emb_mean, emb_rstd;  // embedding sum before LN (or scaled sum for T-Fixup)
  std::vector<LayerActs> layers;
  TensorView final_out, final_mean, final_rstd;  // Pre-LN's final LN
  TensorView branch;               // scratch: attention / FFN branch output before the residual add
  // Heads.
  TensorView gathered;             // [N, H] rows the head reads
  TensorView head_pre, head_act;   // MLM: dense pre-GELU and GELU; classify: pooler pre-tanh and tanh
  TensorView head_ln, head_mean, head_rstd;  // MLM transform LayerNorm
  TensorView head_drop;            // classify: dropout(pooled)
  // [N, pitch]: `classes` (vocab or labels) values per row, rows padded to a multiple of 8
  // elements (backend.h); becomes dlogits after a forward with grad.
  TensorView logits;
  int64_t classes = 0;
  TensorView losses;               // f32 [N]
  TensorView argmax;               // i32 [N]
  // Backward scratch.
  TensorView d_hidden, d_a, d_b, d_ctx, d_ffn, d_qkv, d_head_a, d_head_b;
};

BertModel::BertModel(const BertConfig& config, const HeadOptions& heads, Backend* backend)
    : config_(config), heads_(heads), layout_(ParamLayout::Build(config, heads)), backend_(backend) {}

BertModel::~BertModel() = default;

absl::StatusOr<std::unique_ptr<BertModel>> BertModel::Create(const BertConfig& config, const HeadOptions& heads,
                                                             Backend* backend) {
  RETURN_IF_ERROR(config.Validate());
  std::unique_ptr<BertModel> m(new BertModel(config, heads, backend));
  const int64_t n = m->layout_.total();
  ASSIGN_OR_RETURN(m->params_buf_, backend->Allocate(n * sizeof(float)));
  ASSIGN_OR_RETURN(m->grads_buf_, backend->Allocate(n * sizeof(float)));
  m->params_ = m->params_buf_.View(DType::kF32, {n});
  m->grads_ = m->grads_buf_.View(DType::kF32, {n});
  if (backend->act_dtype() == DType::kF32) {
    m->compute_ = m->params_;
  } else {
    ASSIGN_OR_RETURN(m->compute_buf_, backend->Allocate(n * DTypeSize(backend->act_dtype())));
    m->compute_ = m->compute_buf_.View(backend->act_dtype(), {n});
  }
  backend->Zero(m->params_);
  backend->Zero(m->grads_);
  m->acts_ = std::make_unique<Acts>();
  return m;
}

void BertModel::Initialize(uint64_t seed) {
  std::vector<float> host;
  InitParams(config_, layout_, seed, &host);
  const absl::Status loaded = LoadParams(host);
  LAMINA_CHECK(loaded.ok(), "loading the initial parameters: ", loaded.ToString());
}

absl::Status BertModel::LoadParams(const std::vector<float>& host) {
  if (static_cast<int64_t>(host.size()) != layout_.total())
    return absl::InvalidArgumentError(
        absl::StrCat("parameter vector has ", host.size(), " values, the model needs ", layout_.total()));
  backend_->CopyFromHost(host.data(), params_);
  RefreshComputeParams();
  return absl::OkStatus();
}

std::vector<float> BertModel::ParamsToHost() const {
  std::vector<float> host(layout_.total());
  backend_->CopyToHost(params_, host.data());
  return host;
}

std::vector<float> BertModel::GradsToHost() const {
  std::vector<float> host(layout_.total());
  backend_->CopyToHost(grads_, host.data());
  return host;
}

void BertModel::RefreshComputeParams() {
  if (compute_.data != params_.data) backend_->Convert(params_, compute_);
}

void BertModel::ZeroGrads() { backend_->Zero(grads_); }

std::vector<double> BertModel::LayerOutputNorms() const {
  std::vector<double> norms;
  for (const LayerActs& L : acts_->layers)
    norms.push_back(std::sqrt(backend_->SumSquares(L.out) / static_cast<double>(L.out.rows())));
  return norms;
}

RngContext BertModel::Rng(int64_t layer, int site, int64_t elems_per_sample) const {
  return RngContext{last_options_.seed, MakeStream(static_cast<uint64_t>(last_options_.step), layer + 1, site),
                    static_cast<uint64_t>(acts_->first_sample * elems_per_sample)};
}

absl::Status BertModel::PrepareBatch(const EncoderBatch& batch, Head head, int64_t head_rows, bool grad) {
  const int64_t B = batch.batch, T = batch.seq, BT = B * T;
  if (B <= 0 || T <= 0) return absl::InvalidArgumentError(absl::StrCat("empty batch ", B, "x", T));
  if (T > config_.max_positions)
    return absl::InvalidArgumentError(
        absl::StrCat("sequence length ", T, " exceeds model.max_positions ", config_.max_positions));
  if (static_cast<int64_t>(batch.input_ids.size()) != BT || static_cast<int64_t>(batch.attention_mask.size()) != BT ||
      (!batch.token_types.empty() && static_cast<int64_t>(batch.token_types.size()) != BT))
    return absl::InvalidArgumentError(absl::StrCat("batch arrays do not match ", B, "x", T));
  for (int32_t id : batch.input_ids)
    if (id < 0 || id >= config_.vocab_size)
      return absl::InvalidArgumentError(absl::StrCat("token id ", id, " outside the vocabulary of ", config_.vocab_size));
  for (int32_t t : batch.token_types)
    if (t < 0 || t >= config_.type_vocab)
      return absl::InvalidArgumentError(absl::StrCat("token type ", t, " outside model.type_vocab ", config_.type_vocab));

  const int64_t H = config_.hidden, F = config_.ffn, nh = config_.heads;
  const bool classify = head == Head::kClassify;
  const int64_t V = classify ? heads_.num_labels : config_.vocab_size;
  const DType act = backend_->act_dtype();
  const bool post = config_.norm == NormPlacement::kPost, pre = config_.norm == NormPlacement::kPre;
  const int64_t N = head_rows;
  Acts& a = *acts_;
  // Every tensor of the step is taken in this one function; it runs once to size the arena and
  // once to lay the tensors out.
  auto plan = [&](const TakeFn& take) {
    a.B = B, a.T = T, a.N = N, a.first_sample = batch.first_sample;
    a.ids = take(DType::kI32, {B, T});
    a.types = take(DType::kI32, {B, T});
    a.mask = take(DType::kI32, {B, T});
    a.head_index = take(DType::kI32, {std::max<int64_t>(N, 1)});
    a.targets = take(DType::kI32, {std::max<int64_t>(N, 1)});
    a.emb_sum = take(act, {BT, H});
    if (config_.norm != NormPlacement::kNone) {
      a.emb_mean = take(DType::kF32, {BT});
      a.emb_rstd = take(DType::kF32, {BT});
    }
    a.layers.assign(config_.layers, LayerActs{});
    TensorView x = take(act, {BT, H});  // embedding output = layer 0 input
    for (int64_t l = 0; l < config_.layers; ++l) {
      LayerActs& L = a.layers[l];
      L.x_in = x;
      if (pre) {
        L.attn_in = take(act, {BT, H});
        L.ln_a_mean = take(DType::kF32, {BT});
        L.ln_a_rstd = take(DType::kF32, {BT});
      } else {
        L.attn_in = x;
      }
      L.qkv = take(act, {BT, 3 * H});
      L.att_saved = take(act, {backend_->AttentionSavedElems(B, nh, T, H / nh)});
      L.ctx = take(act, {BT, H});
      L.sum_a = take(act, {BT, H});
      if (post) {
        L.x_mid = take(act, {BT, H});
        L.ln_attn_mean = take(DType::kF32, {BT});
        L.ln_attn_rstd = take(DType::kF32, {BT});
      } else {
        L.x_mid = L.sum_a;
      }
      if (pre) {
        L.ffn_in = take(act, {BT, H});
        L.ln_f_mean = take(DType::kF32, {BT});
        L.ln_f_rstd = take(DType::kF32, {BT});
      } else {
        L.ffn_in = L.x_mid;
      }
      L.ffn_pre = take(act, {BT, F});
      L.ffn_act = take(act, {BT, F});
      L.sum_f = take(act, {BT, H});
      if (post) {
        L.out = take(act, {BT, H});
        L.ln_ffn_mean = take(DType::kF32, {BT});
        L.ln_ffn_rstd = take(DType::kF32, {BT});
      } else {
        L.out = L.sum_f;
      }
      x = L.out;
    }
    if (pre) {
      a.final_out = take(act, {BT, H});
      a.final_mean = take(DType::kF32, {BT});
      a.final_rstd = take(DType::kF32, {BT});
    } else {
      a.final_out = x;
    }
    a.branch = take(act, {BT, H});
    const int64_t Nr = std::max<int64_t>(N, 1);
    a.gathered = take(act, {Nr, H});
    a.head_pre = take(act, {Nr, H});
    a.head_act = take(act, {Nr, H});
    if (classify) {
      a.head_drop = take(act, {Nr, H});
    } else {
      a.head_ln = take(act, {Nr, H});
      a.head_mean = take(DType::kF32, {Nr});
      a.head_rstd = take(DType::kF32, {Nr});
    }
    a.classes = V;
    a.logits = take(act, {Nr, (V + kLogitsPitchMultiple - 1) / kLogitsPitchMultiple * kLogitsPitchMultiple});
    a.losses = take(DType::kF32, {Nr});
    a.argmax = take(DType::kI32, {Nr});
    if (grad) {
      a.d_hidden = take(act, {BT, H});
      a.d_a = take(act, {BT, H});
      a.d_b = take(act, {BT, H});
      a.d_ctx = take(act, {BT, H});
      a.d_ffn = take(act, {BT, F});
      a.d_qkv = take(act, {BT, 3 * H});
      a.d_head_a = take(act, {Nr, H});
      a.d_head_b = take(act, {Nr, H});
    }
  };
  size_t need = 0;
  plan([&](DType t, Shape s) {
    need += (static_cast<size_t>(s.numel()) * DTypeSize(t) + 255) / 256 * 256;
    return TensorView{nullptr, t, backend_->device(), s};
  });
  if (need > arena_.capacity()) {
    // Grow with headroom: the number of masked positions varies from batch to batch.
    ASSIGN_OR_RETURN(arena_, Arena::Create(backend_->device(), need + need / 8));
  }
  arena_.Reset();
  absl::Status status;
  plan([&](DType t, Shape s) {
    auto v = arena_.Take(t, s);
    if (!v.ok()) {
      status = v.status();
      return TensorView{nullptr, t, backend_->device(), s};
    }
    return *v;
  });
  RETURN_IF_ERROR(status);
  StepShape step;
  step.batch = B, step.seq = T, step.hidden = H, step.ffn = F, step.heads = nh;
  step.type_vocab = config_.type_vocab, step.head_rows = N, step.head_classes = V, step.grad = grad;
  RETURN_IF_ERROR(backend_->PrepareStep(step));

  backend_->CopyFromHostI32(batch.input_ids.data(), a.ids);
  if (batch.token_types.empty()) {
    backend_->Zero(a.types);
  } else {
    backend_->CopyFromHostI32(batch.token_types.data(), a.types);
  }
  backend_->CopyFromHostI32(batch.attention_mask.data(), a.mask);
  return absl::OkStatus();
}

void BertModel::EncoderForward(const ForwardOptions& o) {
  Backend& be = *backend_;
  Acts& a = *acts_;
  const int64_t H = config_.hidden, F = config_.ffn, nh = config_.heads, T = a.T;
  const float p_hidden = o.training ? config_.hidden_dropout : 0.0f;
  const float p_attn = o.training ? config_.attention_dropout : 0.0f;
  const float eps = config_.layer_norm_eps;
  const ParamLayout& pl = layout_;
  const Shape hh{H, H}, h1{H};

  // Embeddings: sum (scaled for T-Fixup), LayerNorm (Post-LN and Pre-LN), dropout.
  TensorView x0 = a.layers[0].x_in;
  be.EmbeddingForward(a.ids, a.types, W(pl.word_emb, {config_.vocab_size, H}), W(pl.pos_emb, {config_.max_positions, H}),
                      W(pl.type_emb, {config_.type_vocab, H}), EmbeddingScale(config_), a.emb_sum);
  if (config_.norm != NormPlacement::kNone) {
    be.LayerNormForward(a.emb_sum, W(pl.emb_ln_g, h1), W(pl.emb_ln_b, h1), eps, x0, a.emb_mean, a.emb_rstd);
    be.Dropout(x0, p_hidden, Rng(-1, kEmbeddingDropout, T * H), x0);
  } else {
    be.Dropout(a.emb_sum, p_hidden, Rng(-1, kEmbeddingDropout, T * H), x0);
  }

  const bool post = config_.norm == NormPlacement::kPost, pre = config_.norm == NormPlacement::kPre;
  for (int64_t l = 0; l < config_.layers; ++l) {
    LayerActs& L = a.layers[l];
    const LayerOffsets& w = pl.layers[l];
    if (pre && l == 0) {
      be.LayerNormForward(L.x_in, W(w.ln_attn_g, h1), W(w.ln_attn_b, h1), eps, L.attn_in, L.ln_a_mean, L.ln_a_rstd);
    }
    // Attention block.
    be.LinearForward(L.attn_in, W(w.qkv_w, {3 * H, H}), W(w.qkv_b, {3 * H}), Activation::kNone, {}, L.qkv);
    be.AttentionForward(L.qkv, a.mask, nh, p_attn, Rng(l, kAttentionProbDropout, nh * T), L.att_saved, L.ctx);
    be.LinearForward(L.ctx, W(w.attn_out_w, hh), W(w.attn_out_b, h1), Activation::kNone, {}, a.branch);
    // The branch's dropout and the residual add are fused with the norm that follows them (T-Fixup,
    // which has none, fuses the two).
    const RngContext attn_out_rng = Rng(l, kAttentionOutDropout, T * H);
    if (post) {
      be.AddLayerNormForward(L.x_in, a.branch, p_hidden, attn_out_rng, W(w.ln_attn_g, h1), W(w.ln_attn_b, h1), eps,
                             L.sum_a, L.x_mid, L.ln_attn_mean, L.ln_attn_rstd);
    } else if (pre) {
      be.AddLayerNormForward(L.x_in, a.branch, p_hidden, attn_out_rng, W(w.ln_ffn_g, h1), W(w.ln_ffn_b, h1), eps,
                             L.sum_a, L.ffn_in, L.ln_f_mean, L.ln_f_rstd);
    } else {
      be.AddDropout(L.x_in, a.branch, p_hidden, attn_out_rng, L.sum_a);
    }
    // Feed-forward block.
    be.LinearForward(L.ffn_in, W(w.ffn_in_w, {F, H}), W(w.ffn_in_b, {F}), HiddenAct(config_), L.ffn_pre, L.ffn_act);
    be.LinearForward(L.ffn_act, W(w.ffn_out_w, {H, F}), W(w.ffn_out_b, h1), Activation::kNone, {}, a.branch);
    const RngContext ffn_out_rng = Rng(l, kFfnOutDropout, T * H);
    if (post) {
      be.AddLayerNormForward(L.x_mid, a.branch, p_hidden, ffn_out_rng, W(w.ln_ffn_g, h1), W(w.ln_ffn_b, h1), eps,
                             L.sum_f, L.out, L.ln_ffn_mean, L.ln_ffn_rstd);
    } else if (pre) {
      // The residual add fused with the norm that reads it: the next layer's, or the final one.
      if (l + 1 < config_.layers) {
        LayerActs& next = a.layers[l + 1];
        const LayerOffsets& nw = pl.layers[l + 1];
        be.AddLayerNormForward(L.x_mid, a.branch, p_hidden, ffn_out_rng, W(nw.ln_attn_g, h1), W(nw.ln_attn_b, h1),
                               eps, L.sum_f, next.attn_in, next.ln_a_mean, next.ln_a_rstd);
      } else {
        be.AddLayerNormForward(L.x_mid, a.branch, p_hidden, ffn_out_rng, W(pl.final_ln_g, h1), W(pl.final_ln_b, h1),
                               eps, L.sum_f, a.final_out, a.final_mean, a.final_rstd);
      }
    } else {
      be.AddDropout(L.x_mid, a.branch, p_hidden, ffn_out_rng, L.sum_f);
    }
  }
}

absl::StatusOr<LossStats> BertModel::ForwardMlm(const EncoderBatch& batch, const ForwardOptions& options) {
  if (!heads_.mlm) return absl::FailedPreconditionError("this model has no MLM head");
  const int64_t N = static_cast<int64_t>(batch.mlm_positions.size());
  if (static_cast<int64_t>(batch.mlm_labels.size()) != N)
    return absl::InvalidArgumentError("mlm_positions and mlm_labels differ in length");
  for (int64_t i = 0; i < N; ++i) {
    if (batch.mlm_positions[i] < 0 || batch.mlm_positions[i] >= batch.batch * batch.seq)
      return absl::InvalidArgumentError(absl::StrCat("mlm position ", batch.mlm_positions[i], " outside the batch"));
    if (batch.mlm_labels[i] < 0 || batch.mlm_labels[i] >= config_.vocab_size)
      return absl::InvalidArgumentError(absl::StrCat("mlm label ", batch.mlm_labels[i], " outside the vocabulary"));
  }
  RETURN_IF_ERROR(PrepareBatch(batch, Head::kMlm, N, options.compute_grad));
  last_options_ = options;
  last_head_ = options.compute_grad ? Head::kMlm : Head::kNone;
  EncoderForward(options);
  LossStats stats;
  stats.count = N;
  if (N == 0) return stats;

  Backend& be = *backend_;
  Acts& a = *acts_;
  const ParamLayout& pl = layout_;
  const int64_t H = config_.hidden, V = config_.vocab_size;
  be.CopyFromHostI32(batch.mlm_positions.data(), a.head_index);
  be.CopyFromHostI32(batch.mlm_labels.data(), a.targets);
  // Head on the masked positions only: gather, dense+GELU, LayerNorm, tied decoder + bias.
  be.GatherRows(a.final_out, a.head_index, a.gathered);
  be.LinearForward(a.gathered, W(pl.mlm_dense_w, {H, H}), W(pl.mlm_dense_b, {H}), HiddenAct(config_), a.head_pre,
                   a.head_act);
  be.LayerNormForward(a.head_act, W(pl.mlm_ln_g, {H}), W(pl.mlm_ln_b, {H}), config_.layer_norm_eps, a.head_ln,
                      a.head_mean, a.head_rstd);
  be.LinearForward(a.head_ln, W(pl.word_emb, {V, H}), W(pl.mlm_bias, {V}), Activation::kNone, {}, a.logits);
  if (options.accuracy) be.ArgMax(a.logits, V, a.argmax);
  be.CrossEntropy(a.logits, V, a.targets, options.grad_scale, a.losses,
                  options.compute_grad ? a.logits : TensorView{});
  std::vector<float> losses(N);
  be.CopyToHost(a.losses, losses.data());
  for (float l : losses) stats.loss_sum += l;
  if (options.accuracy) {
    std::vector<int32_t> pred(N);
    be.Synchronize();
    LAMINA_CHECK(CopyBytes(pred.data(), Device::kCpu, a.argmax.data, a.argmax.device, N * sizeof(int32_t)).ok());
    for (int64_t i = 0; i < N; ++i) stats.correct += pred[i] == batch.mlm_labels[i];
  }
  return stats;
}

absl::StatusOr<LossStats> BertModel::ForwardClassify(const EncoderBatch& batch, const ForwardOptions& options) {
  const int64_t L = heads_.num_labels;
  if (L <= 0) return absl::FailedPreconditionError("this model has no classification head");
  const int64_t B = batch.batch;
  if (static_cast<int64_t>(batch.labels.size()) != B)
    return absl::InvalidArgumentError(absl::StrCat("batch has ", batch.labels.size(), " labels for ", B, " rows"));
  for (int32_t y : batch.labels)
    if (y < -1 || y >= L) return absl::InvalidArgumentError(absl::StrCat("label ", y, " outside [0, ", L, ")"));
  RETURN_IF_ERROR(PrepareBatch(batch, Head::kClassify, B, options.compute_grad));
  last_options_ = options;
  last_head_ = options.compute_grad ? Head::kClassify : Head::kNone;
  EncoderForward(options);

  Backend& be = *backend_;
  Acts& a = *acts_;
  const ParamLayout& pl = layout_;
  const int64_t H = config_.hidden;
  std::vector<int32_t> cls_rows(B);
  for (int64_t b = 0; b < B; ++b) cls_rows[b] = static_cast<int32_t>(b * batch.seq);
  be.CopyFromHostI32(cls_rows.data(), a.head_index);
  be.CopyFromHostI32(batch.labels.data(), a.targets);
  // Pooler on [CLS] (dense + tanh), dropout, linear classifier.
  be.GatherRows(a.final_out, a.head_index, a.gathered);
  be.LinearForward(a.gathered, W(pl.pooler_w, {H, H}), W(pl.pooler_b, {H}), Activation::kNone, {}, a.head_pre);
  be.Tanh(a.head_pre, a.head_act);
  const float p = options.training ? config_.hidden_dropout : 0.0f;
  be.Dropout(a.head_act, p, Rng(-1, kClassifierDropout, H), a.head_drop);
  be.LinearForward(a.head_drop, W(pl.cls_w, {L, H}), W(pl.cls_b, {L}), Activation::kNone, {}, a.logits);
  LossStats stats;
  stats.count = B;
  stats.logits = LogitsToHost();
  stats.predictions.resize(B);
  for (int64_t b = 0; b < B; ++b) {
    const float* row = &stats.logits[b * L];
    stats.predictions[b] = static_cast<int32_t>(std::max_element(row, row + L) - row);
    stats.correct += stats.predictions[b] == batch.labels[b];
  }
  be.CrossEntropy(a.logits, L, a.targets, options.grad_scale, a.losses,
                  options.compute_grad ? a.logits : TensorView{});
  std::vector<float> losses(B);
  be.CopyToHost(a.losses, losses.data());
  for (float l : losses) stats.loss_sum += l;
  return stats;
}

std::vector<float> BertModel::LogitsToHost() const {
  const Acts& a = *acts_;
  const int64_t pitch = a.logits.cols();
  std::vector<float> padded(a.logits.numel()), host(a.N * a.classes);
  if (host.empty()) return host;
  backend_->CopyToHost(a.logits, padded.data());
  for (int64_t r = 0; r < a.N; ++r)
    std::copy_n(padded.begin() + r * pitch, a.classes, host.begin() + r * a.classes);
  return host;
}

int64_t BertModel::LayersEnd() const {
  int64_t end = layout_.total();
  for (int64_t offset : {layout_.final_ln_g, layout_.mlm_dense_w, layout_.pooler_w})
    if (offset >= 0) end = std::min(end, offset);
  return end;
}

void BertModel::Backward(const GradReadyFn& ready) {
  LAMINA_CHECK(last_head_ != Head::kNone, "Backward() needs a forward with compute_grad");
  Backend& be = *backend_;
  Acts& a = *acts_;
  const ParamLayout& pl = layout_;
  const int64_t H = config_.hidden;
  be.Zero(a.d_hidden);
  if (last_head_ == Head::kMlm && a.N > 0) {
    const int64_t V = config_.vocab_size;
    // a.logits now holds d(loss)/d(logits).
    be.LinearBackward(a.logits, a.head_ln, W(pl.word_emb, {V, H}), Activation::kNone, {}, a.d_head_a, false,
                      G(pl.word_emb, {V, H}), G(pl.mlm_bias, {V}));
    be.LayerNormBackward(a.d_head_a, a.head_act, W(pl.mlm_ln_g, {H}), a.head_mean, a.head_rstd, a.d_head_b, false,
                         G(pl.mlm_ln_g, {H}), G(pl.mlm_ln_b, {H}), 0.0f, {}, {});
    be.LinearBackward(a.d_head_b, a.gathered, W(pl.mlm_dense_w, {H, H}), HiddenAct(config_), a.head_pre, a.d_head_a,
                      false, G(pl.mlm_dense_w, {H, H}), G(pl.mlm_dense_b, {H}));
    be.ScatterAddRows(a.d_head_a, a.head_index, a.d_hidden);
  } else if (last_head_ == Head::kClassify) {
    const int64_t L = heads_.num_labels;
    be.LinearBackward(a.logits, a.head_drop, W(pl.cls_w, {L, H}), Activation::kNone, {}, a.d_head_a, false,
                      G(pl.cls_w, {L, H}), G(pl.cls_b, {L}));
    const float p = last_options_.training ? config_.hidden_dropout : 0.0f;
    be.DropoutBackward(a.d_head_a, p, Rng(-1, kClassifierDropout, H), a.d_head_b);
    be.TanhBackward(a.d_head_b, a.head_act, a.d_head_a);
    be.LinearBackward(a.d_head_a, a.gathered, W(pl.pooler_w, {H, H}), Activation::kNone, {}, a.d_head_b, false,
                      G(pl.pooler_w, {H, H}), G(pl.pooler_b, {H}));
    be.ScatterAddRows(a.d_head_b, a.head_index, a.d_hidden);
  }
  EncoderBackward(ready);
  last_head_ = Head::kNone;
}

void BertModel::EncoderBackward(const GradReadyFn& ready) {
  Backend& be = *backend_;
  Acts& a = *acts_;
  const ParamLayout& pl = layout_;
  const int64_t H = config_.hidden, F = config_.ffn, nh = config_.heads, T = a.T;
  const bool training = last_options_.training;
  const float p_hidden = training ? config_.hidden_dropout : 0.0f;
  const float p_attn = training ? config_.attention_dropout : 0.0f;
  const bool post = config_.norm == NormPlacement::kPost, pre = config_.norm == NormPlacement::kPre;
  const Shape hh{H, H}, h1{H};
  // The backward pass of each residual norm also applies the backward of the dropout that fed its
  // input (AddLayerNormForward's: the branch added to the residual; for Pre-LN's first norm, the
  // embeddings' dropout) and leaves that branch's gradient in a.d_b, in the same pass. T-Fixup
  // has no norms and runs the dropouts' backward on their own.
  auto ffn_rng = [&](int64_t l) { return Rng(l, kFfnOutDropout, T * H); };
  auto attn_rng = [&](int64_t l) { return Rng(l, kAttentionOutDropout, T * H); };
  const RngContext emb_rng = Rng(-1, kEmbeddingDropout, T * H);
  // `d` holds the gradient w.r.t. the current layer's output and becomes that w.r.t. its input.
  TensorView d = a.d_hidden;
  if (pre) {
    // Final LN: d(final_out) -> d(sum_f of the last layer), and d(its FFN branch) in d_b.
    be.LayerNormBackward(d, a.layers.back().sum_f, W(pl.final_ln_g, h1), a.final_mean, a.final_rstd, a.d_a, false,
                         G(pl.final_ln_g, h1), G(pl.final_ln_b, h1), p_hidden, ffn_rng(config_.layers - 1), a.d_b);
    d = a.d_a;  // Pre-LN uses d_a for nothing else
  }
  if (ready) ready(LayersEnd());  // the heads and the final LN
  for (int64_t l = config_.layers - 1; l >= 0; --l) {
    LayerActs& L = a.layers[l];
    const LayerOffsets& w = pl.layers[l];
    // ---- feed-forward block: d(out) -> d(x_mid) ----
    TensorView d_sum_f = d;  // gradient w.r.t. x_mid + branch
    if (post) {
      be.LayerNormBackward(d, L.sum_f, W(w.ln_ffn_g, h1), L.ln_ffn_mean, L.ln_ffn_rstd, a.d_a, false,
                           G(w.ln_ffn_g, h1), G(w.ln_ffn_b, h1), p_hidden, ffn_rng(l), a.d_b);
      d_sum_f = a.d_a;
    } else if (!pre) {
      be.DropoutBackward(d_sum_f, p_hidden, ffn_rng(l), a.d_b);
    }  // Pre-LN: the norm that read this layer's output (the next layer's or the final one) left it in d_b
    // Through FFN-out and the GELU at once: d_ffn is the gradient w.r.t. the GELU's input.
    be.LinearBackwardToPreActivation(a.d_b, L.ffn_act, W(w.ffn_out_w, {H, F}), HiddenAct(config_), L.ffn_pre, a.d_ffn,
                                     G(w.ffn_out_w, {H, F}), G(w.ffn_out_b, h1));
    if (pre) {
      // x_mid feeds the residual (d_sum_f) and LN_f -> FFN.
      be.LinearBackward(a.d_ffn, L.ffn_in, W(w.ffn_in_w, {F, H}), Activation::kNone, {}, a.d_b, false,
                        G(w.ffn_in_w, {F, H}), G(w.ffn_in_b, {F}));
      be.LayerNormBackward(a.d_b, L.x_mid, W(w.ln_ffn_g, h1), L.ln_f_mean, L.ln_f_rstd, d_sum_f, true,
                           G(w.ln_ffn_g, h1), G(w.ln_ffn_b, h1), p_hidden, attn_rng(l), a.d_b);
    } else {
      be.LinearBackward(a.d_ffn, L.ffn_in, W(w.ffn_in_w, {F, H}), Activation::kNone, {}, d_sum_f, true,
                        G(w.ffn_in_w, {F, H}), G(w.ffn_in_b, {F}));
    }
    TensorView d_x_mid = d_sum_f;
    // ---- attention block: d(x_mid) -> d(x_in) ----
    TensorView d_sum_a = d_x_mid;
    if (post) {
      be.LayerNormBackward(d_x_mid, L.sum_a, W(w.ln_attn_g, h1), L.ln_attn_mean, L.ln_attn_rstd, d, false,
                           G(w.ln_attn_g, h1), G(w.ln_attn_b, h1), p_hidden, attn_rng(l), a.d_b);
      d_sum_a = d;
    } else if (!pre) {
      be.DropoutBackward(d_sum_a, p_hidden, attn_rng(l), a.d_b);
    }
    be.LinearBackward(a.d_b, L.ctx, W(w.attn_out_w, hh), Activation::kNone, {}, a.d_ctx, false, G(w.attn_out_w, hh),
                      G(w.attn_out_b, h1));
    be.AttentionBackward(a.d_ctx, L.qkv, a.mask, L.ctx, L.att_saved, nh, p_attn, Rng(l, kAttentionProbDropout, nh * T),
                         a.d_qkv);
    if (pre) {
      be.LinearBackward(a.d_qkv, L.attn_in, W(w.qkv_w, {3 * H, H}), Activation::kNone, {}, a.d_b, false,
                        G(w.qkv_w, {3 * H, H}), G(w.qkv_b, {3 * H}));
      be.LayerNormBackward(a.d_b, L.x_in, W(w.ln_attn_g, h1), L.ln_a_mean, L.ln_a_rstd, d_sum_a, true,
                           G(w.ln_attn_g, h1), G(w.ln_attn_b, h1), p_hidden, l > 0 ? ffn_rng(l - 1) : emb_rng, a.d_b);
    } else {
      be.LinearBackward(a.d_qkv, L.attn_in, W(w.qkv_w, {3 * H, H}), Activation::kNone, {}, d_sum_a, true,
                        G(w.qkv_w, {3 * H, H}), G(w.qkv_b, {3 * H}));
    }
    // d_sum_a is `d` in every variant and now holds d(x_in) for the layer below.
    LAMINA_CHECK(d_sum_a.data == d.data);
    if (ready) ready(w.qkv_w);  // the layer's first tensor
  }
  // ---- embeddings ----
  TensorView d_emb = a.d_b;
  if (!pre) be.DropoutBackward(d, p_hidden, emb_rng, d_emb);  // Pre-LN: the first layer's norm left it in d_b
  if (config_.norm != NormPlacement::kNone) {
    be.LayerNormBackward(d_emb, a.emb_sum, W(pl.emb_ln_g, h1), a.emb_mean, a.emb_rstd, a.d_ctx, false,
                         G(pl.emb_ln_g, h1), G(pl.emb_ln_b, h1), 0.0f, {}, {});
    d_emb = a.d_ctx;
  }
  be.EmbeddingBackward(a.ids, a.types, d_emb, EmbeddingScale(config_), G(pl.word_emb, {config_.vocab_size, H}),
                       G(pl.pos_emb, {config_.max_positions, H}), G(pl.type_emb, {config_.type_vocab, H}));
  if (ready) ready(0);
}

}  // namespace lamina
