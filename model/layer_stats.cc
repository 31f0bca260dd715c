#include "model/layer_stats.h"

#include <cmath>

#include "core/status.h"

namespace lamina {
namespace {

struct Range {
  int64_t offset, size;
};

// The pieces of the flat buffer that make up group `g` of layer `w` (empty when the variant has
// none of it).
std::vector<Range> GroupRanges(const LayerOffsets& w, ParamGroup g, int64_t H, int64_t F) {
  switch (g) {
    case ParamGroup::kAttnQkv: return {{w.qkv_w, 3 * H * H}};
    case ParamGroup::kAttnOut: return {{w.attn_out_w, H * H}};
    case ParamGroup::kFfnW1: return {{w.ffn_in_w, F * H}};
    case ParamGroup::kFfnW2: return {{w.ffn_out_w, H * F}};
    case ParamGroup::kLayerNorm: {
      std::vector<Range> r;
      for (int64_t off : {w.ln_attn_g, w.ln_attn_b, w.ln_ffn_g, w.ln_ffn_b})
        if (off >= 0) r.push_back({off, H});
      return r;
    }
  }
  return {};
}

// value(i) over each group's elements i, summed as squares: the norms of every group and layer.
template <typename ValueFn>
LayerGroupNorms GroupNorms(const ParamLayout& layout, const ValueFn& value) {
  LayerGroupNorms out;
  if (layout.layers.empty()) return out;
  // The widths from the layout itself: W1 is [F, H].
  const ParamInfo* w1 = *layout.Find("bert.encoder.layer.0.intermediate.dense.weight");
  const int64_t F = w1->shape[0], H = w1->shape[1];
  for (ParamGroup g : kParamGroups) {
    if (GroupRanges(layout.layers[0], g, H, F).empty()) continue;
    std::vector<double> per_layer;
    for (const LayerOffsets& w : layout.layers) {
      double sum = 0;
      for (const Range& r : GroupRanges(w, g, H, F))
        for (int64_t i = r.offset; i < r.offset + r.size; ++i) {
          const double v = value(i);
          sum += v * v;
        }
      per_layer.push_back(std::sqrt(sum));
    }
    out.norms[static_cast<size_t>(g)] = std::move(per_layer);
  }
  return out;
}

}  // namespace

const char* ParamGroupName(ParamGroup g) {
  switch (g) {
    case ParamGroup::kAttnQkv: return "attn_qkv";
    case ParamGroup::kAttnOut: return "attn_out";
    case ParamGroup::kFfnW1: return "ffn_w1";
    case ParamGroup::kFfnW2: return "ffn_w2";
    case ParamGroup::kLayerNorm: return "layer_norm";
  }
  return "?";
}

nlohmann::json LayerGroupNorms::ToJson() const {
  nlohmann::json j = nlohmann::json::object();
  for (ParamGroup g : kParamGroups)
    if (of(g).has_value()) j[ParamGroupName(g)] = *of(g);
  return j;
}

LayerGroupNorms ComputeLayerGroupNorms(const ParamLayout& layout, std::span<const float> flat) {
  LAMINA_CHECK(static_cast<int64_t>(flat.size()) == layout.total(), "buffer of ", flat.size(), " values, layout of ",
               layout.total());
  return GroupNorms(layout, [&](int64_t i) { return static_cast<double>(flat[i]); });
}

LayerGroupNorms ComputeLayerUpdateNorms(const ParamLayout& layout, std::span<const float> before,
                                        std::span<const float> after) {
  LAMINA_CHECK(static_cast<int64_t>(before.size()) == layout.total() && after.size() == before.size(),
               "buffers of ", before.size(), " and ", after.size(), " values, layout of ", layout.total());
  return GroupNorms(layout, [&](int64_t i) { return static_cast<double>(after[i]) - before[i]; });
}

}  // namespace lamina
