// Per-layer diagnostics of the encoder: the L2 norm of a flat buffer (gradients, or an
// optimizer's update) over each layer's parameter groups, and the norm of each layer's output.
// These are the quantities Xiong et al. 2020 (Section 3, the gradient norm against layer index)
// and Huang et al. 2020 (vanishing gradients and shrinking Adam updates in Post-LN) analyse;
// `run.log_layer_norms` writes them to metrics.jsonl and `lamina grad-norms` measures them at
// initialisation.
#pragma once

#include <array>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "nlohmann/json.hpp"
#include "model/param_layout.h"

namespace lamina {

// A layer's parameters, grouped as the analyses read them. The four matrices are the weights
// only (their biases are left out, as in the papers' figures); kLayerNorm is the gains and biases
// of the layer's LayerNorms (two per layer in Post-LN and Pre-LN, none in T-Fixup).
enum class ParamGroup { kAttnQkv, kAttnOut, kFfnW1, kFfnW2, kLayerNorm };
inline constexpr std::array<ParamGroup, 5> kParamGroups = {ParamGroup::kAttnQkv, ParamGroup::kAttnOut,
                                                            ParamGroup::kFfnW1, ParamGroup::kFfnW2,
                                                            ParamGroup::kLayerNorm};
// "attn_qkv", "attn_out", "ffn_w1", "ffn_w2", "layer_norm": the keys of the JSON records.
const char* ParamGroupName(ParamGroup g);

// norms[group][layer]; a group the variant lacks (kLayerNorm in T-Fixup) is nullopt.
struct LayerGroupNorms {
  std::array<std::optional<std::vector<double>>, kParamGroups.size()> norms;

  const std::optional<std::vector<double>>& of(ParamGroup g) const { return norms[static_cast<size_t>(g)]; }
  // {"attn_qkv": [per layer], ...}, leaving out absent groups.
  nlohmann::json ToJson() const;
};

// The L2 norm of `flat` (host, f32, layout.total() values in the layout's order) over each
// group of each encoder layer.
LayerGroupNorms ComputeLayerGroupNorms(const ParamLayout& layout, std::span<const float> flat);

// The same for the difference `after - before` of two such buffers: the update an optimizer step
// made to each group.
LayerGroupNorms ComputeLayerUpdateNorms(const ParamLayout& layout, std::span<const float> before,
                                        std::span<const float> after);

}  // namespace lamina
