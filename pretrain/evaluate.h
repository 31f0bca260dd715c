// Validation MLM loss and masked-token accuracy over the fixed validation set.
#pragma once

#include <functional>

#include <cstdint>

#include "absl/status/statusor.h"
#include "data/loader.h"
#include "dist/communicator.h"
#include "model/bert.h"

namespace lamina {

struct EvalResult {
  double loss = 0;       // mean cross-entropy per masked token (nats)
  double accuracy = 0;   // fraction of masked tokens predicted exactly
  int64_t tokens = 0;    // masked tokens evaluated
  int64_t sequences = 0;
  double perplexity() const;
};

// Evaluates batches of `batch_size` (the first `max_batches`, or all when 0) without dropout.
// With a communicator the batches are shared out over the ranks and the sums all-reduced, so
// every rank returns the same result. `stop`, when given, is asked before each round of batches
// (one batch per rank; every rank asks it equally often, so it may agree through collectives);
// when it answers true the evaluation ends with a Cancelled status.
absl::StatusOr<EvalResult> EvaluateMlm(BertModel& model, const MlmValidationSet& val, int64_t batch_size,
                                       int64_t max_batches, Communicator* comm = nullptr,
                                       const std::function<bool()>& stop = nullptr);

}  // namespace lamina
