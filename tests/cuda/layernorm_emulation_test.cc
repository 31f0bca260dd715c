// The layer norm kernels (model/cuda/layernorm.cuh) run on CPU threads (tests/cuda/emulation.h)
// and are checked against the CPU backend: the forward pass with the branch's dropout and the
// residual add fused in (dropout off, on, and on from a stream offset that is not a multiple of
// 4), and dx of the backward pass (written and accumulated) with that dropout's backward fused
// in (over dout, or into a tensor of its own), in bf16 and f32, for the 8-wide
// register-cached kernels and the one-element kernels, with row counts that leave a block part
// empty; and the 8-wide backward's partial sums of dgamma and dbeta, over one chunk of rows and
// over several, the last one partial.
#include <cmath>
#include <cstdint>
#include <random>
#include <string>
#include <vector>

#include "core/tensor.h"
#include "gtest/gtest.h"
#include "model/backend.h"
#include "tests/cuda/emulation.h"
#include "tests/cuda/host_values.h"

#if LAMINA_EMULATE
#include "model/cuda/layernorm.cuh"  // its #pragma unroll: -Wno-unknown-pragmas in tests/CMakeLists.txt
#endif

namespace lamina {
namespace {

#if LAMINA_EMULATE

using cuda::bf16_t;
namespace ln = cuda::layernorm;

using testing::AsFloats;
using testing::HostValues;
using testing::RandomFloats;
using testing::RandomValues;

// |got - want| <= rel * size + abs, element by element.
void ExpectNear(const std::vector<float>& got, const std::vector<float>& want, const std::vector<float>& size,
                double rel, double abs, const std::string& what) {
  ASSERT_EQ(got.size(), want.size());
  int bad = 0;
  for (size_t i = 0; i < want.size(); ++i)
    if (!(std::fabs(got[i] - want[i]) <= rel * size[i] + abs) && ++bad <= 5)
      ADD_FAILURE() << what << " [" << i << "]: " << got[i] << ", expected " << want[i];
  EXPECT_EQ(bad, 0) << what;
}

// Rounding of the stored element type: 2^-8 relative for bf16 (with a margin), f32 arithmetic
// otherwise.
template <typename T>
constexpr double Rounding() {
  return sizeof(T) == 2 ? 1.0 / 128 : 1e-5;
}

template <typename T>
void CheckForward(std::mt19937& gen, int64_t rows, int64_t hidden, bool wide, float p, uint64_t offset) {
  SCOPED_TRACE("rows " + std::to_string(rows) + " hidden " + std::to_string(hidden) + (wide ? " 8-wide" : " scalar") +
               " p " + std::to_string(p) + " offset " + std::to_string(offset) + (sizeof(T) == 2 ? " bf16" : " f32"));
  const int64_t n = rows * hidden;
  const HostValues<T> a = RandomValues<T>(gen, n, 2.0f), b = RandomValues<T>(gen, n, 1.0f),
                      gamma = RandomValues<T>(gen, hidden, 1.0f), beta = RandomValues<T>(gen, hidden, 0.5f);
  const RngContext rng{9, MakeStream(4, 2, 3), offset};
  std::vector<T> sum(n), out(n);
  std::vector<float> mean(rows, NAN), rstd(rows, NAN);
  auto kernel = wide ? ln::LayerNormForward8Kernel<T, T, T> : ln::LayerNormForwardKernel<T, T, T>;
  emu::Launch(kernel, static_cast<unsigned>((rows + ln::kRowsPerBlock - 1) / ln::kRowsPerBlock), 1,
              ln::kRowsPerBlock * 32, 0, static_cast<const T*>(a.data.data()), static_cast<const T*>(b.data.data()),
              cuda::ElementDropout(rng, p), static_cast<const T*>(gamma.data.data()),
              static_cast<const T*>(beta.data.data()), 1e-5f, sum.data(), out.data(), mean.data(), rstd.data(), rows,
              hidden);

  // The reference: sum = a + Dropout(b) in f32 (a dropped element differs by |b| / (1 - p), far
  // more than the rounding), then the norm of the kernel's stored sum.
  std::unique_ptr<Backend> cpu = MakeCpuBackend();
  std::vector<float> av = a.value, bv = b.value, gv = gamma.value, bev = beta.value, want_sum(n), want_out(n),
                     want_mean(rows), want_rstd(rows), size(n);
  cpu->AddLayerNormForward(CpuF32(av.data(), {rows, hidden}), CpuF32(bv.data(), {rows, hidden}), p, rng,
                           CpuF32(gv.data(), {hidden}), CpuF32(bev.data(), {hidden}), 1e-5f,
                           CpuF32(want_sum.data(), {rows, hidden}), CpuF32(want_out.data(), {rows, hidden}),
                           CpuF32(want_mean.data(), {rows}), CpuF32(want_rstd.data(), {rows}));
  for (int64_t i = 0; i < n; ++i) size[i] = std::fabs(av[i]) + 2 * std::fabs(bv[i]);
  std::vector<float> got_sum = AsFloats(sum);
  ExpectNear(got_sum, want_sum, size, Rounding<T>(), 1e-6, "sum");
  cpu->LayerNormForward(CpuF32(got_sum.data(), {rows, hidden}), CpuF32(gv.data(), {hidden}),
                        CpuF32(bev.data(), {hidden}), 1e-5f, CpuF32(want_out.data(), {rows, hidden}),
                        CpuF32(want_mean.data(), {rows}), CpuF32(want_rstd.data(), {rows}));
  for (int64_t i = 0; i < n; ++i) size[i] = std::fabs(want_out[i]) + std::fabs(bev[i % hidden]);
  ExpectNear(AsFloats(out), want_out, size, Rounding<T>(), 1e-5, "out");
  ExpectNear(mean, want_mean, std::vector<float>(rows, 1.0f), 1e-5, 0.0, "mean");
  ExpectNear(rstd, want_rstd, want_rstd, 1e-4, 0.0, "rstd");
}

// dx, and with p > 0 the dropped copy of the final dx: written over dout (alias), as Pre-LN
// does, or into a tensor of its own.
template <typename T>
void CheckBackward(std::mt19937& gen, int64_t rows, int64_t hidden, bool wide, bool accumulate, float p,
                   uint64_t offset, bool alias) {
  SCOPED_TRACE("rows " + std::to_string(rows) + " hidden " + std::to_string(hidden) + (wide ? " 8-wide" : " scalar") +
               (accumulate ? " accumulate" : "") + " p " + std::to_string(p) + " offset " + std::to_string(offset) +
               (alias ? " over dout" : "") + (sizeof(T) == 2 ? " bf16" : " f32"));
  const int64_t n = rows * hidden;
  const HostValues<T> dout = RandomValues<T>(gen, n, 1.0f), x = RandomValues<T>(gen, n, 2.0f),
                      gamma = RandomValues<T>(gen, hidden, 1.0f), prev = RandomValues<T>(gen, n, 1.0f);
  std::vector<float> mean(rows), rstd(rows);
  for (int64_t r = 0; r < rows; ++r) {
    mean[r] = RandomFloats(gen, 1, 0.5f)[0];
    rstd[r] = 0.5f + std::fabs(RandomFloats(gen, 1, 1.0f)[0]);
  }
  const RngContext rng{5, MakeStream(1, 2, 3), offset};
  std::vector<T> dx = prev.data, g = dout.data, own(n);
  T* dropped = p == 0.0f ? nullptr : alias ? g.data() : own.data();
  // The 8-wide kernel also writes the parameter gradients' partial sums, one block per chunk.
  const int64_t chunks = (rows + cuda::row_sums::kChunkRows - 1) / cuda::row_sums::kChunkRows;
  std::vector<float> partial(2 * chunks * hidden, NAN);
  if (wide) {
    emu::Launch(ln::BackwardKernelFor<T, T, T, T>(hidden), static_cast<unsigned>(chunks), 1, ln::kRowsPerBlock * 32,
                ln::BackwardSmemBytes(hidden), static_cast<const T*>(g.data()), static_cast<const T*>(x.data.data()),
                static_cast<const T*>(gamma.data.data()), static_cast<const float*>(mean.data()),
                static_cast<const float*>(rstd.data()), dx.data(), accumulate, cuda::ElementDropout(rng, p), dropped,
                partial.data(), rows, hidden);
  } else {
    emu::Launch(ln::LayerNormBackwardDxKernel<T, T, T, T>,
                static_cast<unsigned>((rows + ln::kRowsPerBlock - 1) / ln::kRowsPerBlock), 1, ln::kRowsPerBlock * 32, 0,
                static_cast<const T*>(g.data()), static_cast<const T*>(x.data.data()),
                static_cast<const T*>(gamma.data.data()), static_cast<const float*>(mean.data()),
                static_cast<const float*>(rstd.data()), dx.data(), accumulate, cuda::ElementDropout(rng, p), dropped,
                rows, hidden);
  }

  std::unique_ptr<Backend> cpu = MakeCpuBackend();
  std::vector<float> gv = dout.value, xv = x.value, gav = gamma.value, want = prev.value, want_dropped(n),
                     dgamma(hidden), dbeta(hidden), size(n);
  cpu->LayerNormBackward(CpuF32(gv.data(), {rows, hidden}), CpuF32(xv.data(), {rows, hidden}),
                         CpuF32(gav.data(), {hidden}), CpuF32(mean.data(), {rows}), CpuF32(rstd.data(), {rows}),
                         CpuF32(want.data(), {rows, hidden}), accumulate, CpuF32(dgamma.data(), {hidden}),
                         CpuF32(dbeta.data(), {hidden}), p, rng,
                         p == 0.0f ? TensorView{} : CpuF32(want_dropped.data(), {rows, hidden}));
  // dx = rstd (g - mean(g) - xhat mean(g xhat)): each term is at most rstd |g| times a few.
  for (int64_t i = 0; i < n; ++i)
    size[i] = rstd[i / hidden] * 4 * (1 + std::fabs((xv[i] - mean[i / hidden]) * rstd[i / hidden])) +
              (accumulate ? std::fabs(prev.value[i]) : 0.0f);
  ExpectNear(AsFloats(dx), want, size, Rounding<T>(), 0.0, "dx");
  if (wide) {  // the partial sums added over the chunks, as ChunkFinalizeKernel does
    std::vector<float> got_dgamma(hidden, 0.0f), got_dbeta(hidden, 0.0f), param_size(hidden, 0.0f);
    for (int64_t k = 0; k < chunks; ++k)
      for (int64_t c = 0; c < hidden; ++c) {
        got_dgamma[c] += partial[k * hidden + c];
        got_dbeta[c] += partial[(chunks + k) * hidden + c];
      }
    for (int64_t i = 0; i < n; ++i)
      param_size[i % hidden] += std::fabs(gv[i]) * (1 + std::fabs((xv[i] - mean[i / hidden]) * rstd[i / hidden]));
    ExpectNear(got_dgamma, dgamma, param_size, 1e-5, 0.0, "dgamma");
    ExpectNear(got_dbeta, dbeta, param_size, 1e-5, 0.0, "dbeta");
  }
  if (dropped == nullptr) return;
  for (float& v : size) v /= 1.0f - p;  // a dropped element of another decision is off by its whole size
  ExpectNear(AsFloats(alias ? g : own), want_dropped, size, Rounding<T>(), 0.0, "dropped");
}

template <typename T>
void CheckAll(uint32_t seed) {
  std::mt19937 gen(seed);
  for (const bool wide : {true, false}) {
    const int64_t hidden = wide ? 8 * 37 : 101;  // 296: two full 8-element chunks per lane and a partial one
    CheckForward<T>(gen, 13, hidden, wide, 0.0f, 0);
    CheckForward<T>(gen, 13, hidden, wide, 0.1f, 4);
    CheckForward<T>(gen, 9, hidden, wide, 0.5f, 6);
    CheckBackward<T>(gen, 11, hidden, wide, false, 0.0f, 0, false);
    CheckBackward<T>(gen, 11, hidden, wide, false, 0.1f, 4, true);
    CheckBackward<T>(gen, 11, hidden, wide, true, 0.5f, 6, false);
    CheckBackward<T>(gen, 2 * cuda::row_sums::kChunkRows + 9, hidden, wide, false, 0.1f, 0, true);  // 3 chunks
  }
  // BERT-base's width: three 8-element chunks per lane (the kernel instantiated for 3), several
  // rows per warp.
  CheckBackward<T>(gen, 40, 768, true, true, 0.1f, 4, true);
}

TEST(LayerNormEmulation, Bf16) { CheckAll<bf16_t>(21); }
TEST(LayerNormEmulation, F32) { CheckAll<float>(22); }

#else

TEST(LayerNormEmulation, NeedsTheCudaHeaders) { GTEST_SKIP() << "built without the CUDA toolkit's headers"; }

#endif  // LAMINA_EMULATE

}  // namespace
}  // namespace lamina
