// Timings of the CUDA backend at BERT-base sizes (seq 128, micro-batch 256): single ops and a whole
// MLM training step. Opt-in (LAMINA_CUDA_TIMING=1) because it needs a large GPU and measures
// rather than checks; docs/performance.md records its output. Times are medians of wall-clock
// spans around synchronised repeats, after a warm-up.
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <functional>
#include <random>
#include <vector>

#include "core/status.h"
#include "gtest/gtest.h"
#include "model/backend.h"
#include "model/bert.h"
#include "model/optimizer.h"
#if LAMINA_WITH_CUDA
#include <cuda_runtime.h>

#include "model/cuda/cublaslt.h"
#include "model/cuda/kernels.h"
#endif

namespace lamina {
namespace {

class CudaTimingTest : public ::testing::Test {
 protected:
  void SetUp() override {
    if (std::getenv("LAMINA_CUDA_TIMING") == nullptr) GTEST_SKIP() << "set LAMINA_CUDA_TIMING=1 to time";
    // The GEMM attention path here, the fused kernels in a second backend where they are compared.
    absl::StatusOr<std::unique_ptr<Backend>> gpu = MakeCudaBackend({.attention = AttentionKernel::kGemm});
    if (!gpu.ok()) GTEST_SKIP() << "CUDA backend unavailable: " << gpu.status().ToString();
    gpu_ = *std::move(gpu);
  }

  // Median milliseconds of `reps` runs of f, each synchronised, after two warm-ups.
  double TimeMs(const std::function<void()>& f, int reps = 10, Backend* backend = nullptr) {
    Backend& be = backend != nullptr ? *backend : *gpu_;
    f();
    f();
    be.Synchronize();
    std::vector<double> ms;
    for (int i = 0; i < reps; ++i) {
      const auto t0 = std::chrono::steady_clock::now();
      f();
      be.Synchronize();
      ms.push_back(std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count());
    }
    std::sort(ms.begin(), ms.end());
    return ms[ms.size() / 2];
  }

  TensorView Tensor(DType dtype, Shape shape, float scale = 0.5f) {
    buffers_.push_back(*Buffer::Allocate(Device::kCuda, shape.numel() * DTypeSize(dtype)));
    TensorView t = buffers_.back().View(dtype, shape);
    if (dtype == DType::kI32) return t;
    std::vector<float> v(shape.numel());
    std::uniform_real_distribution<float> d(-scale, scale);
    for (float& x : v) x = d(rng_);
    gpu_->CopyFromHost(v.data(), t);
    return t;
  }

  // Forward + backward and a LAMB step of BERT-base on `backend`.
  void TimeStep(Backend& backend, const char* attention) {
    BertConfig c;  // BERT-base
    c.norm = NormPlacement::kPost;
    const int64_t B = 256, T = 128, per_row = 20;
    absl::StatusOr<std::unique_ptr<BertModel>> model = BertModel::Create(c, HeadOptions{}, &backend);
    ASSERT_TRUE(model.ok()) << model.status();
    (*model)->Initialize(1);
    OptimizerConfig oc;
    oc.kind = OptimizerKind::kLamb;
    absl::StatusOr<std::unique_ptr<Optimizer>> opt = Optimizer::Create(oc, model->get());
    ASSERT_TRUE(opt.ok()) << opt.status();
    EncoderBatch batch;
    batch.batch = B;
    batch.seq = T;
    std::uniform_int_distribution<int32_t> tok(1000, 29000);
    for (int64_t r = 0; r < B; ++r) {
      for (int64_t t = 0; t < T; ++t) {
        batch.input_ids.push_back(tok(rng_));
        batch.token_types.push_back(t < T / 2 ? 0 : 1);
        batch.attention_mask.push_back(1);
      }
      for (int64_t k = 0; k < per_row; ++k) {
        batch.mlm_positions.push_back(static_cast<int32_t>(r * T + 1 + k * 6));
        batch.mlm_labels.push_back(tok(rng_));
      }
    }
    ForwardOptions o;
    o.training = true;
    o.compute_grad = true;
    o.grad_scale = 1.0f / static_cast<float>(B * per_row);
    double loss = 0;
    auto fwd_bwd = [&] {
      (*model)->ZeroGrads();
      absl::StatusOr<LossStats> s = (*model)->ForwardMlm(batch, o);
      LAMINA_CHECK(s.ok(), s.status().ToString());
      loss = s->loss_sum / static_cast<double>(s->count);
      (*model)->Backward();
    };
    const double fb = TimeMs(fwd_bwd, 5, &backend);
    const double step = TimeMs([&] { (void)(*opt)->Step(1e-4f); }, 5, &backend);
    std::printf("\nBERT-base Post-LN MLM, %s attention, micro-batch %ld x %ld, %ld predictions per row (loss %.3f):\n",
                attention, B, T, per_row, loss);
    std::printf("  forward + backward %.1f ms, LAMB step %.1f ms, activation arena %.2f GiB\n", fb, step,
                (*model)->activation_bytes() / 1073741824.0);
    std::printf("  => %.0f sequences/s per GPU (target >= 1.3 x 3170 = 4121)\n", B / ((fb + step) / 1000.0));
    EXPECT_TRUE(std::isfinite(loss));
  }

