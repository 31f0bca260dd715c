// Shared fixture of the CUDA parity tests: every op runs on the CUDA backend and on the f32 CPU
// reference from the same inputs, and the results are compared by ||gpu - cpu|| / ||cpu||.
// Inputs that the GPU holds in bf16 are rounded through bf16 before they reach the CPU, so that
// the comparison measures the arithmetic, not the input rounding. Outputs are poisoned with NaN
// first, so an element the op does not write fails the comparison.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "core/bf16.h"
#include "core/buffer.h"
#include "gtest/gtest.h"
#include "model/backend.h"

namespace lamina::testing {

// One tensor allocated on both backends. `gpu_dtype` is its dtype on the GPU; on the CPU it is
// f32 (or i32 for i32 tensors).
struct Pair {
  Buffer cpu_buf, gpu_buf;
  TensorView cpu, gpu;
};

class CudaParityTest : public ::testing::Test {
 public:  // the helpers below are also used by free functions shared between tests
  void SetUp() override {
    // The GEMM attention path here; the tests of the fused kernels make their own backend.
    absl::StatusOr<std::unique_ptr<Backend>> gpu = MakeCudaBackend({.attention = AttentionKernel::kGemm});
    if (!gpu.ok()) GTEST_SKIP() << "CUDA backend unavailable: " << gpu.status().ToString();
    gpu_ = *std::move(gpu);
    cpu_ = MakeCpuBackend();
    seed_ = std::random_device{}();
    rng_.seed(seed_);
    RecordProperty("seed", std::to_string(seed_));
  }

  static float RoundBf16(float x) { return Bf16BitsToFloat(FloatToBf16Bits(x)); }

  // Both tensors, filled with NaN (or -7 for i32).
  Pair Make(Shape shape, DType gpu_dtype) {
    Pair p;
    const DType cpu_dtype = gpu_dtype == DType::kI32 ? DType::kI32 : DType::kF32;
    p.cpu_buf = *Buffer::Allocate(Device::kCpu, shape.numel() * DTypeSize(cpu_dtype) + 1);
    p.gpu_buf = *Buffer::Allocate(Device::kCuda, shape.numel() * DTypeSize(gpu_dtype) + 1);
    p.cpu = p.cpu_buf.View(cpu_dtype, shape);
    p.gpu = p.gpu_buf.View(gpu_dtype, shape);
    if (gpu_dtype == DType::kI32) {
      SetInts(p, std::vector<int32_t>(shape.numel(), -7));
    } else {
      Set(p, std::vector<float>(shape.numel(), std::numeric_limits<float>::quiet_NaN()));
    }
    return p;
  }

  // Copies values to both (rounded through bf16 first when the GPU holds bf16).
  void Set(Pair& p, std::vector<float> values) {
    if (p.gpu.dtype == DType::kBF16)
      for (float& v : values) v = RoundBf16(v);
    cpu_->CopyFromHost(values.data(), p.cpu);
    gpu_->CopyFromHost(values.data(), p.gpu);
  }
  void SetInts(Pair& p, const std::vector<int32_t>& values) {
    cpu_->CopyFromHostI32(values.data(), p.cpu);
    gpu_->CopyFromHostI32(values.data(), p.gpu);
  }

  std::vector<float> Uniform(int64_t n, float lo, float hi) {
    std::uniform_real_distribution<float> d(lo, hi);
    std::vector<float> v(n);
    for (float& x : v) x = d(rng_);
    return v;
  }
  // Non-zero values of either sign with magnitudes in [0.1, 1] * scale.
  std::vector<float> NonZero(int64_t n, float scale = 1.0f) {
    std::vector<float> v = Uniform(n, 0.1f, 1.0f);
    std::bernoulli_distribution sign(0.5);
    for (float& x : v) x *= sign(rng_) ? scale : -scale;
    return v;
  }
  Pair Random(Shape shape, DType gpu_dtype, float scale = 1.0f) {
    Pair p = Make(shape, gpu_dtype);
    Set(p, NonZero(shape.numel(), scale));
    return p;
  }
  Pair Ints(Shape shape, const std::vector<int32_t>& values) {
    Pair p = Make(shape, DType::kI32);
    SetInts(p, values);
    return p;
  }
  int64_t Int(int64_t lo, int64_t hi) { return std::uniform_int_distribution<int64_t>(lo, hi)(rng_); }

