#include "dist/grad_sync.h"

#include <algorithm>
#include <cmath>

#include "absl/strings/str_cat.h"
#include "core/bf16.h"
#include "core/status.h"

namespace lamina {
namespace {

void ConvertOnHost(TensorView src, TensorView dst) {
  const int64_t n = src.numel();
  if (src.dtype == DType::kF32 && dst.dtype == DType::kBF16) {
    const float* s = src.as<float>();
    uint16_t* d = dst.as<uint16_t>();
    for (int64_t i = 0; i < n; ++i) d[i] = FloatToBf16Bits(s[i]);
  } else {
    LAMINA_CHECK(src.dtype == DType::kBF16 && dst.dtype == DType::kF32, "host conversion ", src.ToString(), " -> ",
                 dst.ToString());
    const uint16_t* s = src.as<uint16_t>();
    float* d = dst.as<float>();
    for (int64_t i = 0; i < n; ++i) d[i] = Bf16BitsToFloat(s[i]);
  }
}

}  // namespace

absl::StatusOr<std::unique_ptr<GradientSync>> GradientSync::Create(Communicator* comm, TensorView grads,
                                                                   GradSyncOptions options, ConvertFn convert) {
  if (grads.dtype != DType::kF32) {
    return absl::InvalidArgumentError(absl::StrCat("gradients must be f32, not ", DTypeName(grads.dtype)));
  }
  if (!(options.bucket_mb > 0) || !std::isfinite(options.bucket_mb)) {
    return absl::InvalidArgumentError(absl::StrCat("bucket size must be a positive number of MiB, not ",
                                                   options.bucket_mb));
  }
  std::unique_ptr<GradientSync> s(new GradientSync());
  s->comm_ = comm;
  s->grads_ = grads;
  s->options_ = options;
  const int64_t n = grads.numel();
  if (options.bf16) {
    if (convert == nullptr) {
      if (grads.device != Device::kCpu) {
        return absl::InvalidArgumentError("bf16 gradient sync of device gradients needs a conversion function");
      }
      convert = ConvertOnHost;
    }
    ASSIGN_OR_RETURN(s->wire_, Buffer::Allocate(grads.device, static_cast<size_t>(n) * DTypeSize(DType::kBF16)));
    s->wire_view_ = s->wire_.View(DType::kBF16, Shape{n});
  } else {
    s->wire_view_ = grads.Reshaped(Shape{n});
  }
  s->convert_ = std::move(convert);
  const size_t elem = DTypeSize(s->wire_view_.dtype);
  const int64_t per_bucket =
      std::max<int64_t>(1, static_cast<int64_t>(options.bucket_mb * 1024 * 1024 / static_cast<double>(elem)));
  for (int64_t begin = 0; begin < n; begin += per_bucket) s->buckets_.emplace_back(begin, std::min(n, begin + per_bucket));
  return s;
}

size_t GradientSync::bytes_per_step() const { return wire_view_.bytes(); }

absl::Status GradientSync::Start() {
  if (!pending_.empty()) return absl::FailedPreconditionError("gradient sync started twice without Wait()");
  if (options_.bf16) convert_(grads_.Reshaped(Shape{grads_.numel()}), wire_view_);
  const size_t elem = DTypeSize(wire_view_.dtype);
  for (const auto& [begin, end] : buckets_) {
    CommBuffer bucket{static_cast<char*>(wire_view_.data) + begin * elem, end - begin, wire_view_.dtype,
                      wire_view_.device};
    ASSIGN_OR_RETURN(std::unique_ptr<Work> work, comm_->StartAllReduce(bucket, ReduceOp::kAverage));
    pending_.push_back(std::move(work));
  }
  return absl::OkStatus();
}

bool GradientSync::Test() {
  bool done = true;
  for (auto& work : pending_) done = work->Test() && done;
  return done;
}

absl::Status GradientSync::Wait() {
  absl::Status status;
  for (auto& work : pending_) status.Update(work->Wait());
  pending_.clear();
  RETURN_IF_ERROR(status);
  if (options_.bf16) convert_(wire_view_, grads_.Reshaped(Shape{grads_.numel()}));
  return absl::OkStatus();
}

absl::Status GradientSync::Run() {
  RETURN_IF_ERROR(Start());
  return Wait();
}

}  // namespace lamina
