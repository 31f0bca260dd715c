// The fused attention kernels (model/cuda/flash_attention.cuh) run on CPU threads
// (tests/cuda/emulation.h, which also emulates mma.sync, ldmatrix and cp.async with their PTX
// fragment layouts) and checked against the f32 reference, so that their tiling, fragment
// indexing, masking, online softmax, dropout bits and double-buffered loads are tested on machines
// without a GPU. What this cannot show: the speed, and nvcc's own code (the GPU parity test in
// ops_parity_test.cc covers that).
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <memory>
#include <random>
#include <string>
#include <utility>
#include <vector>

#include "core/bf16.h"
#include "gtest/gtest.h"
#include "model/backend.h"
#include "tests/cuda/emulation.h"
#include "tests/cuda/host_values.h"
#include "tests/cuda/parity_util.h"

#if LAMINA_EMULATE

#include "model/cuda/flash_attention.cuh"  // its #pragma unroll: -Wno-unknown-pragmas in tests/CMakeLists.txt
#endif  // LAMINA_EMULATE

namespace lamina {
namespace {

#if LAMINA_EMULATE

// What one run of the kernels leaves: the forward output, the gradient and the forward record.
struct FlashRun {
  std::vector<uint16_t> out, dqkv;
  std::vector<uint32_t> saved;
};

// What the backward kernels read of the forward pass's record for kept results: every logsumexp,
// and the keep words of the query groups and key tiles that hold a row or key before T (the forward
// pass also writes the words of its blocks' other groups, which depend on its block shape).
std::vector<uint32_t> ReadPart(const std::vector<uint32_t>& saved, int64_t batch_heads, int64_t seq) {
  const cuda::flash::SavedLayout layout(batch_heads, seq);
  std::vector<uint32_t> part(saved.begin(), saved.begin() + batch_heads * seq);
  const uint32_t* words = layout.KeepBits(saved.data());
  for (int64_t bh = 0; bh < batch_heads; ++bh)
    for (int64_t group = 0; group < (seq + 15) / 16; ++group)
      for (int64_t tile = 0; tile < (seq + 63) / 64; ++tile)
        for (int64_t lane = 0; lane < 32; ++lane)
          part.push_back(words[((bh * layout.groups + group) * layout.key_tiles + tile) * 32 + lane]);
  return part;
}

// Forward and backward of the fused kernels on CPU threads, on bf16 bits, with warp_rows rows per
// warp in each kernel.
FlashRun RunFlash(const std::vector<uint16_t>& qkv_b, const std::vector<uint16_t>& dout_b,
                  const std::vector<int32_t>& mask, int64_t batch, int64_t heads, int64_t head_dim, int64_t seq,
                  float p, const RngContext& rng, int warp_rows, bool hold_key_fragments) {
  using namespace cuda::flash;  // NOLINT
  const int64_t hidden = heads * head_dim, rows = batch * seq;
  FlashRun run;
  run.out.assign(rows * hidden, 0xffff);  // NaN: unwritten
  run.dqkv.assign(rows * 3 * hidden, 0xffff);
  // The forward pass's record (logsumexps, keep bits), poisoned: NaN logsumexps, all-ones bits.
  const SavedLayout layout(batch * heads, seq);
  run.saved.assign(static_cast<size_t>(layout.bytes) / 4, 0xffffffffu);
  float* lse = reinterpret_cast<float*>(run.saved.data());
  uint32_t* keep_bits = layout.KeepBits(run.saved.data());
  std::vector<float> delta(batch * heads * seq, NAN);
  const int T = static_cast<int>(seq), nh = static_cast<int>(heads), D = static_cast<int>(head_dim);
  const int H = nh * D;
  const unsigned gx = static_cast<unsigned>(batch * heads);
  const auto gy = [&](int block_rows) { return static_cast<unsigned>((seq + block_rows - 1) / block_rows); };
  LAMINA_DISPATCH_HEAD_DIM(D, DP, LAMINA_DISPATCH_WARP_TILES(warp_rows, DP, MT, {
    emu::Launch(FlashForwardKernel<DP, MT>, gx, gy(kTile * MT), kThreads, SmemBytes<ForwardSmem<DP, MT>>(),
                qkv_b.data(), mask.data(), T, nh, H, D, p, rng, run.out.data(), lse, keep_bits);
  }));
  // The forward output the backward pass reads is the kernels' own (bf16) one; the dQ kernel
  // writes the deltas (poisoned: NaN) that the dK/dV kernel reads.
  LAMINA_DISPATCH_HEAD_DIM(D, DP, LAMINA_DISPATCH_WARP_TILES(warp_rows, DP, MT, {
    emu::Launch(FlashBackwardQueryKernel<DP, MT>, gx, gy(kTile * MT), kThreads, SmemBytes<QuerySmem<DP, MT>>(),
                qkv_b.data(), mask.data(), dout_b.data(), run.out.data(), lse, keep_bits, T, nh, H, D, p,
                delta.data(), run.dqkv.data());
    LAMINA_DISPATCH_HOLD_KV(hold_key_fragments, DP, MT, kHold, {
      emu::Launch(FlashBackwardKeyKernel<DP, MT, kHold>, gx, gy(kTile * MT), kThreads,
                  SmemBytes<KeySmem<DP, MT, kHold>>(), qkv_b.data(), mask.data(), dout_b.data(), lse, keep_bits,
                  delta.data(), T, nh, H, D, p, run.dqkv.data());
    });
  }));
  return run;
}

// Runs forward and backward of the fused kernels and of the reference, and compares out, dq, dk and
// dv (each against its own norm) with the bf16 bound of the GPU tests; then the same with two row
// tiles per warp, and with the dK/dV kernel holding K and V fragments, which must give the same
// bits: each accumulator sees the same products in the same order, and the keep bits have one
// layout.
void CheckFlash(std::mt19937& gen, int64_t batch, int64_t heads, int64_t head_dim, int64_t seq, float p) {
  const int64_t hidden = heads * head_dim, rows = batch * seq;
  char tag[96];
  std::snprintf(tag, sizeof tag, "B%ld heads%ld D%ld T%ld p%.2f", batch, heads, head_dim, seq, p);
  SCOPED_TRACE(tag);
  std::uniform_real_distribution<float> uni(-2.0f, 2.0f);
  std::vector<int32_t> mask(rows, 0);
  for (int64_t b = 0; b < batch; ++b) {
    const int64_t len = b == 1 ? 0 : std::uniform_int_distribution<int64_t>(1, seq)(gen);
    for (int64_t j = 0; j < len; ++j) mask[b * seq + j] = 1;
  }
  std::vector<float> qkv(rows * 3 * hidden), dout(rows * hidden);
  for (float& x : qkv) x = testing::CudaParityTest::RoundBf16(uni(gen));
  for (float& x : dout) x = testing::CudaParityTest::RoundBf16(uni(gen) / 2);
  const RngContext rng{gen(), MakeStream(7, 2, 1), gen() % 7};  // an offset that is not a multiple of 4

  // Reference.
  std::unique_ptr<Backend> cpu = MakeCpuBackend();
  std::vector<float> saved(cpu->AttentionSavedElems(batch, heads, seq, head_dim)), out(rows * hidden);
  std::vector<float> dqkv(rows * 3 * hidden);
  cpu->AttentionForward(CpuF32(qkv.data(), {rows, 3 * hidden}), CpuI32(mask.data(), {batch, seq}), heads, p, rng, CpuF32(saved.data(), {static_cast<int64_t>(saved.size())}),
                        CpuF32(out.data(), {rows, hidden}));
  cpu->AttentionBackward(CpuF32(dout.data(), {rows, hidden}), CpuF32(qkv.data(), {rows, 3 * hidden}), CpuI32(mask.data(), {batch, seq}),
                         CpuF32(out.data(), {rows, hidden}), CpuF32(saved.data(), {static_cast<int64_t>(saved.size())}), heads, p, rng,
                         CpuF32(dqkv.data(), {rows, 3 * hidden}));

  auto bits = [](const std::vector<float>& v) {
    std::vector<uint16_t> b(v.size());
    for (size_t i = 0; i < v.size(); ++i) b[i] = FloatToBf16Bits(v[i]);
    return b;
  };
  const std::vector<uint16_t> qkv_b = bits(qkv), dout_b = bits(dout);
  const FlashRun run = RunFlash(qkv_b, dout_b, mask, batch, heads, head_dim, seq, p, rng, 16, false);

  std::vector<float> got_out(run.out.size());
  for (size_t i = 0; i < run.out.size(); ++i) got_out[i] = Bf16BitsToFloat(run.out[i]);
  const double out_err = testing::CudaParityTest::RelErr(got_out, out);
  std::printf("  %-28s out %.2e", tag, out_err);
  EXPECT_LE(out_err, 1e-2);
  std::vector<float> got_dqkv(run.dqkv.size());
  for (size_t i = 0; i < run.dqkv.size(); ++i) got_dqkv[i] = Bf16BitsToFloat(run.dqkv[i]);
  for (int part = 0; part < 3; ++part) {
    const testing::AttentionPartError e =
        testing::AttentionGradPartError(got_dqkv, dqkv, rows, hidden, part, 1e-2, /*fused=*/true);
    std::printf("  d%c %.2e", "qkv"[part], e.value);
    EXPECT_LE(e.value, e.bound) << "d" << "qkv"[part] << ": " << e.metric;
  }
  std::printf("\n");
  // A fully padded sequence attends to nothing: zero output, zero gradients.
  if (batch > 1) {
    for (int64_t j = 0; j < seq * hidden; ++j) ASSERT_EQ(got_out[seq * hidden + j], 0.0f) << "padded sequence";
  }

  for (const auto& [warp_rows, hold] : {std::pair<int, bool>{32, false}, {16, true}}) {
    const FlashRun other = RunFlash(qkv_b, dout_b, mask, batch, heads, head_dim, seq, p, rng, warp_rows, hold);
    const std::string what = hold ? "with K and V fragments held" : "with 32 rows per warp";
    EXPECT_TRUE(other.out == run.out) << "forward output " << what << " differs";
    EXPECT_TRUE(other.dqkv == run.dqkv) << "gradient " << what << " differs";
    EXPECT_TRUE(ReadPart(other.saved, batch * heads, seq) == ReadPart(run.saved, batch * heads, seq))
        << "logsumexps or keep bits " << what << " differ";
  }
}

TEST(FlashAttentionEmulation, MatchesReferenceOnRandomShapes) {
  testing::TestRandom random;
  for (float p : {0.0f, 0.1f})
    CheckFlash(random.gen(), random.Pick(2, 3), random.Pick(1, 2), 8 * random.Pick(1, 16), random.Pick(1, 150), p);
}

TEST(FlashAttentionEmulation, BertHeadsAndEdges) {
  testing::TestRandom random;
  std::mt19937& gen = random.gen();
  CheckFlash(gen, 2, 1, 64, 128, 0.1f);  // BERT-base's head: two full tiles each way
  CheckFlash(gen, 2, 2, 8, 1, 0.1f);     // one token, the narrowest head (padded to 16)
  CheckFlash(gen, 2, 1, 128, 65, 0.2f);  // the widest head, one row into a second tile
  CheckFlash(gen, 3, 1, 40, 64, 0.0f);   // exactly one tile, a head padded from 40 to 64
  CheckFlash(gen, 1, 1, 64, 200, 0.1f);  // blocks of 128 rows: one full, one partial
}

#else

TEST(FlashAttentionEmulation, NeedsTheCudaHeaders) { GTEST_SKIP() << "built without the CUDA toolkit's headers"; }

#endif  // LAMINA_EMULATE

}  // namespace
}  // namespace lamina