  std::unique_ptr<Backend> gpu_;
  std::vector<Buffer> buffers_;
  std::mt19937 rng_{1};
};

TEST_F(CudaTimingTest, BertBaseOps) {
  const int64_t B = 256, T = 128, H = 768, F = 3072, heads = 12, M = B * T, V = 30522, P = 20 * B;
  const DType bf = DType::kBF16;
  TensorView x = Tensor(bf, {M, H}), y = Tensor(bf, {M, H}), wqkv = Tensor(bf, {3 * H, H}, 0.02f);
  TensorView bqkv = Tensor(bf, {3 * H}), qkv = Tensor(bf, {M, 3 * H}), w1 = Tensor(bf, {F, H}, 0.02f);
  TensorView b1 = Tensor(bf, {F}), pre = Tensor(bf, {M, F}), h1 = Tensor(bf, {M, F});
  TensorView dw1 = Tensor(DType::kF32, {F, H}), db1 = Tensor(DType::kF32, {F}), dx = Tensor(bf, {M, H});
  TensorView saved = Tensor(bf, {gpu_->AttentionSavedElems(B, heads, T, H / heads)}), ctx = Tensor(bf, {M, H});
  TensorView dqkv = Tensor(bf, {M, 3 * H}), mask = Tensor(DType::kI32, {B, T});
  TensorView gamma = Tensor(bf, {H}), beta = Tensor(bf, {H}), mean = Tensor(DType::kF32, {M});
  TensorView rstd = Tensor(DType::kF32, {M}), dg = Tensor(DType::kF32, {H}), dbeta = Tensor(DType::kF32, {H});
  // The model pads the logits' rows to 30528 (16-byte aligned, backend.h); `dense` is the unpadded
  // layout, timed for comparison.
  const int64_t Vp = 30528;
  TensorView logits = Tensor(bf, {P, Vp}, 4.0f), dense = Tensor(bf, {P, V}, 4.0f);
  TensorView targets = Tensor(DType::kI32, {P}), losses = Tensor(DType::kF32, {P});
  std::vector<int32_t> ones(B * T, 1), tgt(P);
  for (int64_t i = 0; i < P; ++i) tgt[i] = static_cast<int32_t>((i * 7919) % V);
  gpu_->CopyFromHostI32(ones.data(), mask);
  gpu_->CopyFromHostI32(tgt.data(), targets);
  const RngContext rng{1, 2, 0};
  struct Row {
    const char* name;
    double ms, flops, bytes;
  };
  std::vector<Row> rows;
  auto gemm_flops = [](double m, double n, double k) { return 2 * m * n * k; };
  rows.push_back({"Linear fwd QKV (bias)",
                  TimeMs([&] { gpu_->LinearForward(x, wqkv, bqkv, Activation::kNone, {}, qkv); }),
                  gemm_flops(M, 3 * H, H), 2.0 * (M * H + M * 3 * H)});
  TensorView wo = Tensor(bf, {H, H}, 0.02f), bo = Tensor(bf, {H}), w2 = Tensor(bf, {H, F}, 0.02f);
  TensorView dwo = Tensor(DType::kF32, {H, H}), dw2 = Tensor(DType::kF32, {H, F}), dbh = Tensor(DType::kF32, {H});
  TensorView dh1 = Tensor(bf, {M, F}), dwqkv = Tensor(DType::kF32, {3 * H, H}), dbqkv = Tensor(DType::kF32, {3 * H});
  TensorView word = Tensor(bf, {V, H}, 0.02f), dword = Tensor(DType::kF32, {V, H}), bv = Tensor(bf, {V});
  TensorView pos = Tensor(bf, {512, H}), type = Tensor(bf, {2, H}), dpos = Tensor(DType::kF32, {512, H});
  TensorView dtype = Tensor(DType::kF32, {2, H}), ids = Tensor(DType::kI32, {B, T}), tids = Tensor(DType::kI32, {B, T});
  TensorView xm = Tensor(bf, {P, H}), dxm = Tensor(bf, {P, H}), dbv = Tensor(DType::kF32, {V});
  std::vector<int32_t> id_host(B * T), tid_host(B * T);
  for (int64_t i = 0; i < B * T; ++i) {
    id_host[i] = i % 8 == 0 ? 103 : static_cast<int32_t>((i * 104729) % V);  // 1 in 8 is [MASK], as in MLM
    tid_host[i] = static_cast<int32_t>((i % T) >= T / 2);
  }
  gpu_->CopyFromHostI32(id_host.data(), ids);
  gpu_->CopyFromHostI32(tid_host.data(), tids);
  rows.push_back({"Linear fwd attn-out (bias)",
                  TimeMs([&] { gpu_->LinearForward(x, wo, bo, Activation::kNone, {}, y); }), gemm_flops(M, H, H),
                  2.0 * 2 * M * H});
  rows.push_back({"Linear bwd attn-out (dx, dW, db)",
                  TimeMs([&] { gpu_->LinearBackward(y, x, wo, Activation::kNone, {}, dx, false, dwo, dbh); }),
                  2 * gemm_flops(M, H, H), 2.0 * 4 * M * H});
  rows.push_back({"Linear bwd QKV (dx, dW, db)",
                  TimeMs([&] { gpu_->LinearBackward(qkv, x, wqkv, Activation::kNone, {}, dx, false, dwqkv, dbqkv); }),
                  2 * gemm_flops(M, 3 * H, H), 2.0 * (2 * M * 3 * H + 2 * M * H)});
  rows.push_back({"Linear fwd FFN-out (bias)",
                  TimeMs([&] { gpu_->LinearForward(h1, w2, bo, Activation::kNone, {}, y); }), gemm_flops(M, H, F),
                  2.0 * (M * F + M * H)});
  rows.push_back({"Linear bwd FFN-out (dx, dW, db)",
                  TimeMs([&] { gpu_->LinearBackward(y, h1, w2, Activation::kNone, {}, dh1, false, dw2, dbh); }),
                  2 * gemm_flops(M, H, F), 2.0 * (2 * M * F + 2 * M * H)});
  rows.push_back({"Gelu [M, F]", TimeMs([&] { gpu_->Gelu(pre, h1); }), 0, 2.0 * 2 * M * F});
  for (const bool padded : {false, true}) {
    const TensorView& out = padded ? logits : dense;
    rows.push_back({padded ? "Linear fwd MLM decoder, rows padded to 30528" : "Linear fwd MLM decoder [5120, 30522]",
                    TimeMs([&] { gpu_->LinearForward(xm, word, bv, Activation::kNone, {}, out); }),
                    gemm_flops(P, V, H), 2.0 * (P * V + V * H)});
    rows.push_back({padded ? "Linear bwd MLM decoder, padded rows" : "Linear bwd MLM decoder (dx, dW, db)",
                    TimeMs([&] {
                      gpu_->LinearBackward(out, xm, word, Activation::kNone, {}, dxm, false, dword, dbv);
                    }),
                    2 * gemm_flops(P, V, H), 2.0 * (P * V + V * H) + 4.0 * V * H});
  }
  rows.push_back({"Embedding fwd", TimeMs([&] { gpu_->EmbeddingForward(ids, tids, word, pos, type, 1.0f, x); }), 0,
                  2.0 * 4 * M * H});
  rows.push_back({"Embedding bwd (sorted, deterministic)",
                  TimeMs([&] { gpu_->EmbeddingBackward(ids, tids, x, 1.0f, dword, dpos, dtype); }), 0,
                  2.0 * 2 * M * H + 8.0 * M * H});
  rows.push_back({"Linear fwd FFN-in (bias+GELU)",
                  TimeMs([&] { gpu_->LinearForward(x, w1, b1, Activation::kGelu, pre, h1); }), gemm_flops(M, F, H),
                  2.0 * (M * H + 3 * M * F)});
  rows.push_back({"Linear fwd FFN-in (bias+GELU tanh, cuBLASLt epilogue)",
                  TimeMs([&] { gpu_->LinearForward(x, w1, b1, Activation::kGeluTanh, pre, h1); }),
                  gemm_flops(M, F, H), 2.0 * (M * H + 2 * M * F)});
  rows.push_back({"Linear bwd FFN-in (GELU, dx, dW, db)",
                  TimeMs([&] { gpu_->LinearBackward(h1, x, w1, Activation::kGelu, pre, dx, false, dw1, db1); }),
                  2 * gemm_flops(M, F, H), 2.0 * (4 * M * F + 2 * M * H)});
  rows.push_back({"Linear bwd FFN-in (GELU tanh, dx, dW, db)",
                  TimeMs([&] { gpu_->LinearBackward(h1, x, w1, Activation::kGeluTanh, pre, dx, false, dw1, db1); }),
                  2 * gemm_flops(M, F, H), 2.0 * (4 * M * F + 2 * M * H)});
  // Bytes per score, all bf16: forward, the scores written and read, the dropped probabilities
  // written and read (4 x 2); backward, their gradient written and read, the scores read, dscores
  // written, then the dropped probabilities and dscores read by the three products (7 x 2).
  rows.push_back({"Attention fwd (p=0.1)",
                  TimeMs([&] { gpu_->AttentionForward(qkv, mask, heads, 0.1f, rng, saved, ctx); }),
                  2 * gemm_flops(T, T, H / heads) * B * heads, 2.0 * (M * 3 * H + M * H) + 8.0 * B * heads * T * T});
  rows.push_back(
      {"Attention bwd (p=0.1)", TimeMs([&] { gpu_->AttentionBackward(ctx, qkv, mask, ctx, saved, heads, 0.1f, rng, dqkv); }),
       4 * gemm_flops(T, T, H / heads) * B * heads, 2.0 * (2 * M * 3 * H + M * H) + 14.0 * B * heads * T * T});
  rows.push_back({"AddLayerNorm fwd",
                  TimeMs([&] { gpu_->AddLayerNormForward(x, y, 0.0f, rng, gamma, beta, 1e-12f, x, dx, mean, rstd); }),
                  0, 2.0 * 4 * M * H});
  rows.push_back(
      {"Dropout + AddLayerNorm fwd (p=0.1)",
       TimeMs([&] { gpu_->AddLayerNormForward(x, y, 0.1f, rng, gamma, beta, 1e-12f, x, dx, mean, rstd); }), 0,
       2.0 * 4 * M * H});
  rows.push_back(
      {"LayerNorm bwd",
       TimeMs([&] { gpu_->LayerNormBackward(y, x, gamma, mean, rstd, dx, false, dg, dbeta, 0.0f, rng, {}); }), 0,
       2.0 * 3 * M * H});
  rows.push_back(
      {"LayerNorm bwd + Dropout bwd (p=0.1)",
       TimeMs([&] { gpu_->LayerNormBackward(y, x, gamma, mean, rstd, dx, false, dg, dbeta, 0.1f, rng, y); }), 0,
       2.0 * 4 * M * H});
  rows.push_back({"Dropout [M, H]", TimeMs([&] { gpu_->Dropout(x, 0.1f, rng, y); }), 0, 2.0 * 2 * M * H});
  rows.push_back({"CrossEntropy + dlogits in place [5120, 30522 of 30528]",
                  TimeMs([&] { gpu_->CrossEntropy(logits, V, targets, 1.0f, losses, logits); }), 0,
                  2.0 * 3 * P * V});
  std::printf("\n%-48s %10s %10s %10s\n", "op (B=256, T=128, H=768)", "ms", "TFLOP/s", "GB/s");
  for (const Row& r : rows)
    std::printf("%-48s %10.3f %10.1f %10.0f\n", r.name, r.ms, r.flops / r.ms / 1e9, r.bytes / r.ms / 1e6);
}

// The two attention implementations at BERT-base heads (12 x 64) on the same tokens per batch:
// seq 128 x 256 sequences and seq 512 x 64.
TEST_F(CudaTimingTest, AttentionKernels) {
  absl::StatusOr<std::unique_ptr<Backend>> flash = MakeCudaBackend({.attention = AttentionKernel::kFlash});
  ASSERT_TRUE(flash.ok()) << flash.status();
  const int64_t H = 768, heads = 12, D = H / heads;
  const RngContext rng{1, 2, 0};
  std::printf("\n%-34s %10s %10s %10s %10s %8s\n", "attention, p = 0.1", "gemm fwd", "flash fwd", "gemm bwd",
              "flash bwd", "ratio");
  for (const auto& [B, T] : {std::pair<int64_t, int64_t>{256, 128}, {64, 512}}) {
    const int64_t M = B * T;
    TensorView qkv = Tensor(DType::kBF16, {M, 3 * H}, 2.0f), ctx = Tensor(DType::kBF16, {M, H});
    TensorView dout = Tensor(DType::kBF16, {M, H}), dqkv = Tensor(DType::kBF16, {M, 3 * H});
    TensorView mask = Tensor(DType::kI32, {B, T});
    std::vector<int32_t> ones(M, 1);
    gpu_->CopyFromHostI32(ones.data(), mask);
    double ms[2][2];
    Backend* backends[2] = {gpu_.get(), flash->get()};
    for (int k = 0; k < 2; ++k) {
      Backend& be = *backends[k];
      TensorView saved = Tensor(DType::kBF16, {be.AttentionSavedElems(B, heads, T, D)});
      ms[k][0] = TimeMs([&] { be.AttentionForward(qkv, mask, heads, 0.1f, rng, saved, ctx); }, 10, &be);
      ms[k][1] = TimeMs([&] { be.AttentionBackward(dout, qkv, mask, ctx, saved, heads, 0.1f, rng, dqkv); }, 10, &be);
    }
    std::printf("B=%-4ld T=%-4ld (x12 layers: %5.1f -> %5.1f ms) %10.3f %10.3f %10.3f %10.3f %7.2fx\n", B, T,
                12 * (ms[0][0] + ms[0][1]), 12 * (ms[1][0] + ms[1][1]), ms[0][0], ms[1][0], ms[0][1], ms[1][1],
                (ms[0][0] + ms[0][1]) / (ms[1][0] + ms[1][1]));
  }
}

#if LAMINA_WITH_CUDA
// The fused kernels as the backend runs them (16 rows per warp, the dK/dV kernel reading K and V
// fragments at each step) against the two candidates (FlashShape::warp_rows 32;
// hold_key_fragments), called directly at BERT-base heads: the A/B that decides.
TEST_F(CudaTimingTest, FlashAttentionTilings) {
  const int64_t H = 768, heads = 12, D = H / heads;
  const RngContext rng{1, 2, 0};
  struct Tiling {
    const char* name;
    int warp_rows;
    bool hold;
  };
  const Tiling tilings[3] = {{"16 rows", 16, false}, {"32 rows", 32, false}, {"16, K/V held", 16, true}};
  std::printf("\nflash attention, p = 0.1, ms per layer\n%-12s", "");
  for (const Tiling& t : tilings) std::printf(" %14s fwd %14s bwd", t.name, t.name);
  std::printf("\n");
  for (const auto& [B, T] : {std::pair<int64_t, int64_t>{256, 128}, {64, 512}}) {
    const int64_t M = B * T;
    cuda::FlashShape shape{B, heads, T, D};
    TensorView qkv = Tensor(DType::kBF16, {M, 3 * H}, 2.0f), out = Tensor(DType::kBF16, {M, H});
    TensorView dout = Tensor(DType::kBF16, {M, H}), dqkv = Tensor(DType::kBF16, {M, 3 * H});
    TensorView mask = Tensor(DType::kI32, {B, T});
    std::vector<int32_t> ones(M, 1);
    gpu_->CopyFromHostI32(ones.data(), mask);
    TensorView saved = Tensor(DType::kI32, {static_cast<int64_t>(cuda::FlashAttentionSavedBytes(shape) / 4)});
    TensorView scratch =
        Tensor(DType::kI32, {static_cast<int64_t>(cuda::FlashAttentionBackwardScratchBytes(shape) / 4)});
    gpu_->Synchronize();
    std::printf("B=%-4ld T=%-4ld", B, T);
    for (const Tiling& t : tilings) {
      shape.warp_rows = t.warp_rows;
      shape.hold_key_fragments = t.hold;
      const double fwd = TimeMs([&] {
        cuda::LaunchFlashAttentionForward(shape, qkv.as<uint16_t>(), mask.as<int32_t>(), 0.1f, rng,
                                          out.as<uint16_t>(), saved.data, nullptr);
        LAMINA_CHECK(cudaDeviceSynchronize() == cudaSuccess, "flash forward");
      });
      const double bwd = TimeMs([&] {
        cuda::LaunchFlashAttentionBackward(shape, dout.as<uint16_t>(), qkv.as<uint16_t>(), mask.as<int32_t>(),
                                           out.as<uint16_t>(), saved.data, 0.1f, dqkv.as<uint16_t>(), scratch.data,
                                           nullptr);
        LAMINA_CHECK(cudaDeviceSynchronize() == cudaSuccess, "flash backward");
      });
      std::printf(" %18.3f %18.3f", fwd, bwd);
    }
    std::printf("\n");
  }
}

// The bias gradient of a weight-gradient product at seq 128 x 256 (32768 tokens) two ways: the
// product then the column-sum pass over dout (what LinearBackward ran when measured), against
// the product with cuBLASLt's BGRADB epilogue and the add of its n sums into db (what it runs
// now where cuBLASLt offers the product). The A/B for the epilogue, at the four products with a
// bias in a layer (FFN-in's bias gradient: the column sums of the GELU's input gradient).
TEST_F(CudaTimingTest, BiasGradientEpilogue) {
  const int64_t M = 256 * 128;
  cuda::CublasLt lt;
  ASSERT_TRUE(lt.Init().ok());
  std::printf("\nbias gradient of a weight-gradient product, %ld tokens, ms\n%-24s %10s %10s %10s %12s %10s\n", M,
              "product [n, k]", "dW", "col sums", "dW+sums", "dW+BGRADB", "saved");
  const struct {
    const char* name;
    int64_t n, k;
  } shapes[] = {{"QKV [2304, 768]", 2304, 768},
                {"attn-out [768, 768]", 768, 768},
                {"FFN-out [768, 3072]", 768, 3072},
                {"FFN-in [3072, 768]", 3072, 768}};
  for (const auto& shape : shapes) {
    const int64_t n = shape.n, k = shape.k;
    TensorView dout = Tensor(DType::kBF16, {M, n}), x = Tensor(DType::kBF16, {M, k});
    TensorView dw = Tensor(DType::kF32, {n, k}), db = Tensor(DType::kF32, {n});
    TensorView scratch = Tensor(DType::kF32, {static_cast<int64_t>(cuda::ColumnSumScratchBytes(M, n) / 4)});
    gpu_->Synchronize();
    const cuda::GemmSpec product{.trans_a = true, .m = n, .n = k, .k = M, .a = dout.data, .lda = n, .b = x.data,
                                 .ldb = k, .c = dw.data, .ldc = k, .c_dtype = DType::kF32, .beta = 1.0f};
    auto sync = [](const char* what) { LAMINA_CHECK(cudaDeviceSynchronize() == cudaSuccess, what); };
    const double gemm = TimeMs([&] {
      lt.Gemm(product, nullptr);
      sync("dW product");
    });
    auto column_sums = [&] {
      cuda::LaunchColumnSumAccumulate(cuda::Ref{dout.data, DType::kBF16}, M, n, n, db.as<float>(), scratch.data,
                                      nullptr);
    };
    const double sums = TimeMs([&] {
      column_sums();
      sync("column sums");
    });
    const double both = TimeMs([&] {
      lt.Gemm(product, nullptr);
      column_sums();
      sync("dW product and column sums");
    });
    cuda::GemmSpec with_sums = product;
    with_sums.bias_grad = scratch.as<float>();
    if (!lt.GemmWithBiasGrad(with_sums, nullptr)) {
      std::printf("%-24s %10.3f %10.3f %10.3f %12s\n", shape.name, gemm, sums, both, "not offered");
      continue;
    }
    const double fused = TimeMs([&] {
      LAMINA_CHECK(lt.GemmWithBiasGrad(with_sums, nullptr), "BGRADB product");
      cuda::LaunchAdd(cuda::Ref{db.data, DType::kF32}, cuda::Ref{scratch.data, DType::kF32},
                      cuda::Ref{db.data, DType::kF32}, n, nullptr);
      sync("dW product with BGRADB");
    });
    std::printf("%-24s %10.3f %10.3f %10.3f %12.3f %10.3f\n", shape.name, gemm, sums, both, fused, both - fused);
  }
}

// cuBLASLt's heuristics' first choice against the fastest of its candidates (CublasLt::Init(true),
// run.gemm_autotune) on the encoder's products at seq 128 x 256: the forward, dx and dW products
// of QKV, attention-out, FFN-in and FFN-out, laid out as LinearForward and LinearBackward lay
// them out. The A/B for the option.
TEST_F(CudaTimingTest, GemmAutotune) {
  const int64_t M = 256 * 128;
  cuda::CublasLt heuristic, tuned;
  ASSERT_TRUE(heuristic.Init(false).ok());
  ASSERT_TRUE(tuned.Init(true).ok());
  std::printf("\ncuBLASLt products at %ld tokens: heuristics' choice against the tuned one\n", M);
  std::printf("%-22s %10s %10s %10s %10s %8s\n", "product", "ms", "TFLOP/s", "tuned ms", "TFLOP/s", "ratio");
  const struct {
    const char* name;
    int64_t n, k;
  } layers[] = {{"QKV", 2304, 768}, {"attn-out", 768, 768}, {"FFN-in", 3072, 768}, {"FFN-out", 768, 3072}};
  for (const auto& layer : layers) {
    const int64_t n = layer.n, k = layer.k;
    TensorView x = Tensor(DType::kBF16, {M, k}), w = Tensor(DType::kBF16, {n, k}, 0.02f);
    TensorView y = Tensor(DType::kBF16, {M, n}), dy = Tensor(DType::kBF16, {M, n}), dx = Tensor(DType::kBF16, {M, k});
    TensorView dw = Tensor(DType::kF32, {n, k});
    gpu_->Synchronize();
    const cuda::GemmSpec products[3] = {
        {.trans_b = true, .m = M, .n = n, .k = k, .a = x.data, .lda = k, .b = w.data, .ldb = k, .c = y.data, .ldc = n},
        {.m = M, .n = k, .k = n, .a = dy.data, .lda = n, .b = w.data, .ldb = k, .c = dx.data, .ldc = k},
        {.trans_a = true, .m = n, .n = k, .k = M, .a = dy.data, .lda = n, .b = x.data, .ldb = k, .c = dw.data, .ldc = k,
         .c_dtype = DType::kF32, .beta = 1.0f}};
    const char* kinds[3] = {"fwd", "dx", "dW"};
    for (int i = 0; i < 3; ++i) {
      auto time = [&](cuda::CublasLt& lt) {
        return TimeMs([&] {
          lt.Gemm(products[i], nullptr);
          LAMINA_CHECK(cudaDeviceSynchronize() == cudaSuccess, "GEMM");
        });
      };
      const double h = time(heuristic), t = time(tuned), flops = 2.0 * M * n * k;
      const std::string name = std::string(layer.name) + " " + kinds[i];
      std::printf("%-22s %10.3f %10.1f %10.3f %10.1f %8.3f\n", name.c_str(), h, flops / h / 1e9, t, flops / t / 1e9,
                  h / t);
    }
  }
}
#endif  // LAMINA_WITH_CUDA

TEST_F(CudaTimingTest, BertBaseMlmTrainingStep) {
  for (AttentionKernel kernel : {AttentionKernel::kGemm, AttentionKernel::kFlash}) {
    absl::StatusOr<std::unique_ptr<Backend>> backend = MakeCudaBackend({.attention = kernel});
    ASSERT_TRUE(backend.ok()) << backend.status();
    TimeStep(**backend, AttentionKernelName(kernel));
  }
}

}  // namespace
}  // namespace lamina
