// The row-sum kernels (model/cuda/row_sums.cuh: bias gradients, LayerNorm's dgamma/dbeta, the
// word-embedding gradient) run on CPU threads (tests/cuda/emulation.h) and checked against sums
// in double, at each access width (8, 2 and 1 elements) the launchers pick, for bf16 and f32
// inputs, across chunk and tile boundaries and runs of equal ids longer than a block; and the GELU
// backward fused with the bias gradient.
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <numeric>
#include <random>
#include <string>
#include <vector>

#include "gtest/gtest.h"
#include "model/cpu/gelu.h"
#include "tests/cuda/emulation.h"
#include "tests/cuda/host_values.h"

#if LAMINA_EMULATE
#include "model/cuda/row_sums.cuh"  // its #pragma unroll: -Wno-unknown-pragmas in tests/CMakeLists.txt
#endif

namespace lamina {
namespace {

#if LAMINA_EMULATE

using cuda::bf16_t;
using cuda::VectorWidth;
namespace rs = cuda::row_sums;

using testing::AsFloat;
using testing::HostValues;
using testing::TestRandom;

// Values in [-2, 2] as the element type T.
template <typename T>
HostValues<T> RandomInput(std::mt19937& gen, int64_t n) {
  return testing::RandomValues<T>(gen, n, 2.0f);
}

// got[i] against start[i] + want[i], where want[i] was summed in double and `scale[i]` bounds
// the size of its terms' sum (sum of |term|): fp32 summation of a few hundred terms stays well
// inside 1e-5 of that.
void ExpectSums(const std::vector<float>& got, const std::vector<float>& start, const std::vector<double>& want,
                const std::vector<double>& scale, const std::string& what) {
  ASSERT_EQ(got.size(), want.size());
  int bad = 0;
  for (size_t i = 0; i < got.size(); ++i) {
    const double expected = start[i] + want[i];
    if (!(std::fabs(got[i] - expected) <= 1e-5 * (scale[i] + std::fabs(start[i])) + 1e-30) && ++bad <= 5)
      ADD_FAILURE() << what << " [" << i << "]: " << got[i] << ", expected " << expected;
  }
  EXPECT_EQ(bad, 0) << what;
}

std::vector<float> Nonzero(std::mt19937& gen, int64_t n) {
  std::uniform_real_distribution<float> uni(-1.0f, 1.0f);
  std::vector<float> v(n);
  for (float& x : v) x = uni(gen);
  return v;
}

// Column sums of `rows` rows of `cols` values, one row every `pitch` elements from `offset`
// elements into the buffer (an offset that is not a multiple of 8 allows only narrower accesses).
template <typename T>
void CheckColumnSum(std::mt19937& gen, int64_t rows, int64_t cols, int64_t pitch, int64_t offset, int expect_width) {
  const std::string tag = std::string(sizeof(T) == 2 ? "bf16" : "f32") + " rows " + std::to_string(rows) + " cols " +
                          std::to_string(cols) + " pitch " + std::to_string(pitch) + " offset " +
                          std::to_string(offset);
  SCOPED_TRACE(tag);
  const HostValues<T> buffer = RandomInput<T>(gen, offset + rows * pitch);
  const T* x = buffer.data.data() + offset;
  const float* value = buffer.value.data() + offset;
  const int width = VectorWidth(x, cols, pitch, sizeof(T));
  ASSERT_EQ(width, expect_width);
  const int64_t chunks = (rows + rs::kChunkRows - 1) / rs::kChunkRows;
  std::vector<float> partial(chunks * cols, NAN);
  const std::vector<float> start = Nonzero(gen, cols);
  std::vector<float> out = start;
  LAMINA_DISPATCH_WIDTH(width, V, {
    emu::Launch(rs::ColumnPartialKernel<V, T>, static_cast<unsigned>((cols + 32 * V - 1) / (32 * V)),
                static_cast<unsigned>(chunks), rs::kThreads, rs::SmemBytes(V, 1), x, partial.data(), rows, cols,
                pitch);
  });
  emu::Launch(rs::ChunkFinalizeKernel, rs::FinalizeBlocks(cols), 1, rs::kThreads, rs::SmemBytes(1, 1),
              static_cast<const float*>(partial.data()), 1.0f, out.data(), chunks, cols);
  std::vector<double> want(cols, 0.0), scale(cols, 0.0);
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t c = 0; c < cols; ++c) {
      want[c] += value[r * pitch + c];
      scale[c] += std::fabs(value[r * pitch + c]);
    }
  ExpectSums(out, start, want, scale, "column sum");
}

// Rows across one and several chunks of 128; widths 8 (a multiple of 8 columns, over one tile of
// 256 and under it), 2 (even) and 1 (odd); padded rows (the logits' bias gradient: 30522 classes
// in rows of 30528 read 2 at a time); rows whose start allows only width 2 or 1.
TEST(RowSumsEmulation, ColumnSumsAtEveryWidth) {
  TestRandom random;
  std::mt19937& gen = random.gen();
  int64_t cols = 8 * random.Pick(33, 40);
  CheckColumnSum<bf16_t>(gen, random.Pick(1, 300), cols, cols, 0, 8);
  cols = 8 * random.Pick(1, 12);
  CheckColumnSum<float>(gen, random.Pick(129, 300), cols, cols, 0, 8);
  cols = 8 * random.Pick(8, 10) + 2 * random.Pick(1, 3);
  CheckColumnSum<bf16_t>(gen, random.Pick(1, 300), cols, cols, 0, 2);
  cols = 8 * random.Pick(0, 2) + 2 * random.Pick(1, 3);
  CheckColumnSum<float>(gen, random.Pick(1, 200), cols, cols, 0, 2);
  cols = 2 * random.Pick(1, 40) + 1;
  CheckColumnSum<bf16_t>(gen, random.Pick(1, 300), cols, cols, 0, 1);
  CheckColumnSum<float>(gen, 128, 1, 1, 0, 1);
  cols = 8 * random.Pick(1, 12);
  CheckColumnSum<bf16_t>(gen, random.Pick(1, 200), cols, cols + 8, 0, 8);  // padded rows, whole 16-byte groups
  cols = 8 * random.Pick(1, 12) + 2 * random.Pick(1, 3);
  CheckColumnSum<bf16_t>(gen, random.Pick(1, 200), cols, (cols + 7) / 8 * 8, 0, 2);  // padded like the logits
  cols = 8 * random.Pick(1, 12);
  CheckColumnSum<bf16_t>(gen, random.Pick(1, 200), cols, cols, 2, 2);  // 4-byte aligned rows
  CheckColumnSum<bf16_t>(gen, random.Pick(1, 200), cols, cols, 1, 1);  // 2-byte aligned rows
}

// The GELU backward with the bias gradient in the same pass: dpre written over dout against the
// reference derivative (model/cpu/gelu.h), and its column sums against double sums of the stored
// (rounded) dpre, at widths 8, 2 and 1, across chunks; each GELU form.
template <typename T, bool kTanh = false>
void CheckGeluBackwardColumnSum(std::mt19937& gen, int64_t rows, int64_t cols, int expect_width) {
  SCOPED_TRACE(std::string(sizeof(T) == 2 ? "bf16" : "f32") + (kTanh ? " tanh" : " erf") + " rows " +
               std::to_string(rows) + " cols " + std::to_string(cols));
  HostValues<T> dout = RandomInput<T>(gen, rows * cols);
  const HostValues<T> pre = RandomInput<T>(gen, rows * cols);
  const int width = std::min(VectorWidth(dout.data.data(), cols, cols, sizeof(T)),
                             VectorWidth(pre.data.data(), cols, cols, sizeof(T)));
  ASSERT_EQ(width, expect_width);
  const int64_t chunks = (rows + rs::kChunkRows - 1) / rs::kChunkRows;
  std::vector<float> partial(chunks * cols, NAN);
  LAMINA_DISPATCH_WIDTH(width, V, {
    emu::Launch(rs::GeluBackwardColumnPartialKernel<V, kTanh, T, T>, static_cast<unsigned>((cols + 32 * V - 1) / (32 * V)),
                static_cast<unsigned>(chunks), rs::kThreads, rs::SmemBytes(V, 1), dout.data.data(),
                static_cast<const T*>(pre.data.data()), partial.data(), rows, cols);
  });
  const std::vector<float> start = Nonzero(gen, cols);
  std::vector<float> out = start;
  emu::Launch(rs::ChunkFinalizeKernel, rs::FinalizeBlocks(cols), 1, rs::kThreads, rs::SmemBytes(1, 1),
              static_cast<const float*>(partial.data()), 1.0f, out.data(), chunks, cols);
  std::vector<double> want(cols, 0.0), scale(cols, 0.0);
  int bad = 0;
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t c = 0; c < cols; ++c) {
      const int64_t i = r * cols + c;
      const float got = AsFloat(dout.data[i]);
      const double expected =
          dout.value[i] * static_cast<double>(kTanh ? cpu::GeluTanhDerivative(pre.value[i]) : cpu::GeluDerivative(pre.value[i]));
      // bf16 rounding of the result (2^-8 relative, with a margin), f32 arithmetic otherwise.
      const double bound = (sizeof(T) == 2 ? 1.0 / 128 : 1e-5) * std::fabs(dout.value[i]) * 1.2 + 1e-7;
      if (!(std::fabs(got - expected) <= bound) && ++bad <= 5)
        ADD_FAILURE() << "dpre [" << i << "]: " << got << ", expected " << expected;
      want[c] += got;
      scale[c] += std::fabs(got);
    }
  EXPECT_EQ(bad, 0) << "dpre";
  ExpectSums(out, start, want, scale, "bias gradient");
}

