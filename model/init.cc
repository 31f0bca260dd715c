#include "model/init.h"

#include <cmath>

#include "absl/strings/match.h"
#include "core/philox.h"

namespace lamina {
namespace {

constexpr uint64_t kInitTag = 0x1417;  // stream tag of initialisation draws

// Standard normal draw number `attempt` for element `i` of tensor `t` (Box-Muller on two Philox words).
float Normal(uint64_t seed, uint64_t t, uint64_t i, uint64_t attempt) {
  const Philox4x32 r = PhiloxBlock(seed, MakeStream(kInitTag, t), i * 16 + attempt);
  const double u1 = (static_cast<double>(r.v[0]) + 1.0) / 4294967297.0;  // (0, 1)
  const double u2 = static_cast<double>(r.v[1]) / 4294967296.0;
  return static_cast<float>(std::sqrt(-2.0 * std::log(u1)) * std::cos(2.0 * M_PI * u2));
}

float Uniform(uint64_t seed, uint64_t t, uint64_t i) {
  return UniformFromBits(PhiloxBlock(seed, MakeStream(kInitTag, t), i * 16).v[2]);
}

void FillTruncatedNormal(uint64_t seed, uint64_t t, float std, float* out, int64_t n) {
  for (int64_t i = 0; i < n; ++i) {
    float z = 0;
    for (uint64_t attempt = 0; attempt < 16; ++attempt) {
      z = Normal(seed, t, i, attempt);
      if (std::fabs(z) <= 2.0f) break;
    }
    out[i] = std::fabs(z) <= 2.0f ? z * std : 0.0f;  // 16 rejections in a row: p = 0.0455^16
  }
}

void FillNormal(uint64_t seed, uint64_t t, float std, float* out, int64_t n) {
  for (int64_t i = 0; i < n; ++i) out[i] = Normal(seed, t, i, 0) * std;
}

// Xavier (Glorot) uniform for a [fan_out, fan_in] weight, times `gain`.
void FillXavierUniform(uint64_t seed, uint64_t t, const Shape& shape, float gain, float* out) {
  const double a = gain * std::sqrt(6.0 / static_cast<double>(shape[0] + shape[1]));
  for (int64_t i = 0; i < shape.numel(); ++i) out[i] = static_cast<float>((2.0 * Uniform(seed, t, i) - 1.0) * a);
}

bool IsLayerNormWeight(const std::string& name) { return absl::EndsWith(name, "LayerNorm.weight"); }
bool IsBias(const std::string& name) { return absl::EndsWith(name, ".bias") || name == "cls.predictions.bias"; }
bool IsEncoderWeight(const std::string& name) { return absl::StartsWith(name, "bert.encoder.layer."); }

}  // namespace

float EmbeddingScale(const BertConfig& config) {
  return config.init == InitScheme::kTFixup ? std::sqrt(static_cast<float>(config.hidden)) : 1.0f;
}

void InitParams(const BertConfig& config, const ParamLayout& layout, uint64_t seed, std::vector<float>* params) {
  params->assign(layout.total(), 0.0f);
  const bool tfixup = config.init == InitScheme::kTFixup;
  const bool xavier = config.init == InitScheme::kXavier;
  const double n = static_cast<double>(config.layers);
  // T-Fixup (Huang et al. 2020, Sec. 3.2, encoder-only form): embeddings N(0, d^-1/2) scaled by
  // (9N)^-1/4; value, attention output and both FFN weights scaled by 0.67 N^-1/4; query/key
  // plain Xavier.
  const float emb_scale = static_cast<float>(std::pow(9.0 * n, -0.25));
  const float block_scale = static_cast<float>(0.67 * std::pow(n, -0.25));
  const float emb_std = static_cast<float>(1.0 / std::sqrt(static_cast<double>(config.hidden)));
  for (size_t t = 0; t < layout.params().size(); ++t) {
    const ParamInfo& p = layout.params()[t];
    float* out = params->data() + p.offset;
    if (IsLayerNormWeight(p.name)) {
      std::fill(out, out + p.numel(), 1.0f);
    } else if (IsBias(p.name)) {
      // zero, already
    } else if (tfixup && absl::StartsWith(p.name, "bert.embeddings.")) {
      FillNormal(seed, t, emb_std * emb_scale, out, p.numel());
    } else if (xavier && absl::StartsWith(p.name, "bert.embeddings.")) {
      // As the Transformer code Xiong et al. build on (fairseq): N(0, d^-1/2). The LayerNorm
      // that follows the embedding sum makes their scale irrelevant to the forward pass.
      FillNormal(seed, t, emb_std, out, p.numel());
    } else if (xavier) {
      // Every other weight is a Linear's [out, in] matrix, heads included.
      FillXavierUniform(seed, t, p.shape, 1.0f, out);
    } else if (tfixup && IsEncoderWeight(p.name)) {
      const bool scaled = absl::StrContains(p.name, "attention.self.value.") ||
                          absl::StrContains(p.name, "attention.output.dense.") ||
                          absl::StrContains(p.name, "intermediate.dense.") || absl::StrContains(p.name, ".output.dense.");
      FillXavierUniform(seed, t, p.shape, scaled ? block_scale : 1.0f, out);
    } else {
      // BERT init everywhere else, and for the heads of a T-Fixup model (they sit outside the
      // residual stack whose depth T-Fixup's scaling is derived for).
      FillTruncatedNormal(seed, t, config.initializer_range, out, p.numel());
    }
  }
}

}  // namespace lamina
