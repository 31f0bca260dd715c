// Token + position + segment-type embeddings.
#include "model/cpu/cpu_backend.h"
#include "model/cpu/cpu_checks.h"

namespace lamina {
namespace {

// Checks ids/type_ids against the tables and returns T, the sequence length.
int64_t CheckEmbeddingArgs(const TensorView& ids, const TensorView& type_ids, int64_t vocab, int64_t positions,
                           int64_t types) {
  const int32_t* id = cpu::I32(ids, "ids");
  const int32_t* tid = cpu::I32(type_ids, "type_ids");
  LAMINA_CHECK(ids.rank() == 2, "ids must be [B, T], got ", ids.ToString());
  LAMINA_CHECK(type_ids.shape == ids.shape, "type_ids ", type_ids.ToString(), " vs ids ", ids.ToString());
  const int64_t seq = ids.dim(1);
  LAMINA_CHECK(seq <= positions, "sequence length ", seq, " exceeds the ", positions, " position embeddings");
  for (int64_t n = 0; n < ids.numel(); ++n) {
    LAMINA_CHECK(id[n] >= 0 && id[n] < vocab, "token id ", id[n], " at ", n, " outside [0, ", vocab, ")");
    LAMINA_CHECK(tid[n] >= 0 && tid[n] < types, "type id ", tid[n], " at ", n, " outside [0, ", types, ")");
  }
  return seq;
}

}  // namespace

void CpuBackend::EmbeddingForward(TensorView ids, TensorView type_ids, TensorView word, TensorView pos, TensorView type,
                                  float scale, TensorView out) {
  const float* w = cpu::F32(word, "word");
  const float* p = cpu::F32(pos, "pos");
  const float* ty = cpu::F32(type, "type");
  float* o = cpu::F32(out, "out");
  const int64_t hidden = word.cols();
  LAMINA_CHECK(pos.cols() == hidden && type.cols() == hidden, "embedding widths ", word.ToString(), " ", pos.ToString(),
               " ", type.ToString());
  const int64_t seq = CheckEmbeddingArgs(ids, type_ids, word.rows(), pos.rows(), type.rows());
  const int64_t n_rows = ids.numel();
  cpu::CheckMatrix(out, n_rows, hidden, "out");
  const int32_t* id = ids.as<int32_t>();
  const int32_t* tid = type_ids.as<int32_t>();
  for (int64_t n = 0; n < n_rows; ++n) {
    const float* wr = w + id[n] * hidden;
    const float* pr = p + (n % seq) * hidden;
    const float* tr = ty + tid[n] * hidden;
    float* orow = o + n * hidden;
    for (int64_t c = 0; c < hidden; ++c) orow[c] = (wr[c] + pr[c] + tr[c]) * scale;
  }
}

// Rows are visited in order, so repeated ids add up in the same order on every run.
void CpuBackend::EmbeddingBackward(TensorView ids, TensorView type_ids, TensorView dout, float scale, TensorView dword,
                                   TensorView dpos, TensorView dtype) {
  const float* g = cpu::F32(dout, "dout");
  float* dw = cpu::F32(dword, "dword");
  float* dp = cpu::F32(dpos, "dpos");
  float* dt = cpu::F32(dtype, "dtype");
  const int64_t hidden = dword.cols();
  LAMINA_CHECK(dpos.cols() == hidden && dtype.cols() == hidden, "embedding gradient widths ", dword.ToString(), " ",
               dpos.ToString(), " ", dtype.ToString());
  const int64_t seq = CheckEmbeddingArgs(ids, type_ids, dword.rows(), dpos.rows(), dtype.rows());
  const int64_t n_rows = ids.numel();
  cpu::CheckMatrix(dout, n_rows, hidden, "dout");
  const int32_t* id = ids.as<int32_t>();
  const int32_t* tid = type_ids.as<int32_t>();
  for (int64_t n = 0; n < n_rows; ++n) {
    const float* grow = g + n * hidden;
    float* wr = dw + id[n] * hidden;
    float* pr = dp + (n % seq) * hidden;
    float* tr = dt + tid[n] * hidden;
    for (int64_t c = 0; c < hidden; ++c) {
      const float v = grow[c] * scale;
      wr[c] += v;
      pr[c] += v;
      tr[c] += v;
    }
  }
}

}  // namespace lamina
