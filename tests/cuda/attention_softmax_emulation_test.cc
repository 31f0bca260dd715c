// The GEMM attention path's row kernels (model/cuda/attention.cuh: scale + key mask + softmax +
// dropout, and its backward) run on CPU threads (tests/cuda/emulation.h) and are checked against
// the definition computed in double: four columns per access (rows a multiple of 4) and one
// (any length, with a tail), scores, probabilities and their gradient as f32 and as bf16, each
// written over its input (as the backend runs them) and into its own buffer, dropout off and on
// with stream offsets that are and are not a multiple of 4, and a sequence whose keys are all
// masked.
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

using testing::AsFloat;

struct Case {
  int64_t batch, heads, seq;
  float p;
  uint64_t offset;
};

std::string Describe(const Case& c, int width, bool bf16, bool in_place) {
  return "batch " + std::to_string(c.batch) + " heads " + std::to_string(c.heads) + " seq " + std::to_string(c.seq) +
         " p " + std::to_string(c.p) + " offset " + std::to_string(c.offset) + " width " + std::to_string(width) +
         (bf16 ? " bf16" : " f32") + (in_place ? " in place" : "");
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

template <int V, typename TP>
void CheckRows(std::mt19937& gen, const Case& c, bool in_place) {
  SCOPED_TRACE(Describe(c, V, sizeof(TP) == 2, in_place));
  const int64_t rows = c.batch * c.heads * c.seq, n = rows * c.seq;
  const float scale = 0.125f;
  const RngContext rng{7, MakeStream(3, 1, 2), c.offset};
  std::normal_distribution<float> normal(0.0f, 8.0f);
  std::vector<float> score_values(n), grad_values(n);
  for (float& s : score_values) s = normal(gen);
  for (float& g : grad_values) g = normal(gen) / 8.0f;
  // The kernels read scores and gradients in TP: the definition starts from the stored values.
  const testing::HostValues<TP> stored_scores = testing::HostValues<TP>::From(score_values);
  testing::HostValues<TP> ddropped = testing::HostValues<TP>::From(grad_values);
  const std::vector<float>& scores = stored_scores.value;
  std::vector<int32_t> mask(c.batch * c.seq);
  for (int64_t b = 0; b < c.batch; ++b)  // the last sequence has no key at all when batch > 1
    for (int64_t t = 0; t < c.seq; ++t)
      mask[b * c.seq + t] = (b + 1 < c.batch || c.batch == 1) && (t == 0 || gen() % 4 != 0) ? 1 : 0;

  // In place, the probabilities overwrite the scores; otherwise the scores stay as they were.
  std::vector<TP> score_buffer = stored_scores.data;
  std::vector<TP> own_probs(n, TP{});
  std::vector<TP>& probs = in_place ? score_buffer : own_probs;
  std::vector<bf16_t> dropped(n, FloatToBf16Bits(NAN)), own_dscores(n, FloatToBf16Bits(NAN));
  emu::Launch(at::SoftmaxForwardKernel<V, TP>, at::RowGrid(rows), 1, at::kThreads, 0,
              static_cast<const TP*>(score_buffer.data()), static_cast<const int32_t*>(mask.data()), scale, rows,
              c.heads, c.seq, c.p, rng, probs.data(), dropped.data());
  if (!in_place) {
    EXPECT_EQ(score_buffer, stored_scores.data) << "the scores were written";
  }

  // The definition, in double.
  std::vector<double> want_p(n, 0.0), want_d(n, 0.0), ones(n, 1.0);
  std::vector<bool> keep(n, true);
  for (int64_t r = 0; r < rows; ++r) {
    const int32_t* keys = mask.data() + (r / (c.heads * c.seq)) * c.seq;
    double max = -INFINITY, sum = 0.0;
    for (int64_t j = 0; j < c.seq; ++j)
      if (keys[j] != 0) max = std::max(max, double{scores[r * c.seq + j]} * scale);
    for (int64_t j = 0; j < c.seq; ++j)
      if (keys[j] != 0) sum += std::exp(double{scores[r * c.seq + j]} * scale - max);
    for (int64_t j = 0; j < c.seq; ++j) {
      const int64_t i = r * c.seq + j;
      want_p[i] = keys[j] != 0 ? std::exp(double{scores[i]} * scale - max) / sum : 0.0;
      keep[i] = c.p == 0.0f || DropoutKeep(rng, static_cast<uint64_t>(i), c.p);
      want_d[i] = keep[i] ? want_p[i] / (1.0 - c.p) : 0.0;
    }
  }
  std::vector<float> got_p(n), got_d(n);
  for (int64_t i = 0; i < n; ++i) got_p[i] = AsFloat(probs[i]), got_d[i] = Bf16BitsToFloat(dropped[i]);
  // Probabilities are at most 1: f32 arithmetic (__expf) stays within 1e-5 of that, bf16 within 2^-8.
  ExpectNear(want_p, ones, got_p, sizeof(TP) == 2 ? 4e-3 : 1e-5, "probabilities");
  std::vector<double> size_d(n, 1.0 / (1.0 - c.p));
  ExpectNear(want_d, size_d, got_d, 4e-3, "dropped probabilities");

  // dscores overwrite the incoming gradient where both are bf16 (the backend's layout).
  bf16_t* dscores = own_dscores.data();
  if constexpr (sizeof(TP) == 2) {
    if (in_place) dscores = ddropped.data.data();
  }
  emu::Launch(at::SoftmaxBackwardKernel<V, TP>, at::RowGrid(rows), 1, at::kThreads, 0,
              static_cast<const TP*>(ddropped.data.data()), static_cast<const TP*>(probs.data()), scale, rows, c.seq,
              c.p, rng, dropped.data(), dscores);
  // dscores = scale * P * (dP - sum_j dP_j P_j), dP = keep * g / (1 - p), from the saved P.
  std::vector<double> want_s(n), size_s(n);
  for (int64_t r = 0; r < rows; ++r) {
    double dot = 0.0, dot_size = 0.0;
    for (int64_t j = 0; j < c.seq; ++j) {
      const int64_t i = r * c.seq + j;
      const double dp = keep[i] ? ddropped.value[i] / (1.0 - c.p) : 0.0;
      dot += dp * got_p[i];
      dot_size += std::fabs(dp * got_p[i]);
    }
    for (int64_t j = 0; j < c.seq; ++j) {
      const int64_t i = r * c.seq + j;
      const double dp = keep[i] ? ddropped.value[i] / (1.0 - c.p) : 0.0;
      want_s[i] = scale * got_p[i] * (dp - dot);
      size_s[i] = scale * got_p[i] * (std::fabs(dp) + dot_size);
    }
  }
  std::vector<float> got_s(n), got_d2(n);
  for (int64_t i = 0; i < n; ++i) got_s[i] = Bf16BitsToFloat(dscores[i]), got_d2[i] = Bf16BitsToFloat(dropped[i]);
  ExpectNear(want_s, size_s, got_s, 4e-3, "dscores");
  // The backward pass recomputes the dropped probabilities from the saved ones.
  std::vector<double> want_d2(n);
  for (int64_t i = 0; i < n; ++i) want_d2[i] = keep[i] ? got_p[i] / (1.0 - c.p) : 0.0;
  ExpectNear(want_d2, size_d, got_d2, 4e-3, "recomputed dropped probabilities");
}

// Each case in f32 and in bf16, in place and not.
template <int V>
void CheckCases(uint32_t seed, std::initializer_list<Case> cases) {
  std::mt19937 gen(seed);
  for (const Case& c : cases)
    for (const bool in_place : {false, true}) {
      CheckRows<V, float>(gen, c, in_place);
      CheckRows<V, bf16_t>(gen, c, in_place);
    }
}

TEST(AttentionSoftmaxEmulation, FourColumnsPerAccess) {
  CheckCases<4>(5, {Case{2, 2, 4, 0.0f, 0}, Case{1, 1, 132, 0.1f, 0}, Case{1, 1, 136, 0.1f, 6}, Case{2, 1, 8, 0.5f, 3}});
}

TEST(AttentionSoftmaxEmulation, OneColumnPerAccessAnyLength) {
  CheckCases<1>(6, {Case{2, 2, 1, 0.1f, 0}, Case{2, 1, 7, 0.1f, 1}, Case{1, 1, 130, 0.1f, 2}, Case{2, 1, 12, 0.0f, 0}});
}

#else

TEST(AttentionSoftmaxEmulation, NeedsTheCudaHeaders) { GTEST_SKIP() << "built without the CUDA toolkit's headers"; }

#endif  // LAMINA_EMULATE

}  // namespace
}  // namespace lamina