TEST(RowSumsEmulation, GeluBackwardWithBiasGradient) {
  TestRandom random;
  std::mt19937& gen = random.gen();
  CheckGeluBackwardColumnSum<bf16_t>(gen, random.Pick(129, 300), 8 * random.Pick(33, 40), 8);
  CheckGeluBackwardColumnSum<float>(gen, random.Pick(1, 200), 8 * random.Pick(1, 12), 8);
  CheckGeluBackwardColumnSum<bf16_t>(gen, random.Pick(1, 200), 8 * random.Pick(0, 4) + 2 * random.Pick(1, 3), 2);
  CheckGeluBackwardColumnSum<float>(gen, random.Pick(1, 200), 8 * random.Pick(0, 4) + 2 * random.Pick(1, 3), 2);
  CheckGeluBackwardColumnSum<bf16_t>(gen, random.Pick(1, 200), 2 * random.Pick(1, 40) + 1, 1);
  CheckGeluBackwardColumnSum<bf16_t, true>(gen, random.Pick(129, 300), 8 * random.Pick(33, 40), 8);
  CheckGeluBackwardColumnSum<float, true>(gen, random.Pick(1, 200), 8 * random.Pick(0, 4) + 2 * random.Pick(1, 3), 2);
}

TEST(RowSumsEmulation, LayerNormParameterGradients) {
  TestRandom random;
  std::mt19937& gen = random.gen();
  for (const int64_t hidden :
       {8 * random.Pick(20, 40), 8 * random.Pick(0, 10) + 2 * random.Pick(1, 3), 2 * random.Pick(1, 40) + 1}) {
    const int64_t rows = random.Pick(1, 300), chunks = (rows + rs::kChunkRows - 1) / rs::kChunkRows;
    SCOPED_TRACE("rows " + std::to_string(rows) + " hidden " + std::to_string(hidden));
    const HostValues<bf16_t> dout = RandomInput<bf16_t>(gen, rows * hidden),
                             x = RandomInput<bf16_t>(gen, rows * hidden);
    std::vector<float> mean(rows), rstd(rows);
    for (int64_t r = 0; r < rows; ++r) {
      double s = 0, sq = 0;
      for (int64_t c = 0; c < hidden; ++c) s += x.value[r * hidden + c];
      mean[r] = static_cast<float>(s / hidden);
      for (int64_t c = 0; c < hidden; ++c) sq += std::pow(x.value[r * hidden + c] - mean[r], 2);
      rstd[r] = static_cast<float>(1.0 / std::sqrt(sq / hidden + 1e-5));
    }
    const int width =
        std::min(VectorWidth(dout.data.data(), hidden, hidden, 2), VectorWidth(x.data.data(), hidden, hidden, 2));
    std::vector<float> partial(2 * chunks * hidden, NAN);
    LAMINA_DISPATCH_WIDTH(width, V, {
      emu::Launch(rs::LayerNormParamPartialKernel<V, bf16_t, bf16_t>,
                  static_cast<unsigned>((hidden + 32 * V - 1) / (32 * V)), static_cast<unsigned>(chunks), rs::kThreads,
                  rs::SmemBytes(V, 2), dout.data.data(), x.data.data(), static_cast<const float*>(mean.data()),
                  static_cast<const float*>(rstd.data()), partial.data(), rows, hidden, chunks);
    });
    const std::vector<float> dgamma0 = Nonzero(gen, hidden), dbeta0 = Nonzero(gen, hidden);
    std::vector<float> dgamma = dgamma0, dbeta = dbeta0;
    const unsigned fin = rs::FinalizeBlocks(hidden);
    emu::Launch(rs::ChunkFinalizeKernel, fin, 1, rs::kThreads, rs::SmemBytes(1, 1),
                static_cast<const float*>(partial.data()), 1.0f, dgamma.data(), chunks, hidden);
    emu::Launch(rs::ChunkFinalizeKernel, fin, 1, rs::kThreads, rs::SmemBytes(1, 1),
                static_cast<const float*>(partial.data() + chunks * hidden), 1.0f, dbeta.data(), chunks, hidden);
    std::vector<double> want_g(hidden, 0.0), want_b(hidden, 0.0), scale_g(hidden, 0.0), scale_b(hidden, 0.0);
    for (int64_t r = 0; r < rows; ++r)
      for (int64_t c = 0; c < hidden; ++c) {
        const double g = dout.value[r * hidden + c];
        const double term = g * ((x.value[r * hidden + c] - mean[r]) * static_cast<double>(rstd[r]));
        want_g[c] += term;
        scale_g[c] += std::fabs(term);
        want_b[c] += g;
        scale_b[c] += std::fabs(g);
      }
    ExpectSums(dgamma, dgamma0, want_g, scale_g, "dgamma");
    ExpectSums(dbeta, dbeta0, want_b, scale_b, "dbeta");
  }
}

