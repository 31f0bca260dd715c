#include "pretrain/init_grad_norms.h"

#include "absl/strings/str_cat.h"
#include "core/status.h"
#include "data/loader.h"
#include "model/bert.h"
#include "pretrain/train_data.h"

namespace lamina {
namespace {

// Adds `x` into the running sum `sum` (the same groups and layers).
void AddNorms(const LayerGroupNorms& x, LayerGroupNorms* sum) {
  for (size_t g = 0; g < x.norms.size(); ++g) {
    if (!x.norms[g].has_value()) continue;
    auto& s = sum->norms[g];
    if (!s.has_value()) s = std::vector<double>(x.norms[g]->size(), 0.0);
    for (size_t l = 0; l < s->size(); ++l) (*s)[l] += (*x.norms[g])[l];
  }
}

void ScaleNorms(double f, LayerGroupNorms* n) {
  for (auto& g : n->norms)
    if (g.has_value())
      for (double& v : *g) v *= f;
}

}  // namespace

absl::StatusOr<InitGradNorms> MeasureInitGradNorms(const RunConfig& config, const InitGradNormsOptions& options,
                                                   Backend* backend) {
  if (options.batches <= 0) return absl::InvalidArgumentError(absl::StrCat("batches: must be positive, got ", options.batches));
  if (options.seeds <= 0) return absl::InvalidArgumentError(absl::StrCat("seeds: must be positive, got ", options.seeds));
  ASSIGN_OR_RETURN(const int accumulation, config.batch.Accumulation(1));
  ASSIGN_OR_RETURN(TrainData data, OpenTrainData(config));
  std::vector<int64_t> depths = options.depths;
  if (depths.empty()) depths = {config.model.layers};

  InitGradNorms result;
  result.seq_len = data.seq_len;
  for (int64_t depth : depths) {
    BertConfig model_config = config.model;
    model_config.layers = depth;
    auto created = BertModel::Create(model_config, HeadOptions{}, backend);
    if (!created.ok()) return Annotate(created.status(), absl::StrCat("depth ", depth));
    BertModel& model = **created;
    DepthGradNorms d;
    d.layers = depth;
    d.hidden_norm.assign(depth, 0.0);
    for (int64_t k = 0; k < options.seeds; ++k) {
      const uint64_t seed = config.run.seed + static_cast<uint64_t>(k);
      model.Initialize(seed);
      LoaderConfig lc;
      lc.seed = seed;
      lc.global_batch = config.batch.global_batch;
      lc.micro_batch = config.batch.micro_batch;
      lc.accumulation = accumulation;
      lc.masking = config.data.masking;
      lc.prefetch = 0;
      ASSIGN_OR_RETURN(std::unique_ptr<MlmTrainLoader> loader, MlmTrainLoader::Create(data.dataset, data.vocab, lc));
      for (int64_t b = 0; b < options.batches; ++b) {
        const StepBatch sb = loader->Next();
        model.ZeroGrads();
        ForwardOptions fo;
        fo.compute_grad = true;
        fo.grad_scale = sb.global_masked > 0 ? 1.0f / static_cast<float>(sb.global_masked) : 0.0f;
        for (const EncoderBatch& mb : sb.micro_batches) {
          RETURN_IF_ERROR(model.ForwardMlm(mb, fo).status());
          if (&mb == &sb.micro_batches.back()) {
            const std::vector<double> h = model.LayerOutputNorms();
            for (int64_t l = 0; l < depth; ++l) d.hidden_norm[l] += h[l];
          }
          model.Backward();
        }
        AddNorms(ComputeLayerGroupNorms(model.layout(), model.GradsToHost()), &d.grad_norm);
      }
    }
    const double inv = 1.0 / static_cast<double>(options.batches * options.seeds);
    ScaleNorms(inv, &d.grad_norm);
    for (double& h : d.hidden_norm) h *= inv;
    result.depths.push_back(std::move(d));
  }
  return result;
}

nlohmann::json InitGradNorms::ToJson(const RunConfig& config, const InitGradNormsOptions& options) const {
  nlohmann::json j_depths = nlohmann::json::array();
  for (const DepthGradNorms& d : depths)
    j_depths.push_back({{"layers", d.layers}, {"grad_norm", d.grad_norm.ToJson()}, {"hidden_norm", d.hidden_norm}});
  return {{"norm", NormName(config.model.norm)},
          {"init", InitName(config.model.init)},
          {"hidden", config.model.hidden},
          {"ffn", config.model.ffn},
          {"heads", config.model.heads},
          {"batches", options.batches},
          {"seeds", options.seeds},
          {"seed", config.run.seed},
          {"seq_len", seq_len},
          {"global_batch", config.batch.global_batch},
          {"micro_batch", config.batch.micro_batch},
          {"depths", j_depths}};
}

}  // namespace lamina
