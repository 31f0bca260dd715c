// The optimizer kernels (model/cuda/optimizer.cuh: the sum of squares, AdamW, and LAMB's moments,
// per-tensor norms and update) run on CPU threads (tests/cuda/emulation.h) against the CPU
// reference backend from the same inputs. The segment table has what BERT's and a ZeRO shard's
// have: one-element and many-block tensors (over 32 blocks, so the per-tensor sums' lanes take
// several each), segments without weight decay, and a tensor cut into three segments that are
// not adjacent in the table.
#include <cmath>
#include <cstdint>
#include <random>
#include <string>
#include <vector>

#include "core/bf16.h"
#include "gtest/gtest.h"
#include "model/backend.h"
#include "tests/cuda/emulation.h"
#include "tests/cuda/host_values.h"

// DeviceSegments and DeviceHyper, the kernels' table and constants, are in the CUDA build's library.
#if LAMINA_EMULATE && LAMINA_WITH_CUDA
#define LAMINA_EMULATE_OPTIMIZER 1
#include "model/cuda/optimizer.cuh"
#include "model/cuda/optimizer_segments.h"
#else
#define LAMINA_EMULATE_OPTIMIZER 0
#endif

namespace lamina {
namespace {

#if LAMINA_EMULATE_OPTIMIZER

namespace opt = cuda::optimizer;

struct Buffers {
  std::vector<float> params, grads, m, v;
};

// Tensors 0..4 with sizes 1, 768, 3000, 34000 (34 blocks of 1024 elements) and 2500, the last cut
// into three segments listed apart; tensor 2 and the one-element tensor 0 without weight decay.
std::vector<ParamSegment> Segments() {
  return {{0, 1, false, 0},        {1, 768, true, 1},      {769, 1000, true, 4}, {1769, 3000, false, 2},
          {4769, 34000, true, 3}, {38769, 700, true, 4}, {39469, 800, true, 4}};
}
constexpr int64_t kParams = 40269, kTensors = 5;

Buffers RandomBuffers(std::mt19937& gen) {
  std::uniform_real_distribution<float> uni(-1.0f, 1.0f), pos(0.0f, 1e-2f);
  Buffers b;
  for (int64_t i = 0; i < kParams; ++i) {
    b.params.push_back(uni(gen));
    b.grads.push_back(uni(gen) * 0.1f);
    b.m.push_back(uni(gen) * 0.01f);
    b.v.push_back(pos(gen));
  }
  return b;
}

TensorView View(std::vector<float>& v) { return CpuF32(v.data(), {static_cast<int64_t>(v.size())}); }

// got against want, element by element, within `rel` of max(|want|, floor).
void ExpectNear(const std::vector<float>& got, const std::vector<float>& want, double rel, double floor,
                const std::string& what) {
  ASSERT_EQ(got.size(), want.size()) << what;
  int bad = 0;
  for (size_t i = 0; i < got.size(); ++i)
    if (!(std::fabs(got[i] - want[i]) <= rel * std::max<double>(std::fabs(want[i]), floor)) && ++bad <= 5)
      ADD_FAILURE() << what << " [" << i << "]: " << got[i] << ", expected " << want[i];
  EXPECT_EQ(bad, 0) << what;
}

AdamWHyper Hyper() {
  AdamWHyper h;
  h.lr = 1e-3f;
  h.step = 7;
  h.grad_scale = 0.5f;  // as after clipping
  return h;
}

// On 16 blocks instead of the launcher's kSumBlocks (the kernels take any grid; 512 blocks of CPU
// threads would take a while).
TEST(OptimizerEmulation, SumOfSquaresMatchesReference) {
  testing::TestRandom rnd;
  Buffers b = RandomBuffers(rnd.gen());
  constexpr int kBlocks = 16;
  std::vector<double> partial(kBlocks, NAN), result(1, NAN);
  emu::Launch(&opt::SumSquaresPartialKernel<float>, kBlocks, 1, opt::kThreads, opt::kBlockSumSmem,
              static_cast<const float*>(b.params.data()), kParams, partial.data());
  emu::Launch(&opt::SumPartialsKernel, 1, 1, opt::kThreads, opt::kBlockSumSmem,
              static_cast<const double*>(partial.data()), kBlocks, result.data());
  const double want = MakeCpuBackend()->SumSquares(View(b.params));
  EXPECT_NEAR(result[0], want, 1e-12 * want);
}

TEST(OptimizerEmulation, AdamWMatchesReference) {
  testing::TestRandom rnd;
  const std::vector<ParamSegment> segments = Segments();
  int64_t max_segment = 0;
  const std::vector<cuda::DeviceSegment> table = cuda::DeviceSegments(segments, kParams, &max_segment);
  Buffers gpu = RandomBuffers(rnd.gen()), cpu = gpu;
  std::vector<uint16_t> compute(kParams, 0xffff);
  const dim3 grid = opt::SegmentGrid(static_cast<int>(table.size()), max_segment);
  emu::Launch(&opt::AdamWKernel<uint16_t>, grid.x, grid.y, opt::kThreads, 0, gpu.params.data(),
              static_cast<const float*>(gpu.grads.data()), gpu.m.data(), gpu.v.data(), compute.data(),
              static_cast<const cuda::DeviceSegment*>(table.data()), cuda::DeviceHyper(Hyper()));
  MakeCpuBackend()->AdamWStep(View(cpu.params), View(cpu.grads), View(cpu.m), View(cpu.v), {}, segments, Hyper());
  ExpectNear(gpu.m, cpu.m, 1e-6, 1e-6, "m");
  ExpectNear(gpu.v, cpu.v, 1e-6, 1e-8, "v");
  ExpectNear(gpu.params, cpu.params, 1e-6, 1e-3, "params");
  for (int64_t i = 0; i < kParams; ++i) ASSERT_EQ(compute[i], FloatToBf16Bits(gpu.params[i])) << "compute copy " << i;
}

// Moments and norms, then the update, as LaunchLambMoments and LaunchLambUpdate run them.
TEST(OptimizerEmulation, LambMatchesReference) {
  testing::TestRandom rnd;
  const std::vector<ParamSegment> segments = Segments();
  int64_t max_segment = 0;
  const std::vector<cuda::DeviceSegment> table = cuda::DeviceSegments(segments, kParams, &max_segment);
  const int num_segments = static_cast<int>(table.size());
  Buffers gpu = RandomBuffers(rnd.gen()), cpu = gpu;
  const dim3 grid = opt::SegmentGrid(num_segments, max_segment);
  ASSERT_GT(grid.x, 32u) << "a tensor with more blocks than a warp has lanes";
  // Partials of blocks that do not work on their segment stay NaN: a sum that read one shows.
  std::vector<double> partial(cuda::LambScratchBytes(num_segments, max_segment) / sizeof(double), NAN);
  std::vector<float> norms(2 * kTensors, NAN), want_norms(2 * kTensors, NAN);
  const cuda::OptimizerHyper h = cuda::DeviceHyper(Hyper());
  const auto* segs = static_cast<const cuda::DeviceSegment*>(table.data());
  emu::Launch(&opt::LambNormsKernel, grid.x, grid.y, opt::kThreads, opt::kBlockSumSmem,
              static_cast<const float*>(gpu.params.data()), static_cast<const float*>(gpu.grads.data()), gpu.m.data(),
              gpu.v.data(), segs, h, partial.data());
  const unsigned tensor_blocks = (kTensors + opt::kTensorsPerBlock - 1) / opt::kTensorsPerBlock;
  emu::Launch(&opt::LambTensorNormsKernel, tensor_blocks, 1, opt::kThreads, 0, segs, num_segments,
              static_cast<int>(grid.x), static_cast<const double*>(partial.data()), kTensors, norms.data());
  std::unique_ptr<Backend> ref = MakeCpuBackend();
  TensorView want_view = View(want_norms);
  ref->LambMoments(View(cpu.params), View(cpu.grads), View(cpu.m), View(cpu.v), segments, Hyper(), want_view);
  ExpectNear(norms, want_norms, 1e-6, 0.0, "per-tensor sums of p^2 and r^2");
  ExpectNear(gpu.m, cpu.m, 1e-6, 1e-6, "m");
  ExpectNear(gpu.v, cpu.v, 1e-6, 1e-8, "v");

  std::vector<uint16_t> compute(kParams, 0xffff);
  emu::Launch(&opt::LambUpdateKernel<uint16_t>, grid.x, grid.y, opt::kThreads, 0, gpu.params.data(),
              static_cast<const float*>(gpu.m.data()), static_cast<const float*>(gpu.v.data()), compute.data(), segs,
              h, static_cast<const float*>(norms.data()));
  ref->LambUpdate(View(cpu.params), View(cpu.m), View(cpu.v), {}, segments, Hyper(), want_view);
  ExpectNear(gpu.params, cpu.params, 1e-6, 1e-3, "params");
  for (int64_t i = 0; i < kParams; ++i) ASSERT_EQ(compute[i], FloatToBf16Bits(gpu.params[i])) << "compute copy " << i;
}

#else
TEST(OptimizerEmulation, NeedsTheCudaBuild) { GTEST_SKIP() << "built without CUDA"; }
#endif  // LAMINA_EMULATE_OPTIMIZER

}  // namespace
}  // namespace lamina
