// The register-fragment primitives of model/cuda/mma.cuh (mma.sync, ldmatrix plain and
// transposed, cp.async, the C-to-A repacking) against plain products on the host: in the
// emulation (tests/cuda/emulation.h) everywhere, and on the GPU in CUDA builds that find one.
// Both must agree with the host; the GPU case is what checks the emulation's reading of the PTX
// fragment layouts, which the flash attention's emulation test takes on trust.
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <random>
#include <string>
#include <vector>

#include "core/bf16.h"
#include "gtest/gtest.h"
#include "tests/cuda/emulation.h"
#include "tests/cuda/host_values.h"

#if LAMINA_EMULATE
#include "tests/cuda/mma_probe.cuh"  // its #pragma unroll: -Wno-unknown-pragmas in tests/CMakeLists.txt
#endif

#if LAMINA_MMA_PROBE_GPU
namespace lamina::cuda::probe {
// tests/cuda/mma_probe.cu; false when there is no GPU.
bool RunMmaProbeOnGpu(const std::vector<uint16_t>& a, const std::vector<uint16_t>& bt, const std::vector<uint16_t>& b,
                      std::vector<float>& abt, std::vector<float>& ab, std::vector<float>& chain);
}  // namespace lamina::cuda::probe
#endif

namespace lamina {
namespace {

struct Operands {
  std::vector<uint16_t> a, bt, b;  // bf16 bits: [16, 32], [16, 32], [32, 16]
};

Operands RandomOperands(std::mt19937& gen) {
  std::uniform_real_distribution<float> uni(-1.0f, 1.0f);
  auto fill = [&](size_t n) {
    std::vector<uint16_t> v(n);
    for (uint16_t& x : v) x = FloatToBf16Bits(uni(gen));
    return v;
  };
  Operands o;
  o.a = fill(16 * 32);
  o.bt = fill(16 * 32);
  o.b = fill(32 * 16);
  return o;
}

float F(uint16_t bits) { return Bf16BitsToFloat(bits); }

// Compares the three products with the host's: abt = a bt^T, ab = a b, chain = bf16(abt) b[0:16].
void ExpectProducts(const Operands& o, const std::vector<float>& abt, const std::vector<float>& ab,
                    const std::vector<float>& chain) {
  double want_abt[16][16] = {};
  for (int i = 0; i < 16; ++i)
    for (int j = 0; j < 16; ++j)
      for (int k = 0; k < 32; ++k) want_abt[i][j] += double{F(o.a[i * 32 + k])} * F(o.bt[j * 32 + k]);
  for (int i = 0; i < 16; ++i)
    for (int j = 0; j < 16; ++j) {
      double want_ab = 0, want_chain = 0, chain_slack = 1e-4;
      for (int k = 0; k < 32; ++k) want_ab += double{F(o.a[i * 32 + k])} * F(o.b[k * 16 + j]);
      for (int k = 0; k < 16; ++k) {
        const double b_kj = F(o.b[k * 16 + j]);
        want_chain += double{Bf16BitsToFloat(FloatToBf16Bits(static_cast<float>(want_abt[i][k])))} * b_kj;
        // The f32 sum behind bf16(abt) may round to the other neighbour: one bf16 step, 2^-7 of it.
        chain_slack += std::abs(want_abt[i][k]) / 128 * std::abs(b_kj);
      }
      char at[32];
      std::snprintf(at, sizeof at, "(%d, %d)", i, j);
      EXPECT_NEAR(abt[i * 16 + j], want_abt[i][j], 1e-4) << "a bt^T " << at;
      EXPECT_NEAR(ab[i * 16 + j], want_ab, 1e-4) << "a b " << at;
      EXPECT_NEAR(chain[i * 16 + j], want_chain, chain_slack) << "bf16(a bt^T) b " << at;
    }
}

#if LAMINA_EMULATE
TEST(MmaProbe, EmulatedPrimitivesMatchTheHost) {
  testing::TestRandom random;
  const Operands o = RandomOperands(random.gen());
  std::vector<float> abt(256, NAN), ab(256, NAN), chain(256, NAN);
  emu::Launch(cuda::probe::MmaProbeKernel, 1, 1, 32, cuda::probe::MmaProbeSmemBytes(), o.a.data(), o.bt.data(),
              o.b.data(), abt.data(), ab.data(), chain.data());
  ExpectProducts(o, abt, ab, chain);
}
#endif

TEST(MmaProbe, GpuPrimitivesMatchTheHost) {
#if LAMINA_MMA_PROBE_GPU
  testing::TestRandom random;
  const Operands o = RandomOperands(random.gen());
  std::vector<float> abt, ab, chain;
  if (!cuda::probe::RunMmaProbeOnGpu(o.a, o.bt, o.b, abt, ab, chain)) GTEST_SKIP() << "no GPU";
  ExpectProducts(o, abt, ab, chain);
#else
  GTEST_SKIP() << "built without CUDA";
#endif
}

}  // namespace
}  // namespace lamina
