// The GEMM attention path's row kernels (model/cuda/attention.cuh: scale + key mask + softmax +
// dropout, and its backward) run on CPU threads (tests/cuda/emulation.h) and are checked against
// the definition computed in double from the stored bf16 scores: four columns per access (rows a
// multiple of 4) and one (any length, with a tail), the saved dropout decisions bit by bit,
// dscores written over the incoming gradient (as the backend runs it) and into its own buffer,
// dropout off and on with stream offsets that are and are not a multiple of 4, rows of one and of
// several 128-column steps, rows longer than the 512 columns the kernels keep in registers (whose
// further columns are read again in each pass), and a sequence whose keys are all masked.
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <initializer_list>
#include <random>
#include <string>
#include <vector>

#include "core/bf16.h"
#include "gtest/gtest.h"
#include "tests/cuda/emulation.h"
#include "tests/cuda/host_values.h"

#if LAMINA_EMULATE
#include "model/cuda/attention.cuh"  // its #pragma unroll: -Wno-unknown-pragmas in tests/CMakeLists.txt
#endif

namespace lamina {
namespace {

#if LAMINA_EMULATE

using cuda::bf16_t;
namespace at = cuda::attention;

struct Case {
  int64_t batch, heads, seq;
  float p;
  uint64_t offset;
  int64_t max_rows = 0;  // run the kernels on the first rows only (0: all), to keep long rows quick
};

std::string Describe(const Case& c, int width, bool in_place) {
  return "batch " + std::to_string(c.batch) + " heads " + std::to_string(c.heads) + " seq " + std::to_string(c.seq) +
         " p " + std::to_string(c.p) + " offset " + std::to_string(c.offset) + " width " + std::to_string(width) +
         (c.max_rows > 0 ? " first " + std::to_string(c.max_rows) + " rows" : "") +
         (in_place ? ", dscores in place" : "");
}

// |got - want| within `rel` of `size` (the magnitude the value is computed from), and exact zeros
// where the definition has them.
void ExpectNear(const std::vector<double>& want, const std::vector<double>& size, const std::vector<float>& got,
                double rel, const std::string& what) {
  int bad = 0;
  for (size_t i = 0; i < want.size(); ++i) {
    const bool ok = want[i] == 0.0 ? got[i] == 0.0f : std::fabs(got[i] - want[i]) <= rel * size[i] + 1e-30;
    if (!ok && ++bad <= 5) ADD_FAILURE() << what << " [" << i << "]: " << got[i] << ", expected " << want[i];
  }
  EXPECT_EQ(bad, 0) << what;
}

template <int V>
void CheckRows(std::mt19937& gen, const Case& c, bool in_place) {
  SCOPED_TRACE(Describe(c, V, in_place));
  const int64_t all_rows = c.batch * c.heads * c.seq;
  const int64_t rows = c.max_rows > 0 ? std::min(c.max_rows, all_rows) : all_rows, n = rows * c.seq;
  const float scale = 0.125f;
  const RngContext rng{7, MakeStream(3, 1, 2), c.offset};
  std::normal_distribution<float> normal(0.0f, 8.0f);
  std::vector<float> score_values(n), grad_values(n);
  for (float& s : score_values) s = normal(gen);
  for (float& g : grad_values) g = normal(gen) / 8.0f;
  // The kernels read bf16 scores and gradients: the definition starts from the stored values.
  const testing::HostValues<bf16_t> scores = testing::HostValues<bf16_t>::From(score_values);
  testing::HostValues<bf16_t> ddropped = testing::HostValues<bf16_t>::From(grad_values);
  std::vector<int32_t> mask(c.batch * c.seq);
  for (int64_t b = 0; b < c.batch; ++b)  // the last sequence has no key at all when batch > 1
    for (int64_t t = 0; t < c.seq; ++t)
      mask[b * c.seq + t] = (b + 1 < c.batch || c.batch == 1) && (t == 0 || gen() % 4 != 0) ? 1 : 0;

  std::vector<bf16_t> dropped(n, FloatToBf16Bits(NAN));
  std::vector<float> lse(rows, NAN);
  const int64_t words = cuda::AttentionSoftmaxSaved::KeepWords(c.seq);
  std::vector<uint32_t> keep_bits(rows * words, 0xdeadbeefu);
  emu::Launch(at::SoftmaxForwardKernel<V>, at::RowGrid(rows), 1, at::kThreads, 0,
              static_cast<const bf16_t*>(scores.data.data()), static_cast<const int32_t*>(mask.data()), scale, rows,
              c.heads, c.seq, c.p, rng, dropped.data(), lse.data(), keep_bits.data());

  // The definition, in double.
  std::vector<double> want_p(n, 0.0), want_d(n, 0.0), want_lse(rows);
  std::vector<bool> keep(n, true);
  for (int64_t r = 0; r < rows; ++r) {
    const int32_t* keys = mask.data() + (r / (c.heads * c.seq)) * c.seq;
    const float* sr = scores.value.data() + r * c.seq;
    double max = -INFINITY, sum = 0.0;
    for (int64_t j = 0; j < c.seq; ++j)
      if (keys[j] != 0) max = std::max(max, double{sr[j]} * scale);
    for (int64_t j = 0; j < c.seq; ++j)
      if (keys[j] != 0) sum += std::exp(double{sr[j]} * scale - max);
    want_lse[r] = sum > 0.0 ? max + std::log(sum) : INFINITY;
    for (int64_t j = 0; j < c.seq; ++j) {
      const int64_t i = r * c.seq + j;
      want_p[i] = keys[j] != 0 ? std::exp(double{sr[j]} * scale - want_lse[r]) : 0.0;
      keep[i] = c.p == 0.0f || AttentionDropoutKeep(rng, static_cast<uint64_t>(r), c.seq, j, c.p);
      want_d[i] = keep[i] ? want_p[i] / (1.0 - c.p) : 0.0;
    }
  }
  int bad_lse = 0;
  for (int64_t r = 0; r < rows; ++r) {
    const bool ok = std::isinf(want_lse[r]) ? std::isinf(lse[r]) && lse[r] > 0
                                            : std::fabs(lse[r] - want_lse[r]) <= 1e-5 * (1.0 + std::fabs(want_lse[r]));
    if (!ok && ++bad_lse <= 5) ADD_FAILURE() << "lse [" << r << "]: " << lse[r] << ", expected " << want_lse[r];
  }
  if (c.p > 0.0f) {  // bit l of word 4 i + k: column 128 i + 4 l + k
    int bad_bits = 0;
    for (int64_t r = 0; r < rows; ++r)
      for (int64_t j = 0; j < c.seq; ++j) {
        const uint32_t word = keep_bits[r * words + j / 128 * 4 + j % 4];
        if (((word >> (j % 128 / 4)) & 1u) != (keep[r * c.seq + j] ? 1u : 0u) && ++bad_bits <= 5)
          ADD_FAILURE() << "keep bit of row " << r << " column " << j;
      }
  }
  std::vector<float> got_d(n);
  for (int64_t i = 0; i < n; ++i) got_d[i] = Bf16BitsToFloat(dropped[i]);
  // Probabilities are at most 1; the dropped ones are stored in bf16 (within 2^-8 relative).
  std::vector<double> size_d(n, 1.0 / (1.0 - c.p));
  ExpectNear(want_d, size_d, got_d, 4e-3, "dropped probabilities");

  // dscores over the incoming gradient (the backend's layout) or into their own buffer.
  std::vector<bf16_t> own_dscores(n, FloatToBf16Bits(NAN));
  bf16_t* dscores = in_place ? ddropped.data.data() : own_dscores.data();
  emu::Launch(at::SoftmaxBackwardKernel<V>, at::RowGrid(rows), 1, at::kThreads, 0,
              static_cast<const bf16_t*>(ddropped.data.data()), static_cast<const bf16_t*>(scores.data.data()),
              static_cast<const float*>(lse.data()), static_cast<const uint32_t*>(keep_bits.data()),
              static_cast<const int32_t*>(mask.data()), scale, rows, c.heads, c.seq, c.p, dscores);
  if (!in_place) {
    EXPECT_EQ(ddropped.data, testing::HostValues<bf16_t>::From(grad_values).data) << "the gradient was written";
  }
  // dscores = scale * P * (dP - sum_j dP_j P_j), dP = keep * g / (1 - p).
  std::vector<double> want_s(n), size_s(n);
  for (int64_t r = 0; r < rows; ++r) {
    double dot = 0.0, dot_size = 0.0;
    for (int64_t j = 0; j < c.seq; ++j) {
      const int64_t i = r * c.seq + j;
      const double dp = keep[i] ? ddropped.value[i] / (1.0 - c.p) : 0.0;
      dot += dp * want_p[i];
      dot_size += std::fabs(dp * want_p[i]);
    }
    for (int64_t j = 0; j < c.seq; ++j) {
      const int64_t i = r * c.seq + j;
      const double dp = keep[i] ? ddropped.value[i] / (1.0 - c.p) : 0.0;
      want_s[i] = scale * want_p[i] * (dp - dot);
      size_s[i] = scale * want_p[i] * (std::fabs(dp) + dot_size);
    }
  }
  std::vector<float> got_s(n);
  for (int64_t i = 0; i < n; ++i) got_s[i] = Bf16BitsToFloat(dscores[i]);
  ExpectNear(want_s, size_s, got_s, 4e-3, "dscores");
}

// Each case with dscores in place and not.
template <int V>
void CheckCases(uint32_t seed, std::initializer_list<Case> cases) {
  std::mt19937 gen(seed);
  for (const Case& c : cases)
    for (const bool in_place : {false, true}) CheckRows<V>(gen, c, in_place);
}

TEST(AttentionSoftmaxEmulation, FourColumnsPerAccess) {
  CheckCases<4>(5, {Case{2, 2, 4, 0.0f, 0}, Case{1, 1, 132, 0.1f, 0}, Case{1, 1, 136, 0.1f, 6}, Case{2, 1, 8, 0.5f, 3},
                    Case{1, 1, 644, 0.1f, 2, 20}});
}

TEST(AttentionSoftmaxEmulation, OneColumnPerAccessAnyLength) {
  CheckCases<1>(6, {Case{2, 2, 1, 0.1f, 0}, Case{2, 1, 7, 0.1f, 1}, Case{1, 1, 130, 0.1f, 2}, Case{2, 1, 12, 0.0f, 0},
                    Case{1, 1, 517, 0.1f, 0, 20}});
}

#else

TEST(AttentionSoftmaxEmulation, NeedsTheCudaHeaders) { GTEST_SKIP() << "built without the CUDA toolkit's headers"; }

#endif  // LAMINA_EMULATE

}  // namespace
}  // namespace lamina