// dword after WordRunSumKernel over `ids` with a grid of `blocks`.
template <typename T>
std::vector<float> WordGradient(const std::vector<int32_t>& ids, const HostValues<T>& dout, int64_t hidden, float scale,
                                const std::vector<float>& dword0, unsigned blocks) {
  const int64_t rows = static_cast<int64_t>(ids.size());
  std::vector<int32_t> order(rows);
  std::iota(order.begin(), order.end(), 0);
  std::stable_sort(order.begin(), order.end(), [&](int32_t a, int32_t b) { return ids[a] < ids[b]; });
  std::vector<int32_t> sorted(rows);
  for (int64_t i = 0; i < rows; ++i) sorted[i] = ids[order[i]];
  std::vector<float> dword = dword0;
  LAMINA_DISPATCH_WIDTH(VectorWidth(dout.data.data(), hidden, hidden, sizeof(T)), V, {
    emu::Launch(rs::WordRunSumKernel<V, T>, blocks, 1, rs::kThreads, rs::SmemBytes(V, 1),
                static_cast<const int32_t*>(sorted.data()), static_cast<const int32_t*>(order.data()),
                dout.data.data(), scale, dword.data(), rows, hidden);
  });
  return dword;
}

// (Each run costs a few block-wide barriers, which are slow with 256 threads on a few cores:
// the cases keep the number of distinct ids small.)
template <typename T>
void CheckWordGradient(std::mt19937& gen, int64_t rows, int64_t hidden, int64_t vocab, double mask_share,
                       bool other_grid = false) {
  const std::string tag = std::string(sizeof(T) == 2 ? "bf16" : "f32") + " rows " + std::to_string(rows) +
                          " hidden " + std::to_string(hidden) + " mask share " + std::to_string(mask_share);
  SCOPED_TRACE(tag);
  constexpr int32_t kMask = 3;
  std::bernoulli_distribution masked(mask_share);
  std::uniform_int_distribution<int32_t> any(0, static_cast<int32_t>(vocab - 1));
  std::vector<int32_t> ids(rows);
  for (int32_t& id : ids) id = masked(gen) ? kMask : any(gen);
  const HostValues<T> dout = RandomInput<T>(gen, rows * hidden);
  const std::vector<float> dword0 = Nonzero(gen, vocab * hidden);
  const float scale = 1.5f;
  const std::vector<float> got = WordGradient(ids, dout, hidden, scale, dword0, 7);
  std::vector<double> want(vocab * hidden, 0.0), size(vocab * hidden, 0.0);
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t c = 0; c < hidden; ++c) {
      want[ids[r] * hidden + c] += scale * static_cast<double>(dout.value[r * hidden + c]);
      size[ids[r] * hidden + c] += scale * std::fabs(dout.value[r * hidden + c]);
    }
  ExpectSums(got, dword0, want, size, "dword");
  // Each run is summed by one block in an order fixed by the ids alone: another grid gives the
  // same bits.
  if (other_grid) {
    EXPECT_EQ(WordGradient(ids, dout, hidden, scale, dword0, 2), got) << "depends on the grid";
  }
}

