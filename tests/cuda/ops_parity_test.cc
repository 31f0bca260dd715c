// Op-by-op parity of the CUDA backend (bf16 activations, fp32 accumulation) against the f32 CPU
// reference. Bounds: ~1e-2 where the GPU stores a bf16 result, tighter where its path is fp32
// end to end from identical inputs. Skipped when no GPU is present.
#include <algorithm>
#include <array>
#include <cmath>
#include <numeric>
#include <vector>

#include "core/philox.h"
#include "model/cpu/gelu.h"
#include "tests/cuda/parity_util.h"
#if LAMINA_WITH_CUDA
#include <cuda_runtime.h>

#include "model/cuda/kernels.h"
#endif

namespace lamina::testing {
namespace {

constexpr double kBf16Bound = 1e-2;

using CudaOpsTest = CudaParityTest;

TEST_F(CudaOpsTest, CopyAndConvertRoundTrip) {
  const int64_t n = Int(1, 5000);
  const std::vector<float> values = NonZero(n, 3.0f);
  Pair f32 = Make({n}, DType::kF32), bf = Make({n}, DType::kBF16);
  gpu_->CopyFromHost(values.data(), f32.gpu);
  EXPECT_EQ(Gpu(f32), values);  // f32 travels unchanged
  gpu_->Convert(f32.gpu, bf.gpu);
  const std::vector<float> rounded = Gpu(bf);
  for (int64_t i = 0; i < n; ++i) ASSERT_EQ(rounded[i], RoundBf16(values[i])) << i;  // same rounding as the host
  Pair back = Make({n}, DType::kF32);
  gpu_->Convert(bf.gpu, back.gpu);
  EXPECT_EQ(Gpu(back), rounded);
}

// Widths that are multiples of 8 take the 16-byte vector kernels, odd ones the scalar kernels.
TEST_F(CudaOpsTest, GeluTanhAddMatchReference) {
  for (const int64_t cols : {8 * Int(1, 40), 2 * Int(0, 150) + 1}) {
    const int64_t rows = Int(1, 40);
    Pair x = Random({rows, cols}, DType::kBF16, 3.0f), g = Random({rows, cols}, DType::kBF16);
    Pair out = Make({rows, cols}, DType::kBF16);
    cpu_->Gelu(x.cpu, out.cpu);
    gpu_->Gelu(x.gpu, out.gpu);
    ExpectClose(out, kBf16Bound, "Gelu");
    // GeluBackward with dx aliasing dout.
    Pair d = Random({rows, cols}, DType::kBF16);
    cpu_->GeluBackward(d.cpu, x.cpu, d.cpu);
    gpu_->GeluBackward(d.gpu, x.gpu, d.gpu);
    ExpectClose(d, kBf16Bound, "GeluBackward (in place)");
    Pair t = Make({rows, cols}, DType::kBF16), dt = Make({rows, cols}, DType::kBF16);
    cpu_->Tanh(x.cpu, t.cpu);
    gpu_->Tanh(x.gpu, t.gpu);
    ExpectClose(t, kBf16Bound, "Tanh");
    cpu_->TanhBackward(g.cpu, t.cpu, dt.cpu);
    gpu_->TanhBackward(g.gpu, t.gpu, dt.gpu);
    ExpectClose(dt, kBf16Bound, "TanhBackward");
    // AddDropout with out aliasing a: the plain add, then with the branch's dropout, whose
    // dropped elements leave a's values alone (element by element: the mask must be Dropout's).
    cpu_->AddDropout(x.cpu, g.cpu, 0.0f, {}, x.cpu);
    gpu_->AddDropout(x.gpu, g.gpu, 0.0f, {}, x.gpu);
    ExpectClose(x, kBf16Bound, "AddDropout p 0 (in place)");
    const RngContext rng{static_cast<uint64_t>(Int(0, 1 << 30)), MakeStream(Int(0, 100), Int(0, 11), 2),
                         static_cast<uint64_t>(Int(0, 9))};
    const std::vector<float> before = Gpu(x);
    Pair dropped = Make({rows, cols}, DType::kBF16);
    cpu_->Dropout(g.cpu, 0.5f, rng, dropped.cpu);
    cpu_->AddDropout(x.cpu, g.cpu, 0.5f, rng, x.cpu);
    gpu_->AddDropout(x.gpu, g.gpu, 0.5f, rng, x.gpu);
    const std::vector<float> got = Gpu(x), keep = Cpu(dropped);
    for (size_t i = 0; i < got.size(); ++i) {
      if (keep[i] == 0.0f) {
        ASSERT_EQ(got[i], before[i]) << "AddDropout kept a dropped element " << i << " seed " << seed_;
      }
    }
    ExpectClose(x, kBf16Bound, "AddDropout p 0.5 (in place)");
  }
}

// Sizes that are multiples of 8 take the vector kernel, which reads whole Philox blocks when the
// stream offset is a multiple of 4; the others draw element by element.
TEST_F(CudaOpsTest, DropoutMasksAreBitIdentical) {
  for (const int64_t n : {8 * Int(1, 3000), 2 * Int(0, 10000) + 1})
    for (const uint64_t offset :
         {static_cast<uint64_t>(4 * Int(0, 1000)), static_cast<uint64_t>(4 * Int(0, 1000) + Int(1, 3))})
      for (float p : {0.1f, 0.5f, 0.0f}) {
        const RngContext rng{static_cast<uint64_t>(Int(0, 1 << 30)), MakeStream(Int(0, 100), Int(0, 11), 3), offset};
        Pair x = Random({n}, DType::kBF16), out = Make({n}, DType::kBF16), back = Make({n}, DType::kBF16);
        cpu_->Dropout(x.cpu, p, rng, out.cpu);
        gpu_->Dropout(x.gpu, p, rng, out.gpu);
        const std::vector<float> g = Gpu(out), c = Cpu(out);
        int64_t dropped = 0;
        for (int64_t i = 0; i < n; ++i) {
          ASSERT_EQ(g[i] == 0.0f, c[i] == 0.0f) << "mask differs at " << i << " p " << p << " seed " << seed_;
          dropped += c[i] == 0.0f;
        }
        if (p == 0.0f) {
          EXPECT_EQ(dropped, 0);
        }
        const std::string tag =
            " n" + std::to_string(n) + " offset" + std::to_string(offset) + " p" + std::to_string(p);
        ExpectClose(out, kBf16Bound, "Dropout" + tag);
        cpu_->DropoutBackward(out.cpu, p, rng, back.cpu);
        gpu_->DropoutBackward(out.gpu, p, rng, back.gpu);
        ExpectClose(back, kBf16Bound, "DropoutBackward" + tag);
      }
}

// One embedding forward and backward; `mask_share` of the ids are one id (BERT's [MASK]), so
// that with enough rows its run is longer than a block's 256-position window.
void CheckEmbedding(CudaParityTest& t, int64_t batch, int64_t seq, int64_t hidden, double mask_share) {
  const std::string tag = " batch" + std::to_string(batch) + " seq" + std::to_string(seq) + " hidden" +
                          std::to_string(hidden) + " mask share " + std::to_string(mask_share);
  const int64_t vocab = t.Int(2, 60), types = t.Int(1, 3);
  const int64_t positions = seq + t.Int(0, 5), rows = batch * seq;
  const int32_t mask_id = static_cast<int32_t>(t.Int(0, vocab - 1));
  std::vector<int32_t> ids(rows), type_ids(rows);
  for (auto& v : ids) {  // many repeats
    v = t.Int(0, 999) < 1000 * mask_share ? mask_id : static_cast<int32_t>(t.Int(0, std::min<int64_t>(vocab - 1, 7)));
  }
  ids[0] = static_cast<int32_t>(vocab - 1);
  for (auto& v : type_ids) v = static_cast<int32_t>(t.Int(0, types - 1));
  Pair id = t.Ints({batch, seq}, ids), tid = t.Ints({batch, seq}, type_ids);
  Pair word = t.Random({vocab, hidden}, DType::kBF16), pos = t.Random({positions, hidden}, DType::kBF16);
  Pair type = t.Random({types, hidden}, DType::kBF16), out = t.Make({rows, hidden}, DType::kBF16);
  const float scale = 1.5f;
  t.cpu_->EmbeddingForward(id.cpu, tid.cpu, word.cpu, pos.cpu, type.cpu, scale, out.cpu);
  t.gpu_->EmbeddingForward(id.gpu, tid.gpu, word.gpu, pos.gpu, type.gpu, scale, out.gpu);
  t.ExpectClose(out, kBf16Bound, "EmbeddingForward" + tag);

  Pair dout = t.Random({rows, hidden}, DType::kBF16);
  const std::vector<float> dw0 = t.NonZero(vocab * hidden), dp0 = t.NonZero(positions * hidden),
                           dt0 = t.NonZero(types * hidden);
  Pair dword = t.Make({vocab, hidden}, DType::kF32), dpos = t.Make({positions, hidden}, DType::kF32),
       dtype = t.Make({types, hidden}, DType::kF32);
  std::vector<std::vector<float>> first;
  for (int run = 0; run < 2; ++run) {
    t.Set(dword, dw0);
    t.Set(dpos, dp0);
    t.Set(dtype, dt0);
    t.gpu_->EmbeddingBackward(id.gpu, tid.gpu, dout.gpu, scale, dword.gpu, dpos.gpu, dtype.gpu);
    std::vector<std::vector<float>> now{t.Gpu(dword), t.Gpu(dpos), t.Gpu(dtype)};
    if (run == 0) {
      first = now;
    } else {
      for (int k = 0; k < 3; ++k) {
        EXPECT_EQ(now[k], first[k]) << "embedding backward not deterministic, table " << k << tag;
      }
    }
  }
  t.cpu_->EmbeddingBackward(id.cpu, tid.cpu, dout.cpu, scale, dword.cpu, dpos.cpu, dtype.cpu);
  t.ExpectClose(dword, 1e-5, "EmbeddingBackward dword" + tag);
  t.ExpectClose(dpos, 1e-5, "EmbeddingBackward dpos" + tag);
  t.ExpectClose(dtype, 1e-5, "EmbeddingBackward dtype" + tag);
}

// Hidden sizes for each access width of the word-gradient kernel (8, 2 and 1 elements).
TEST_F(CudaOpsTest, EmbeddingForwardAndDeterministicBackward) {
  for (const int64_t hidden : {8 * Int(1, 40), 8 * Int(0, 18) + 2 * Int(1, 3), 2 * Int(0, 75) + 1}) {
    CheckEmbedding(*this, Int(1, 9), Int(1, 33), hidden, 0.0);
    CheckEmbedding(*this, Int(4, 8), 128, hidden, 0.6);  // a [MASK] run of 300 to 600
  }
}

// Widths: a multiple of 8 up to 1024 (register-cached vector kernels), an even and an odd one and
// one above 1024 (scalar kernels; dgamma/dbeta read 2 and 1 elements per access for the first two).
TEST_F(CudaOpsTest, LayerNormForwardBackwardMatchReference) {
  for (const int64_t hidden :
       {8 * Int(1, 128), 8 * Int(0, 100) + 2 * Int(1, 3), 2 * Int(1, 388) + 1, 8 * Int(129, 160)}) {
    const int64_t rows = Int(1, 300);
    std::printf(" hidden %ld\n", hidden);
    Pair x = Random({rows, hidden}, DType::kBF16, 2.0f), b = Random({rows, hidden}, DType::kBF16);
    Pair gamma = Random({hidden}, DType::kBF16), beta = Random({hidden}, DType::kBF16);
    Pair out = Make({rows, hidden}, DType::kBF16), mean = Make({rows}, DType::kF32), rstd = Make({rows}, DType::kF32);
    cpu_->LayerNormForward(x.cpu, gamma.cpu, beta.cpu, 1e-5f, out.cpu, mean.cpu, rstd.cpu);
    gpu_->LayerNormForward(x.gpu, gamma.gpu, beta.gpu, 1e-5f, out.gpu, mean.gpu, rstd.gpu);
    ExpectClose(out, kBf16Bound, "LayerNormForward out");
    ExpectClose(mean, 1e-5, "LayerNormForward mean");
    ExpectClose(rstd, 1e-5, "LayerNormForward rstd");

    // Plain; then with the branch dropout's backward fused in, written over dout (as Pre-LN does)
    // and into its own tensor after an accumulation, from a stream offset that is not a multiple
    // of 4.
    for (int pass = 0; pass < 3; ++pass) {
      const bool accumulate = pass == 2;
      const float p = pass == 0 ? 0.0f : pass == 1 ? 0.1f : 0.5f;
      const RngContext drop{static_cast<uint64_t>(Int(0, 1 << 30)), MakeStream(Int(0, 100), Int(0, 11), 3),
                            static_cast<uint64_t>(4 * Int(0, 100) + (pass == 2 ? Int(1, 3) : 0))};
      Pair dout = Random({rows, hidden}, DType::kBF16), dx = Random({rows, hidden}, DType::kBF16);
      Pair dgamma = Random({hidden}, DType::kF32), dbeta = Random({hidden}, DType::kF32);
      Pair none, own = Make({rows, hidden}, DType::kBF16);
      Pair& dropped = pass == 0 ? none : pass == 1 ? dout : own;
      Set(mean, Cpu(mean));  // both read the reference statistics
      Set(rstd, Cpu(rstd));
      cpu_->LayerNormBackward(dout.cpu, x.cpu, gamma.cpu, mean.cpu, rstd.cpu, dx.cpu, accumulate, dgamma.cpu,
                              dbeta.cpu, p, drop, dropped.cpu);
      gpu_->LayerNormBackward(dout.gpu, x.gpu, gamma.gpu, mean.gpu, rstd.gpu, dx.gpu, accumulate, dgamma.gpu,
                              dbeta.gpu, p, drop, dropped.gpu);
      const std::string tag = std::string(accumulate ? " (accumulate)" : "") + " p" + std::to_string(p);
      ExpectClose(dx, kBf16Bound, "LayerNormBackward dx" + tag);
      ExpectClose(dgamma, 1e-5, "LayerNormBackward dgamma" + tag);
      ExpectClose(dbeta, 1e-5, "LayerNormBackward dbeta" + tag);
      if (pass == 0) continue;
      ExpectClose(dropped, kBf16Bound, "LayerNormBackward dropped" + tag);
      const std::vector<float> got = Gpu(dropped), want = Cpu(dropped);
      int64_t differ = 0;
      for (size_t i = 0; i < want.size(); ++i) differ += (got[i] == 0.0f) != (want[i] == 0.0f);
      EXPECT_EQ(differ, 0) << "LayerNormBackward dropout mask" << tag << " (seed " << seed_ << ")";
    }

    // The fused dropout and residual add: the GPU normalises the bf16-rounded sum it stores. A
    // stream offset that is not a multiple of 4 takes two Philox blocks per run of four.
    for (const float p : {0.0f, 0.1f, 0.5f}) {
      const uint64_t offset = static_cast<uint64_t>(4 * Int(0, 100) + (p == 0.5f ? Int(1, 3) : 0));
      const RngContext drop{static_cast<uint64_t>(Int(0, 1 << 30)), MakeStream(Int(0, 100), Int(0, 11), 2), offset};
      const std::string tag = " p" + std::to_string(p) + " offset " + std::to_string(offset);
      Pair sum = Make({rows, hidden}, DType::kBF16);
      cpu_->AddLayerNormForward(x.cpu, b.cpu, p, drop, gamma.cpu, beta.cpu, 1e-5f, sum.cpu, out.cpu, mean.cpu,
                                rstd.cpu);
      gpu_->AddLayerNormForward(x.gpu, b.gpu, p, drop, gamma.gpu, beta.gpu, 1e-5f, sum.gpu, out.gpu, mean.gpu,
                                rstd.gpu);
      // Element by element: a different keep decision moves one element by |b| / (1 - p), far
      // more than bf16 rounding of the sum (a norm-wise bound could miss a few).
      const std::vector<float> xs = Cpu(x), bs = Cpu(b), got = Gpu(sum), want = Cpu(sum);
      int bad = 0;
      for (size_t i = 0; i < want.size(); ++i)
        if (!(std::fabs(got[i] - want[i]) <= 1.0 / 128 * (std::fabs(xs[i]) + 2 * std::fabs(bs[i])) + 1e-6) &&
            ++bad <= 5)
          ADD_FAILURE() << "AddLayerNormForward sum" << tag << " [" << i << "]: " << got[i] << ", expected "
                        << want[i] << " (seed " << seed_ << ")";
      ExpectClose(sum, kBf16Bound, "AddLayerNormForward sum" + tag);
      ExpectClose(out, kBf16Bound, "AddLayerNormForward out" + tag);
      ExpectClose(mean, kBf16Bound, "AddLayerNormForward mean" + tag);
      ExpectClose(rstd, kBf16Bound, "AddLayerNormForward rstd" + tag);
    }
  }
}

// One forward and backward of a dense layer of the given shape on both backends.
void CheckLinear(CudaParityTest& t, int64_t m, int64_t k, int64_t n, Activation act, bool bias, bool accumulate) {
  const std::string name = act == Activation::kGelu ? " gelu" : act == Activation::kGeluTanh ? " gelu_tanh" : " none";
  const std::string tag = name + (bias ? " bias" : "") +
                          (accumulate ? " acc" : "") + " m" + std::to_string(m) + " k" + std::to_string(k) + " n" +
                          std::to_string(n);
  Pair x = t.Random({m, k}, DType::kBF16), w = t.Random({n, k}, DType::kBF16, 0.2f);
  Pair b = bias ? t.Random({n}, DType::kBF16) : Pair{};
  Pair pre = t.Make({m, n}, DType::kBF16), out = t.Make({m, n}, DType::kBF16);
  t.cpu_->LinearForward(x.cpu, w.cpu, b.cpu, act, pre.cpu, out.cpu);
  t.gpu_->LinearForward(x.gpu, w.gpu, b.gpu, act, pre.gpu, out.gpu);
  t.ExpectClose(out, kBf16Bound, "LinearForward out" + tag);
  if (act != Activation::kNone) {
    t.ExpectClose(pre, kBf16Bound, "LinearForward pre_act" + tag);
    t.Set(pre, t.Cpu(pre));  // backward from identical saved pre-activations
  }
  Pair dout = t.Random({m, n}, DType::kBF16), dx = t.Random({m, k}, DType::kBF16);
  Pair dw = t.Random({n, k}, DType::kF32), db = bias ? t.Random({n}, DType::kF32) : Pair{};
  t.cpu_->LinearBackward(dout.cpu, x.cpu, w.cpu, act, pre.cpu, dx.cpu, accumulate, dw.cpu, db.cpu);
  t.gpu_->LinearBackward(dout.gpu, x.gpu, w.gpu, act, pre.gpu, dx.gpu, accumulate, dw.gpu, db.gpu);
  t.ExpectClose(dx, kBf16Bound, "LinearBackward dx" + tag);
  // Without GELU, dW and db see identical bf16 inputs and accumulate in fp32 on both sides.
  const double param_bound = act != Activation::kNone ? kBf16Bound : 1e-5;
  t.ExpectClose(dw, param_bound, "LinearBackward dw" + tag);
  if (bias) t.ExpectClose(db, param_bound, "LinearBackward db" + tag);
  if (act != Activation::kNone) t.ExpectClose(dout, kBf16Bound, "LinearBackward dpre (in dout)" + tag);
}

// The MLM decoder's layout: out and dout with rows padded to a multiple of 8 (backend.h). Both
// start with the same padding, so a write to it shows.
TEST_F(CudaOpsTest, LinearPaddedRowsMatchReference) {
  const int64_t m = Int(1, 200), k = 8 * Int(1, 40), n = Int(1, 300), pitch = (n + 7) / 8 * 8 + 8 * Int(0, 1);
  const std::string tag = " m" + std::to_string(m) + " k" + std::to_string(k) + " n" + std::to_string(n) + " pitch" +
                          std::to_string(pitch);
  Pair x = Random({m, k}, DType::kBF16), w = Random({n, k}, DType::kBF16, 0.2f), b = Random({n}, DType::kBF16);
  Pair out = Random({m, pitch}, DType::kBF16);
  cpu_->LinearForward(x.cpu, w.cpu, b.cpu, Activation::kNone, {}, out.cpu);
  gpu_->LinearForward(x.gpu, w.gpu, b.gpu, Activation::kNone, {}, out.gpu);
  ExpectClose(out, kBf16Bound, "LinearForward padded out" + tag);
  Pair dout = Random({m, pitch}, DType::kBF16), dx = Make({m, k}, DType::kBF16);
  Pair dw = Random({n, k}, DType::kF32), db = Random({n}, DType::kF32);
  cpu_->LinearBackward(dout.cpu, x.cpu, w.cpu, Activation::kNone, {}, dx.cpu, false, dw.cpu, db.cpu);
  gpu_->LinearBackward(dout.gpu, x.gpu, w.gpu, Activation::kNone, {}, dx.gpu, false, dw.gpu, db.gpu);
  ExpectClose(dx, kBf16Bound, "LinearBackward dx from padded dout" + tag);
  ExpectClose(dw, 1e-5, "LinearBackward dw from padded dout" + tag);
  ExpectClose(db, 1e-5, "LinearBackward db from padded dout" + tag);
}

TEST_F(CudaOpsTest, LinearAlignedShapesMatchReference) {
  for (Activation act : {Activation::kNone, Activation::kGelu, Activation::kGeluTanh})
    for (bool bias : {true, false})
      CheckLinear(*this, 8 * Int(1, 40), 8 * Int(1, 40), 8 * Int(1, 40), act, bias, Int(0, 1) == 1);
}

TEST_F(CudaOpsTest, LinearOddShapesMatchReference) {
  for (Activation act : {Activation::kNone, Activation::kGelu, Activation::kGeluTanh})
    for (bool bias : {true, false})
      CheckLinear(*this, Int(1, 200), Int(1, 200), Int(1, 200), act, bias, Int(0, 1) == 1);
}

// The FFN's second layer's backward straight to the GELU's input: x = act(pre) [m, k], w [n, k].
// dpre and this layer's dw and db, from identical inputs.
void CheckLinearToPreActivation(CudaParityTest& t, int64_t m, int64_t k, int64_t n, Activation act) {
  const std::string tag = std::string(act == Activation::kGelu ? " gelu" : " gelu_tanh") + " m" + std::to_string(m) +
                          " k" + std::to_string(k) + " n" + std::to_string(n);
  Pair pre = t.Random({m, k}, DType::kBF16, 2.0f), x = t.Make({m, k}, DType::kBF16);
  std::vector<float> xs = t.Cpu(pre);
  for (float& v : xs) v = cpu::ActivationValue(act, v);
  t.Set(x, xs);
  Pair w = t.Random({n, k}, DType::kBF16, 0.2f), dout = t.Random({m, n}, DType::kBF16);
  Pair dpre = t.Make({m, k}, DType::kBF16);
  Pair dw = t.Random({n, k}, DType::kF32), db = t.Random({n}, DType::kF32);
  t.cpu_->LinearBackwardToPreActivation(dout.cpu, x.cpu, w.cpu, act, pre.cpu, dpre.cpu, dw.cpu, db.cpu);
  t.gpu_->LinearBackwardToPreActivation(dout.gpu, x.gpu, w.gpu, act, pre.gpu, dpre.gpu, dw.gpu, db.gpu);
  t.ExpectClose(dpre, kBf16Bound, "LinearBackwardToPreActivation dpre" + tag);
  t.ExpectClose(dw, 1e-5, "LinearBackwardToPreActivation dw" + tag);  // bf16 inputs, f32 sums on both sides
  t.ExpectClose(db, 1e-5, "LinearBackwardToPreActivation db" + tag);
}

// Widths that are multiples of 8 take the tanh form's dGELU epilogue; others, and the erf form,
// the separate kernel.
TEST_F(CudaOpsTest, LinearBackwardToPreActivationMatchesReference) {
  for (Activation act : {Activation::kGelu, Activation::kGeluTanh}) {
    CheckLinearToPreActivation(*this, 8 * Int(1, 40), 8 * Int(1, 40), 8 * Int(1, 40), act);
    CheckLinearToPreActivation(*this, Int(1, 200), Int(1, 200), Int(1, 200), act);
    CheckLinearToPreActivation(*this, 37, 96, 64, act);  // rows not a multiple of 8: the wrapper's row split
  }
}

// The parity bounds (relative to a tensor's norm) cannot tell the two GELU forms apart: they differ
// by 4.7e-4 at most. On [-4, -3.25] they differ by 20-80% of the value and 8-50% of the slope, which
// an element-by-element comparison sees: cuBLASLt's epilogues must compute the tanh form, as the
// reference does. x = 0 makes every row of pre the bias; an FFN-out whose dx product is all ones
// makes dpre the slope.
TEST_F(CudaOpsTest, GeluTanhEpiloguesComputeTheTanhForm) {
  const int64_t m = 16, k = 64, n = 64, n2 = 8;
  std::vector<float> bias(n);
  for (int64_t j = 0; j < n; ++j) bias[j] = RoundBf16(-4.0f + 0.75f * static_cast<float>(j) / (n - 1));
  Pair x = Make({m, k}, DType::kBF16), w = Random({n, k}, DType::kBF16, 0.2f), b = Make({n}, DType::kBF16);
  Set(x, std::vector<float>(m * k, 0.0f));
  Set(b, bias);
  Pair pre = Make({m, n}, DType::kBF16), out = Make({m, n}, DType::kBF16);
  gpu_->LinearForward(x.gpu, w.gpu, b.gpu, Activation::kGeluTanh, pre.gpu, out.gpu);
  Pair dout = Make({m, n2}, DType::kBF16), w2 = Make({n2, n}, DType::kBF16);
  Set(dout, std::vector<float>(m * n2, 1.0f));
  Set(w2, std::vector<float>(n2 * n, 1.0f / n2));  // dout W2 = 1 exactly
  Pair dpre = Make({m, n}, DType::kBF16), dw2 = Make({n2, n}, DType::kF32), db2 = Make({n2}, DType::kF32);
  Set(dw2, std::vector<float>(n2 * n, 0.0f));
  Set(db2, std::vector<float>(n2, 0.0f));
  gpu_->LinearBackwardToPreActivation(dout.gpu, out.gpu, w2.gpu, Activation::kGeluTanh, pre.gpu, dpre.gpu, dw2.gpu,
                                      db2.gpu);
  const std::vector<float> got_pre = Gpu(pre), got_out = Gpu(out), got_slope = Gpu(dpre);
  for (int64_t i = 0; i < m * n; ++i) {
    const float z = bias[i % n];
    const float value = cpu::GeluTanhValue(z), slope = cpu::GeluTanhDerivative(z);
    ASSERT_GT(std::fabs(cpu::GeluValue(z) - value), 0.15f * std::fabs(value)) << z;  // the test can tell
    ASSERT_GT(std::fabs(cpu::GeluDerivative(z) - slope), 0.06f * std::fabs(slope)) << z;
    EXPECT_EQ(got_pre[i], z) << "pre_act [" << i << "]";
    EXPECT_NEAR(got_out[i], value, 0.02f * std::fabs(value)) << "gelu_tanh(" << z << ") [" << i << "]";
    EXPECT_NEAR(got_slope[i], slope, 0.02f * std::fabs(slope)) << "gelu_tanh'(" << z << ") [" << i << "]";
  }
}

// The tanh GELU runs in cuBLASLt's epilogue when the width is a multiple of 8: rows not a multiple
// of 8 (the wrapper's row split carries the GELU input along), an unaligned k (no k split under a
// GELU), and a width that takes the separate kernel instead.
TEST_F(CudaOpsTest, LinearGeluTanhEpilogueEdgesMatchReference) {
  for (bool bias : {true, false}) {
    CheckLinear(*this, 37, 64, 96, Activation::kGeluTanh, bias, false);
    CheckLinear(*this, 64, 37, 96, Activation::kGeluTanh, bias, true);
    CheckLinear(*this, 64, 64, 100, Activation::kGeluTanh, bias, false);
  }
}

// Attention on a [B*T, 3H] projection with padded sequences (one fully padded when B > 1), on
// `gpu` (the fixture's GEMM-path backend or one with the fused kernels) against the reference.
// Where the GEMM path runs (`fused` false) the dropped probabilities it keeps are compared with
// the reference's probabilities and dropout decisions, element by element; the fused kernels keep
// logsumexps and decision bits, which only their own backward reads.
void CheckAttention(CudaParityTest& t, Backend& gpu, bool fused, int64_t batch, int64_t heads, int64_t head_dim,
                    int64_t seq, float p) {
  const int64_t hidden = heads * head_dim, rows = batch * seq;
  const std::string tag = " B" + std::to_string(batch) + " heads" + std::to_string(heads) + " D" +
                          std::to_string(head_dim) + " T" + std::to_string(seq) + " p" + std::to_string(p);
  std::vector<int32_t> mask(rows, 0);
  for (int64_t b = 0; b < batch; ++b) {
    const int64_t len = b == 1 ? 0 : t.Int(1, seq);
    for (int64_t j = 0; j < len; ++j) mask[b * seq + j] = 1;
  }
  const RngContext rng{static_cast<uint64_t>(t.Int(0, 1 << 30)), MakeStream(7, 2, 1), static_cast<uint64_t>(t.Int(0, 5))};
  Pair key_mask = t.Ints({batch, seq}, mask), qkv = t.Random({rows, 3 * hidden}, DType::kBF16, 2.0f);
  const int64_t cpu_saved = t.cpu_->AttentionSavedElems(batch, heads, seq, head_dim);
  const int64_t gpu_saved = gpu.AttentionSavedElems(batch, heads, seq, head_dim);
  // In bf16 elements from 16-byte boundaries. The fused kernels keep an f32 logsumexp per row,
  // then the forward pass's dropout decisions as one bit per score of 16 x 64 tiles (one 32-bit
  // word per lane of the warp that drew them), over whole 128-row spans. The
  // GEMM path keeps the scores and the dropped probabilities, an f32 logsumexp per row, then the
  // decisions as four words per row and 128 columns.
  const int64_t bh = batch * heads, scores = bh * seq * seq;
  const int64_t part = (scores + 7) / 8 * 8, lse = (bh * seq * 4 + 15) / 16 * 8;
  const int64_t spans = (seq + 127) / 128;  // keep words of whole 128-row spans (SavedLayout)
  ASSERT_EQ(gpu_saved, fused ? lse + bh * 8 * spans * 2 * spans * 32 * 2
                             : 2 * part + lse + bh * seq * ((seq + 127) / 128) * 4 * 2);
  Pair saved = t.Make({cpu_saved}, DType::kBF16), out = t.Make({rows, hidden}, DType::kBF16);
  Pair gpu_only = t.Make({gpu_saved}, DType::kBF16);
  t.cpu_->AttentionForward(qkv.cpu, key_mask.cpu, heads, p, rng, saved.cpu, out.cpu);
  gpu.AttentionForward(qkv.gpu, key_mask.gpu, heads, p, rng, gpu_only.gpu, out.gpu);
  gpu.Synchronize();
  t.ExpectClose(out, kBf16Bound, "AttentionForward out" + tag);
  if (!fused) {
    const std::vector<float> probs = t.Cpu(saved), kept = t.Gpu(gpu_only);
    const std::vector<float> dropped(kept.begin() + part, kept.begin() + part + scores);
    std::vector<float> want(scores);
    int64_t decisions = 0;
    for (int64_t i = 0; i < scores; ++i) {
      const bool keep = p == 0.0f || AttentionDropoutKeep(rng, static_cast<uint64_t>(i / seq), seq, i % seq, p);
      want[i] = keep ? probs[i] / (1.0f - p) : 0.0f;
      decisions += (dropped[i] == 0.0f) != (want[i] == 0.0f);  // masked keys and dropped scores
    }
    const double err = CudaParityTest::RelErr(dropped, want);
    std::printf("  %-40s rel err %.3e (bound %.0e)\n", ("AttentionForward dropped probs" + tag).c_str(), err,
                kBf16Bound);
    EXPECT_LE(err, kBf16Bound) << "AttentionForward dropped probabilities" << tag << " seed " << t.seed_;
    EXPECT_EQ(decisions, 0) << "AttentionForward zeros of the dropped probabilities" << tag << " seed " << t.seed_;
  }
  Pair dout = t.Random({rows, hidden}, DType::kBF16), dqkv = t.Make({rows, 3 * hidden}, DType::kBF16);
  t.cpu_->AttentionBackward(dout.cpu, qkv.cpu, key_mask.cpu, out.cpu, saved.cpu, heads, p, rng, dqkv.cpu);
  gpu.AttentionBackward(dout.gpu, qkv.gpu, key_mask.gpu, out.gpu, gpu_only.gpu, heads, p, rng, dqkv.gpu);
  gpu.Synchronize();
  // Stricter view per part: q, k and v gradients each against their own norm.
  const std::vector<float> g = t.Gpu(dqkv), c = t.Cpu(dqkv);
  for (int part = 0; part < 3; ++part) {
    const AttentionPartError e = AttentionGradPartError(g, c, rows, hidden, part, kBf16Bound, fused);
    const std::string what = "AttentionBackward d" + std::string("qkv").substr(part, 1) + tag;
    std::printf("  %-40s %s %.3e (bound %.0e)\n", what.c_str(), e.metric, e.value, e.bound);
    EXPECT_LE(e.value, e.bound) << what << " seed " << t.seed_;
  }
  // Deterministic: the same inputs give the same bits (no atomics in either path).
  gpu.AttentionBackward(dout.gpu, qkv.gpu, key_mask.gpu, out.gpu, gpu_only.gpu, heads, p, rng, dqkv.gpu);
  gpu.Synchronize();
  EXPECT_EQ(t.Gpu(dqkv), g) << "AttentionBackward is not deterministic" << tag;
}

std::unique_ptr<Backend> FlashBackend() {
  absl::StatusOr<std::unique_ptr<Backend>> b = MakeCudaBackend({.attention = AttentionKernel::kFlash});
  LAMINA_CHECK(b.ok(), b.status().ToString());
  return *std::move(b);
}

TEST_F(CudaOpsTest, AttentionAlignedHeadsMatchReference) {
  CheckAttention(*this, *gpu_, false, Int(2, 5), Int(1, 4), 8 * Int(1, 8), Int(1, 70), 0.0f);
  CheckAttention(*this, *gpu_, false, Int(2, 5), Int(1, 4), 8 * Int(1, 8), Int(1, 70), 0.1f);
}

TEST_F(CudaOpsTest, AttentionOddHeadDimMatchesReference) {
  CheckAttention(*this, *gpu_, false, Int(1, 4), Int(1, 3), 2 * Int(1, 10) + 1, Int(1, 40), 0.2f);
}

// The fused kernels: random head dims (padded to 16, 32, 64 or 128 inside), lengths that end
// inside a 64-row tile and span several, and BERT's head (D = 64, T = 128).
TEST_F(CudaOpsTest, FlashAttentionMatchesReference) {
  std::unique_ptr<Backend> flash = FlashBackend();
  for (float p : {0.0f, 0.1f}) {
    CheckAttention(*this, *flash, true, Int(2, 4), Int(1, 4), 8 * Int(1, 16), Int(1, 200), p);
    CheckAttention(*this, *flash, true, Int(2, 3), Int(1, 3), 64, 128, p);
  }
  CheckAttention(*this, *flash, true, 2, 1, 8, 1, 0.1f);     // one token
  CheckAttention(*this, *flash, true, 3, 2, 128, 65, 0.1f);  // the widest head, one row past a tile
}

#if LAMINA_WITH_CUDA
// The candidates that await timing, two row tiles per warp in the fused kernels
// (FlashShape::warp_rows 32) and a dK/dV kernel holding K's and V's fragments
// (hold_key_fragments), compute each accumulator from the same products in the same order as
// what the backend runs (16 rows, fragments read at each step): the same bits, logsumexps and
// dropout bits included.
TEST_F(CudaOpsTest, FlashAttentionTilingsGiveTheSameBits) {
  for (const auto& [batch, heads, head_dim, seq] :
       {std::array<int64_t, 4>{2, 2, 64, 128}, {3, 1, 64, Int(1, 300)}, {2, 2, 8 * Int(1, 16), Int(1, 200)}}) {
    const int64_t hidden = heads * head_dim, rows = batch * seq;
    const std::string tag = " B" + std::to_string(batch) + " heads" + std::to_string(heads) + " D" +
                            std::to_string(head_dim) + " T" + std::to_string(seq);
    std::vector<int32_t> mask(rows, 0);
    for (int64_t b = 0; b < batch; ++b)
      for (int64_t j = 0, len = b == 1 ? 0 : Int(1, seq); j < len; ++j) mask[b * seq + j] = 1;
    const RngContext rng{static_cast<uint64_t>(Int(0, 1 << 30)), MakeStream(7, 2, 1), static_cast<uint64_t>(Int(0, 5))};
    Pair key_mask = Ints({batch, seq}, mask), qkv = Random({rows, 3 * hidden}, DType::kBF16, 2.0f);
    Pair dout = Random({rows, hidden}, DType::kBF16);
    cuda::FlashShape shape{batch, heads, seq, head_dim};
    const int64_t saved_elems = static_cast<int64_t>(cuda::FlashAttentionSavedBytes(shape) / 2);
    const int64_t scratch_elems = static_cast<int64_t>(cuda::FlashAttentionBackwardScratchBytes(shape) / 2);
    const float p = 0.1f;
    // [16 rows; 32 rows; 16 rows, K and V fragments held][out, saved, dqkv], as bytes
    std::vector<uint8_t> results[3][3];
    for (int w = 0; w < 3; ++w) {
      shape.warp_rows = w == 1 ? 32 : 16;
      shape.hold_key_fragments = w == 2;
      // NaN-filled (Make), so anything one run writes and the other does not shows.
      Pair out = Make({rows, hidden}, DType::kBF16), saved = Make({saved_elems}, DType::kBF16);
      Pair scratch = Make({scratch_elems}, DType::kBF16), dqkv = Make({rows, 3 * hidden}, DType::kBF16);
      cuda::LaunchFlashAttentionForward(shape, qkv.gpu.as<uint16_t>(), key_mask.gpu.as<int32_t>(), p, rng,
                                        out.gpu.as<uint16_t>(), saved.gpu.data, nullptr);
      cuda::LaunchFlashAttentionBackward(shape, dout.gpu.as<uint16_t>(), qkv.gpu.as<uint16_t>(),
                                         key_mask.gpu.as<int32_t>(), out.gpu.as<uint16_t>(), saved.gpu.data, p,
                                         dqkv.gpu.as<uint16_t>(), scratch.gpu.data, nullptr);
      ASSERT_EQ(cudaDeviceSynchronize(), cudaSuccess);
      const Pair* parts[3] = {&out, &saved, &dqkv};
      for (int i = 0; i < 3; ++i) {
        results[w][i].resize(parts[i]->gpu.bytes());
        ASSERT_TRUE(CopyBytes(results[w][i].data(), Device::kCpu, parts[i]->gpu.data, Device::kCuda,
                              results[w][i].size())
                        .ok());
      }
    }
    // Of the forward pass's record, what the backward kernels read for kept results: the
    // logsumexps, and the keep words of groups and key tiles before T (flash_attention.cuh,
    // SavedLayout: [B * heads][8 per 128 rows][2 per 128 keys][32], from a 16-byte boundary).
    for (int w = 0; w < 3; ++w) {
      const std::vector<uint8_t> saved = results[w][1];
      const int64_t bh = batch * heads, spans = (seq + 127) / 128, keep_at = (bh * seq * 4 + 15) / 16 * 16;
      std::vector<uint8_t> part(saved.begin(), saved.begin() + bh * seq * 4);
      for (int64_t h = 0; h < bh; ++h)
        for (int64_t group = 0; group < (seq + 15) / 16; ++group)
          for (int64_t tile = 0; tile < (seq + 63) / 64; ++tile) {
            const int64_t at = keep_at + (((h * 8 * spans + group) * 2 * spans + tile) * 32) * 4;
            part.insert(part.end(), saved.begin() + at, saved.begin() + at + 32 * 4);
          }
      results[w][1] = part;
    }
    const char* what[3] = {"forward output", "logsumexps and keep bits", "gradient"};
    for (int i = 0; i < 3; ++i) {
      EXPECT_TRUE(results[0][i] == results[1][i])
          << what[i] << " with 32 rows per warp differs from 16" << tag << " seed " << seed_;
      EXPECT_TRUE(results[0][i] == results[2][i])
          << what[i] << " with K and V fragments held differs" << tag << " seed " << seed_;
    }
  }
}
#endif  // LAMINA_WITH_CUDA

// Heads the fused kernels do not take run on the GEMM path of the same backend.
TEST_F(CudaOpsTest, FlashAttentionFallsBackForOddHeads) {
  std::unique_ptr<Backend> flash = FlashBackend();
  ASSERT_EQ(flash->AttentionSavedElems(2, 3, 10, 12), gpu_->AttentionSavedElems(2, 3, 10, 12));
  CheckAttention(*this, *flash, false, Int(1, 4), Int(1, 3), 2 * Int(1, 10) + 1, Int(1, 40), 0.2f);
}

TEST_F(CudaOpsTest, GatherAndScatterRows) {
  const int64_t rows = Int(2, 200), cols = Int(1, 300), n = Int(1, rows);
  std::vector<int32_t> perm(rows);
  std::iota(perm.begin(), perm.end(), 0);
  std::shuffle(perm.begin(), perm.end(), rng_);
  perm.resize(n);
  Pair index = Ints({n}, perm), x = Random({rows, cols}, DType::kBF16), out = Make({n, cols}, DType::kBF16);
  cpu_->GatherRows(x.cpu, index.cpu, out.cpu);
  gpu_->GatherRows(x.gpu, index.gpu, out.gpu);
  EXPECT_EQ(Gpu(out), Cpu(out));  // a copy: exact
  Pair dout = Random({n, cols}, DType::kBF16), dx = Random({rows, cols}, DType::kBF16);
  cpu_->ScatterAddRows(dout.cpu, index.cpu, dx.cpu);
  gpu_->ScatterAddRows(dout.gpu, index.gpu, dx.gpu);
  ExpectClose(dx, kBf16Bound, "ScatterAddRows");
}

// Dense rows, and rows padded to a multiple of 8 as the model stores its logits (backend.h).
TEST_F(CudaOpsTest, CrossEntropyMatchesReference) {
  for (const bool padded : {false, true}) {
    const int64_t n = Int(1, 64), vocab = Int(2, 3000), pitch = padded ? (vocab + 7) / 8 * 8 + 8 * Int(0, 1) : vocab;
    const std::string tag = std::string(padded ? " (padded to " + std::to_string(pitch) + ")" : "");
    std::vector<int32_t> targets(n);
    for (auto& v : targets) v = Int(0, 4) == 0 ? -1 : static_cast<int32_t>(Int(0, vocab - 1));
    Pair tgt = Ints({n}, targets), logits = Random({n, pitch}, DType::kBF16, 6.0f);
    // dlogits starts equal on both sides, so any write to its padding shows.
    Pair losses = Make({n}, DType::kF32), dlogits = Random({n, pitch}, DType::kBF16);
    const float grad_scale = 0.37f;
    cpu_->CrossEntropy(logits.cpu, vocab, tgt.cpu, grad_scale, losses.cpu, dlogits.cpu);
    gpu_->CrossEntropy(logits.gpu, vocab, tgt.gpu, grad_scale, losses.gpu, dlogits.gpu);
    ExpectClose(losses, 1e-5, "CrossEntropy losses" + tag);  // fp32 from identical bf16 logits
    ExpectClose(dlogits, kBf16Bound, "CrossEntropy dlogits" + tag);
    // Losses only, then the gradient written over the logits.
    Pair losses2 = Make({n}, DType::kF32);
    gpu_->CrossEntropy(logits.gpu, vocab, tgt.gpu, grad_scale, losses2.gpu, TensorView{});
    EXPECT_EQ(Gpu(losses2), Gpu(losses)) << tag;
    cpu_->CrossEntropy(logits.cpu, vocab, tgt.cpu, grad_scale, losses2.cpu, logits.cpu);
    gpu_->CrossEntropy(logits.gpu, vocab, tgt.gpu, grad_scale, losses2.gpu, logits.gpu);
    ExpectClose(losses2, 1e-5, "CrossEntropy losses (in place)" + tag);
    ExpectClose(logits, kBf16Bound, "CrossEntropy dlogits (in place)" + tag);
  }
}

TEST_F(CudaOpsTest, ArgMaxFindsFirstMaximum) {
  for (const bool padded : {false, true}) {
    const int64_t n = Int(1, 50), vocab = Int(1, 2500), pitch = padded ? (vocab + 7) / 8 * 8 + 8 : vocab;
    std::vector<float> v = Uniform(n * pitch, -4.0f, 4.0f);
    for (int64_t r = 0; r < n; ++r) {
      const int64_t at = Int(0, vocab - 1);
      v[r * pitch + at] = 10.0f;
      if (r % 2 == 1) v[r * pitch + Int(at, vocab - 1)] = 10.0f;  // a tie goes to the first
      for (int64_t c = vocab; c < pitch; ++c) v[r * pitch + c] = 20.0f;  // padding, never a class
    }
    Pair logits = Make({n, pitch}, DType::kBF16), out = Make({n}, DType::kI32);
    Set(logits, v);
    cpu_->ArgMax(logits.cpu, vocab, out.cpu);
    gpu_->ArgMax(logits.gpu, vocab, out.gpu);
    EXPECT_EQ(GpuInts(out), CpuInts(out)) << (padded ? "padded" : "dense");
  }
}

TEST_F(CudaOpsTest, SumSquaresAndScale) {
  const int64_t n = Int(1, 300000);
  Pair x = Random({n}, DType::kF32, 3.0f);
  const double g = gpu_->SumSquares(x.gpu), c = cpu_->SumSquares(x.cpu);
  EXPECT_NEAR(g, c, 1e-9 * c);
  EXPECT_EQ(gpu_->SumSquares(x.gpu), g);  // the same order every time
  cpu_->Scale(x.cpu, 0.3f);
  gpu_->Scale(x.gpu, 0.3f);
  EXPECT_EQ(Gpu(x), Cpu(x));
}

// A step too large for the GPU is refused by PrepareStep with a Status that names the scratch, the
// size and the free memory (an op would have aborted); the backend stays usable after it.
TEST_F(CudaOpsTest, PrepareStepReportsOutOfMemoryAsStatus) {
  StepShape huge;
  huge.batch = int64_t{1} << 20, huge.seq = 512, huge.hidden = 768, huge.ffn = 3072, huge.heads = 12;
  huge.type_vocab = 2, huge.head_rows = 1 << 16, huge.head_classes = 30522, huge.grad = true;
  const absl::Status s = gpu_->PrepareStep(huge);
  ASSERT_TRUE(absl::IsResourceExhausted(s)) << s;
  EXPECT_NE(s.message().find("scratch"), std::string::npos) << s;
  EXPECT_NE(s.message().find("MiB free"), std::string::npos) << s;
  EXPECT_NE(s.message().find("batch.micro_batch"), std::string::npos) << s;
  StepShape small = huge;
  small.batch = 2, small.seq = 16, small.head_rows = 4;
  EXPECT_TRUE(gpu_->PrepareStep(small).ok());
  Pair x = Random({1000}, DType::kF32, 1.0f);
  EXPECT_NEAR(gpu_->SumSquares(x.gpu), cpu_->SumSquares(x.cpu), 1e-6 * cpu_->SumSquares(x.cpu));
}

// Segments of random sizes with gaps between them (left untouched), mixed decay; consecutive
// segments sometimes belong to one tensor (as the pieces of a ZeRO shard do).
std::vector<ParamSegment> RandomSegments(CudaParityTest& t, int64_t* total) {
  std::vector<ParamSegment> segs;
  int64_t at = 0;
  int32_t tensor = 0;
  const int count = static_cast<int>(t.Int(1, 12));
  for (int i = 0; i < count; ++i) {
    at += t.Int(0, 70);
    const int64_t size = i == 0 ? t.Int(3000, 9000) : t.Int(1, 2000);
    if (i > 0 && t.Int(0, 2) != 0) ++tensor;
    segs.push_back(ParamSegment{at, size, t.Int(0, 1) == 1, tensor});
    at += size;
  }
  *total = at + t.Int(0, 10);
  return segs;
}

void CheckOptimizer(CudaParityTest& t, bool lamb) {
  int64_t n = 0;
  const std::vector<ParamSegment> segs = RandomSegments(t, &n);
  Pair p = t.Random({n}, DType::kF32), g = t.Random({n}, DType::kF32, 0.1f), m = t.Random({n}, DType::kF32, 0.01f);
  Pair v = t.Make({n}, DType::kF32), compute = t.Make({n}, DType::kBF16), cpu_compute = t.Make({n}, DType::kF32);
  std::vector<float> v0 = t.Uniform(n, 1e-6f, 1e-3f);
  t.Set(v, v0);
  AdamWHyper h;
  h.lr = 1e-3f;
  h.weight_decay = 0.01f;
  h.step = t.Int(1, 1000);
  h.grad_scale = 0.5f;
  const std::string name = lamb ? "Lamb" : "AdamW";
  Pair norms = t.Make({2 * (segs.back().tensor + 1) + 2}, DType::kF32);
  for (int step = 0; step < 2; ++step, ++h.step) {
    if (lamb) {
      t.cpu_->LambMoments(p.cpu, g.cpu, m.cpu, v.cpu, segs, h, norms.cpu);
      t.gpu_->LambMoments(p.gpu, g.gpu, m.gpu, v.gpu, segs, h, norms.gpu);
      t.ExpectClose(norms, 1e-6, name + " norms");
      t.cpu_->LambUpdate(p.cpu, m.cpu, v.cpu, cpu_compute.cpu, segs, h, norms.cpu);
      t.gpu_->LambUpdate(p.gpu, m.gpu, v.gpu, compute.gpu, segs, h, norms.gpu);
    } else {
      t.cpu_->AdamWStep(p.cpu, g.cpu, m.cpu, v.cpu, cpu_compute.cpu, segs, h);
      t.gpu_->AdamWStep(p.gpu, g.gpu, m.gpu, v.gpu, compute.gpu, segs, h);
    }
  }
  t.ExpectClose(p, 1e-6, name + " params");
  t.ExpectClose(m, 1e-6, name + " m");
  t.ExpectClose(v, 1e-6, name + " v");
  // The bf16 compute copy is the rounding of the GPU's own master weights (inside segments).
  const std::vector<float> master = t.Gpu(p), copy = t.Gpu(compute);
  for (const ParamSegment& s : segs)
    for (int64_t i = s.offset; i < s.offset + s.size; ++i)
      ASSERT_EQ(copy[i], CudaParityTest::RoundBf16(master[i])) << name << " compute copy at " << i;
}

TEST_F(CudaOpsTest, AdamWStepMatchesReference) { CheckOptimizer(*this, false); }
TEST_F(CudaOpsTest, LambStepMatchesReference) { CheckOptimizer(*this, true); }

}  // namespace
}  // namespace lamina::testing
