#include "pretrain/evaluate.h"

#include <algorithm>
#include <cmath>

#include "absl/strings/str_cat.h"
#include "core/status.h"

namespace lamina {

double EvalResult::perplexity() const { return std::exp(loss); }

absl::StatusOr<EvalResult> EvaluateMlm(BertModel& model, const MlmValidationSet& val, int64_t batch_size,
                                       int64_t max_batches, Communicator* comm, const std::function<bool()>& stop) {
  if (max_batches < 0) return absl::InvalidArgumentError(absl::StrCat("max_batches ", max_batches, " is negative (0: all)"));
  int64_t batches = val.num_batches(batch_size);
  if (max_batches > 0) batches = std::min(batches, max_batches);
  const int rank = comm ? comm->rank() : 0, world = comm ? comm->world_size() : 1;
  double loss_sum = 0;
  int32_t counts[3] = {0, 0, 0};  // masked tokens, correct predictions, sequences
  ForwardOptions options;
  options.accuracy = true;
  for (int64_t round = 0; round * world < batches; ++round) {
    if (stop && stop()) return absl::CancelledError(absl::StrCat("evaluation stopped after ", round * world, " of ", batches, " batches"));
    const int64_t b = round * world + rank;
    if (b >= batches) continue;
    const EncoderBatch batch = val.Batch(b * batch_size, batch_size);
    ASSIGN_OR_RETURN(LossStats s, model.ForwardMlm(batch, options));
    loss_sum += s.loss_sum;
    counts[0] += static_cast<int32_t>(s.count);
    counts[1] += static_cast<int32_t>(s.correct);
    counts[2] += static_cast<int32_t>(batch.batch);
  }
  if (comm != nullptr && world > 1) {
    // The loss sum travels as f32 (relative error ~1e-7, far below what an evaluation resolves);
    // the counts as exact integers.
    float loss32 = static_cast<float>(loss_sum);
    RETURN_IF_ERROR(comm->AllReduce(CommBuffer{&loss32, 1, DType::kF32, Device::kCpu}, ReduceOp::kSum));
    RETURN_IF_ERROR(comm->AllReduce(CommBuffer{counts, 3, DType::kI32, Device::kCpu}, ReduceOp::kSum));
    loss_sum = loss32;
  }
  // Every rank has the same counts here, so all return the error together.
  if (counts[0] == 0)
    return absl::FailedPreconditionError(absl::StrCat(
        "no masked tokens to evaluate: the validation split has ", val.num_sequences(),
        " sequences (a dataset prepared with --val_docs 0 has none; prepare it with --val_docs N)"));
  EvalResult r;
  r.tokens = counts[0];
  r.sequences = counts[2];
  r.loss = loss_sum / counts[0];
  r.accuracy = static_cast<double>(counts[1]) / counts[0];
  return r;
}

}  // namespace lamina
