// Parameter counts and FLOPs of a training step, as `lamina info` and MFU figures report them.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "model/config.h"
#include "model/param_layout.h"

namespace lamina {

struct ParamGroupCount {
  std::string group;  // "embeddings", "encoder", "final_ln", "mlm_head", "pooler+classifier"
  int64_t count = 0;
};

// Parameters per group (tied decoder counted once, with the embeddings) and in total.
std::vector<ParamGroupCount> CountParams(const ParamLayout& layout);
int64_t TotalParams(const ParamLayout& layout);

// Matrix-multiply FLOPs per input token of one training step (forward + backward = 3x forward;
// 2 FLOPs per multiply-add): the encoder's projections and FFN, attention scores and context at
// sequence length `seq`, and the MLM head on the `mask_rate` fraction of tokens it predicts.
// Elementwise work (norms, softmax, GELU) is not counted, as in the usual MFU accounting.
double TrainFlopsPerToken(const BertConfig& config, int64_t seq, double mask_rate);

// The bf16 dense peak in TFLOP/s of a GPU named in `backend_name` (Backend::name()): H100 and
// H200 989, A100 312; 0 when unknown (MFU is then not reported unless a peak is given).
double KnownPeakTflops(const std::string& backend_name);

}  // namespace lamina