  std::vector<float> Cpu(const Pair& p) {
    std::vector<float> v(p.cpu.numel());
    cpu_->CopyToHost(p.cpu, v.data());
    return v;
  }
  std::vector<float> Gpu(const Pair& p) {
    std::vector<float> v(p.gpu.numel());
    gpu_->CopyToHost(p.gpu, v.data());
    return v;
  }
  std::vector<int32_t> GpuInts(const Pair& p) {
    std::vector<int32_t> v(p.gpu.numel());
    // CopyBytes does not wait for the backend's (non-blocking) stream; under compute-sanitizer
    // the copy overtook ArgMax and read unwritten rows.
    gpu_->Synchronize();
    LAMINA_CHECK(CopyBytes(v.data(), Device::kCpu, p.gpu.data, Device::kCuda, p.gpu.bytes()).ok());
    return v;
  }
  std::vector<int32_t> CpuInts(const Pair& p) {
    const int32_t* d = p.cpu.as<int32_t>();
    return std::vector<int32_t>(d, d + p.cpu.numel());
  }

  // ||gpu - cpu|| / ||cpu||; infinity when either holds a non-finite value.
  static double RelErr(const std::vector<float>& gpu, const std::vector<float>& cpu) {
    EXPECT_EQ(gpu.size(), cpu.size());
    double diff = 0, ref = 0;
    for (size_t i = 0; i < gpu.size() && i < cpu.size(); ++i) {
      if (!std::isfinite(gpu[i]) || !std::isfinite(cpu[i])) return std::numeric_limits<double>::infinity();
      diff += (static_cast<double>(gpu[i]) - cpu[i]) * (static_cast<double>(gpu[i]) - cpu[i]);
      ref += static_cast<double>(cpu[i]) * cpu[i];
    }
    if (ref == 0) return diff == 0 ? 0 : std::numeric_limits<double>::infinity();
    return std::sqrt(diff / ref);
  }

  // Compares the tensor on both backends; logs the error so that bounds can be reviewed.
  void ExpectClose(const Pair& p, double bound, const std::string& what) {
    const double err = RelErr(Gpu(p), Cpu(p));
    std::printf("  %-40s rel err %.3e (bound %.0e)\n", what.c_str(), err, bound);
    EXPECT_LE(err, bound) << what << " (seed " << seed_ << ")";
  }

  std::unique_ptr<Backend> gpu_, cpu_;
  uint32_t seed_ = 0;
  std::mt19937 rng_;
};

// One part (0 = q, 1 = k, 2 = v) of an attention gradient dqkv [rows, 3 * hidden] against the
// reference: ||got - want|| / ||want|| of the part, bounded by `bound`.
// For the `fused` kernels the denominator is the larger of ||want|| and the reference dv's norm.
// Their Delta = dO . O comes from the bf16 output, which leaves noise of bf16 size relative to the
// call's gradient (about 2^-9 times the scores' size). A sequence with a single unmasked key has
// dq = dk = 0 exactly (the softmax of one score is constant), so that noise is all there is: its
// own norm would make it infinite, or large next to a small dk of the other sequences. Where the
// whole part is exactly 0 (every sequence has one key) the bound is 2e-2 instead. The GEMM path
// reproduces those zeros and keeps the part's own norm.
struct AttentionPartError {
  double value, bound;
  const char* metric;
};
inline AttentionPartError AttentionGradPartError(const std::vector<float>& got, const std::vector<float>& want,
                                                 int64_t rows, int64_t hidden, int part, double bound, bool fused) {
  auto cut = [&](const std::vector<float>& x, int which) {
    std::vector<float> p;
    for (int64_t r = 0; r < rows; ++r)
      for (int64_t j = 0; j < hidden; ++j) p.push_back(x[r * 3 * hidden + which * hidden + j]);
    return p;
  };
  const std::vector<float> g = cut(got, part), w = cut(want, part);
  if (!fused) return {CudaParityTest::RelErr(g, w), bound, "rel err"};
  double diff = 0, own = 0, dv = 0;
  for (size_t i = 0; i < g.size(); ++i) {
    if (!std::isfinite(g[i])) return {std::numeric_limits<double>::infinity(), bound, "non-finite value"};
    diff += (static_cast<double>(g[i]) - w[i]) * (static_cast<double>(g[i]) - w[i]);
    own += static_cast<double>(w[i]) * w[i];
  }
  for (float v : cut(want, 2)) dv += static_cast<double>(v) * v;
  const double scale = std::max(own, dv);
  return {scale > 0 ? std::sqrt(diff / scale) : (diff == 0 ? 0 : std::numeric_limits<double>::infinity()),
          own == 0 ? 2e-2 : bound, "err / max(||part||, ||dv||)"};
}

}  // namespace lamina::testing
