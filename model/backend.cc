#include "model/backend.h"

#include <algorithm>
#include <chrono>
#include <vector>

#include "absl/strings/str_cat.h"
#include "core/status.h"

namespace lamina {

absl::StatusOr<AttentionKernel> ParseAttentionKernel(const std::string& name, const std::string& key) {
  if (name == "auto") return AttentionKernel::kAuto;
  if (name == "gemm") return AttentionKernel::kGemm;
  if (name == "flash") return AttentionKernel::kFlash;
  return absl::InvalidArgumentError(
      absl::StrCat(key, ": expected \"auto\", \"gemm\" or \"flash\", got \"", name, "\""));
}

const char* AttentionKernelName(AttentionKernel k) {
  switch (k) {
    case AttentionKernel::kAuto:
      return "auto";
    case AttentionKernel::kGemm:
      return "gemm";
    case AttentionKernel::kFlash:
      return "flash";
  }
  return "?";
}

absl::StatusOr<std::unique_ptr<Backend>> MakeBackend(const std::string& device, const BackendOptions& options) {
  if (device != "cpu" && device != "cuda" && device != "auto")
    return absl::InvalidArgumentError(absl::StrCat("device: expected cpu, cuda or auto, got \"", device, "\""));
  if (device == "cuda" || (device == "auto" && CudaAvailable())) return MakeCudaBackend(options);
  if (options.attention != AttentionKernel::kAuto)
    return absl::InvalidArgumentError(absl::StrCat("attention \"", AttentionKernelName(options.attention),
                                                   "\" is a CUDA kernel; the CPU backend has only the reference "
                                                   "(attention auto)"));
  if (options.gemm_autotune)
    return absl::InvalidArgumentError("gemm_autotune tunes cuBLASLt's products: the CPU backend has none");
  return MakeCpuBackend();
}

namespace {

// The host's clock: the marks of a backend whose ops have finished when they return.
class HostClock final : public StreamClock {
 public:
  int Mark() override {
    marks_.push_back(std::chrono::steady_clock::now());
    return static_cast<int>(marks_.size()) - 1;
  }
  double ElapsedMs(int from, int to) override {
    return std::chrono::duration<double, std::milli>(marks_.at(to) - marks_.at(from)).count();
  }
  void Clear() override { marks_.clear(); }

 private:
  std::vector<std::chrono::steady_clock::time_point> marks_;
};

}  // namespace

std::unique_ptr<StreamClock> Backend::NewStreamClock() { return std::make_unique<HostClock>(); }

int64_t LambTensorCount(std::span<const ParamSegment> segments, const TensorView& norms) {
  int64_t tensors = 0;
  for (const ParamSegment& s : segments) {
    LAMINA_CHECK(s.tensor >= 0, "segment [", s.offset, ", +", s.size, ") has tensor index ", s.tensor);
    tensors = std::max<int64_t>(tensors, s.tensor + 1);
  }
  LAMINA_CHECK(norms.dtype == DType::kF32 && norms.numel() >= 2 * tensors, "LAMB norms must be f32 with at least ",
               2 * tensors, " elements (2 per tensor), got ", norms.ToString());
  return tensors;
}

int64_t RowPitch(const TensorView& t, int64_t rows, int64_t cols, bool padding_allowed, const char* what) {
  const int64_t pitch = t.cols();
  LAMINA_CHECK(t.rows() == rows && (pitch == cols || (padding_allowed && pitch > cols)), what, " must be [", rows,
               ", ", cols, "]", padding_allowed ? " or padded rows [rows, >= cols]" : "", ", got ", t.ToString());
  return pitch;
}

}  // namespace lamina
