// A batch as the encoder consumes it, on the host. The data layer produces it (MLM batches,
// GLUE pairs); the model copies it to the device.
#pragma once

#include <cstdint>
#include <vector>

namespace lamina {

struct EncoderBatch {
  int64_t batch = 0, seq = 0;
  std::vector<int32_t> input_ids;       // [batch * seq]
  std::vector<int32_t> token_types;     // [batch * seq]
  std::vector<int32_t> attention_mask;  // [batch * seq]: 1 = real token, 0 = padding
  std::vector<int32_t> mlm_positions;   // flat row b * seq + t of each position the MLM head predicts
  std::vector<int32_t> mlm_labels;      // the original token id at each of those positions
  std::vector<int32_t> labels;          // [batch] class labels (finetuning); empty for MLM
  // Global index of row 0 within the global batch of this optimizer step. Dropout streams are
  // offset by it, so a rank's slice draws the same masks the whole batch would.
  int64_t first_sample = 0;
};

}  // namespace lamina