// Runs of the [MASK] id longer than a block's 256-position window, ids that occur once, ids
// that do not occur (their rows stay as they were), and each access width.
TEST(RowSumsEmulation, WordEmbeddingGradient) {
  TestRandom random;
  std::mt19937& gen = random.gen();
  // Width 8 with two column tiles, width 8 with single ids, width 2, width 1.
  CheckWordGradient<bf16_t>(gen, random.Pick(500, 700), 8 * random.Pick(33, 40), 12, 0.6, true);
  CheckWordGradient<float>(gen, random.Pick(1, 60), 8 * random.Pick(1, 4), 200, 0.1);
  CheckWordGradient<bf16_t>(gen, random.Pick(260, 400), 8 * random.Pick(0, 10) + 2 * random.Pick(1, 3), 12, 0.8);
  CheckWordGradient<bf16_t>(gen, random.Pick(1, 300), 2 * random.Pick(1, 40) + 1, 10, 0.3);
  CheckWordGradient<float>(gen, 1, 5, 4, 0.0);  // one token
}

// The window arithmetic at its edges: runs of exactly 256 and 257 equal ids, at the end of
// the rows and before another run.
TEST(RowSumsEmulation, WordRunsAtTheWindowEdges) {
  std::mt19937 gen(11);
  const int64_t hidden = 16, vocab = 4;
  for (const int64_t run : {255, 256, 257, 512, 513}) {
    for (const bool tail : {false, true}) {
      SCOPED_TRACE("run " + std::to_string(run) + (tail ? " then another id" : " alone"));
      std::vector<int32_t> ids(run, 1);
      if (tail) ids.insert(ids.end(), 3, 2);
      const HostValues<float> dout = RandomInput<float>(gen, static_cast<int64_t>(ids.size()) * hidden);
      const std::vector<float> dword0(vocab * hidden, 0.0f);
      const std::vector<float> got = WordGradient(ids, dout, hidden, 1.0f, dword0, 3);
      std::vector<double> want(vocab * hidden, 0.0), size(vocab * hidden, 0.0);
      for (size_t r = 0; r < ids.size(); ++r)
        for (int64_t c = 0; c < hidden; ++c) {
          want[ids[r] * hidden + c] += dout.value[r * hidden + c];
          size[ids[r] * hidden + c] += std::fabs(dout.value[r * hidden + c]);
        }
      ExpectSums(got, dword0, want, size, "dword");
    }
  }
}

#else

TEST(RowSumsEmulation, NeedsTheCudaHeaders) { GTEST_SKIP() << "built without the CUDA toolkit's headers"; }

#endif  // LAMINA_EMULATE

}  // namespace
}  // namespace lamina
