#include "dist/grad_sync.h"

#include <cmath>

#include "absl/strings/str_cat.h"
#include "core/status.h"

namespace lamina {

absl::StatusOr<std::unique_ptr<GradientSync>> GradientSync::Create(Communicator* comm, Backend* backend,
                                                                   TensorView grads, GradSyncOptions options) {
  if (grads.dtype != DType::kF32) {
    return absl::InvalidArgumentError(absl::StrCat("gradients must be f32, not ", DTypeName(grads.dtype)));
  }
  if (grads.device != backend->device()) {
    return absl::InvalidArgumentError(absl::StrCat("gradients ", grads.ToString(), " are not on the backend's device"));
  }
  if (!(options.bucket_mb > 0) || !std::isfinite(options.bucket_mb)) {
    return absl::InvalidArgumentError(absl::StrCat("bucket size must be a positive number of MiB, not ",
                                                   options.bucket_mb));
  }
  std::unique_ptr<GradientSync> s(new GradientSync());
  s->comm_ = comm;
  s->backend_ = backend;
  s->grads_ = grads.Reshaped(Shape{grads.numel()});
  s->options_ = options;
  const int64_t n = grads.numel();
  const DType wire_dtype = options.bf16 ? DType::kBF16 : DType::kF32;
  if (options.bf16) {
    ASSIGN_OR_RETURN(s->wire_buf_, backend->Allocate(static_cast<size_t>(n) * DTypeSize(DType::kBF16)));
    s->wire_ = s->wire_buf_.View(DType::kBF16, Shape{n});
  } else {
    s->wire_ = s->grads_;
  }
  const int64_t bucket_elems =
      std::max<int64_t>(1, static_cast<int64_t>(options.bucket_mb * 1024 * 1024 / DTypeSize(wire_dtype)));
  if (options.shard) {
    if (n % kShardAlign != 0)
      return absl::InvalidArgumentError(absl::StrCat("a sharded gradient buffer needs a multiple of ", kShardAlign,
                                                     " elements, got ", n));
    s->layout_ = ShardLayout::Sharded(n, bucket_elems, comm->rank(), comm->world_size());
    const int64_t shard = s->layout_.shard_size();
    ASSIGN_OR_RETURN(s->shard_grads_buf_, backend->Allocate(static_cast<size_t>(shard) * sizeof(float)));
    s->shard_grads_ = s->shard_grads_buf_.View(DType::kF32, Shape{shard});
    if (options.bf16) {
      ASSIGN_OR_RETURN(s->shard_wire_buf_, backend->Allocate(static_cast<size_t>(shard) * DTypeSize(DType::kBF16)));
      s->shard_wire_ = s->shard_wire_buf_.View(DType::kBF16, Shape{shard});
    } else {
      s->shard_wire_ = s->shard_grads_;
    }
  } else {
    s->layout_ = ShardLayout::Replicated(n, bucket_elems);
  }
  s->next_ = s->layout_.buckets().size();
  return s;
}

TensorView GradientSync::WireRange(int64_t begin, int64_t end) const { return FlatRange(wire_, begin, end); }

absl::Status GradientSync::Launch(const GradBucket& b) {
  std::unique_ptr<Work> work;
  if (b.sharded()) {
    const TensorView recv = FlatRange(shard_wire_, b.shard_offset, b.shard_offset + b.piece);
    ASSIGN_OR_RETURN(work, comm_->StartReduceScatter(CommBuffer::Of(WireRange(b.begin, b.end)), CommBuffer::Of(recv),
                                                     ReduceOp::kAverage));
  } else {
    ASSIGN_OR_RETURN(work, comm_->StartAllReduce(CommBuffer::Of(WireRange(b.begin, b.end)), ReduceOp::kAverage));
  }
  pending_.push_back(std::move(work));
  return absl::OkStatus();
}

void GradientSync::OnGradientsReady(int64_t from) {
  const std::vector<GradBucket>& buckets = layout_.buckets();
  size_t first = next_;
  while (first > 0 && buckets[first - 1].begin >= from) --first;
  if (first < next_ && error_.ok()) {
    // [first, next_) are complete; they are launched last bucket first, as every rank does.
    if (options_.bf16) {
      for (size_t i = first; i < next_; ++i)
        backend_->Convert(FlatRange(grads_, buckets[i].begin, buckets[i].end), WireRange(buckets[i].begin, buckets[i].end));
    }
    if (grads_.device != Device::kCpu && !comm_->orders_after_device_work()) backend_->Synchronize();
    for (size_t i = next_; i > first && error_.ok(); --i) error_.Update(Launch(buckets[i - 1]));
  }
  next_ = std::min(next_, first);
  Test();
}

bool GradientSync::Test() {
  bool done = true;
  for (auto& work : pending_) done = work->Test() && done;
  return done;
}

absl::Status GradientSync::Wait() {
  Start();
  absl::Status status = error_;
  for (auto& work : pending_) status.Update(work->Wait());
  pending_.clear();
  error_ = absl::OkStatus();
  next_ = layout_.buckets().size();
  RETURN_IF_ERROR(status);
  if (!layout_.sharded()) {
    if (options_.bf16) backend_->Convert(wire_, grads_);
    return absl::OkStatus();
  }
  if (options_.bf16) backend_->Convert(shard_wire_, shard_grads_);
  if (layout_.buckets().empty()) return absl::OkStatus();
  // The tail was all-reduced in place; its owner takes it into the shard.
  const GradBucket& last = layout_.buckets().back();
  const ShardPiece& mine = layout_.pieces().back();
  if (!last.sharded() && mine.begin == last.begin)
    backend_->Convert(WireRange(last.begin, last.end), FlatRange(shard_grads_, mine.shard_offset, mine.shard_offset + last.size()));
  return absl::OkStatus();
}

absl::Status GradientSync::Run() {
  Start();
  return Wait();
}

}  // namespace lamina
