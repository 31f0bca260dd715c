#include "dist/sharded_optimizer.h"

#include <algorithm>
#include <cmath>
#include <cstring>

#include "absl/strings/str_cat.h"
#include "core/status.h"

namespace lamina {

absl::StatusOr<std::unique_ptr<Optimizer>> ShardedOptimizer::Create(const OptimizerConfig& config, BertModel* model,
                                                                    Communicator* comm, GradientSync* sync) {
  RETURN_IF_ERROR(config.Validate());
  if (!sync->layout().sharded())
    return absl::InvalidArgumentError("the sharded optimizer needs a gradient sync in sharded (ZeRO-1) mode");
  if (sync->layout().total() != model->layout().total())
    return absl::InvalidArgumentError(absl::StrCat("gradient sync over ", sync->layout().total(), " elements, model has ",
                                                   model->layout().total()));
  std::unique_ptr<ShardedOptimizer> o(new ShardedOptimizer(config, model, comm, sync));
  RETURN_IF_ERROR(o->Init());
  return std::unique_ptr<Optimizer>(std::move(o));
}

absl::Status ShardedOptimizer::Init() {
  Backend& be = model_->backend();
  const ShardLayout& layout = sync_->layout();
  const int64_t shard = layout.shard_size();
  const std::vector<ParamInfo>& params = model_->layout().params();
  // The tensors' parts that fall in this rank's pieces, in shard coordinates.
  for (const ShardPiece& piece : layout.pieces()) {
    for (size_t t = 0; t < params.size(); ++t) {
      const int64_t begin = std::max(params[t].offset, piece.begin);
      const int64_t end = std::min(params[t].offset + params[t].numel(), piece.end);
      if (begin >= end) continue;
      segments_.push_back(
          ParamSegment{piece.shard_offset + (begin - piece.begin), end - begin, params[t].decay, static_cast<int32_t>(t)});
    }
  }
  auto alloc = [&](DType dtype, int64_t n, Buffer* buf, TensorView* view) -> absl::Status {
    ASSIGN_OR_RETURN(*buf, be.Allocate(static_cast<size_t>(n) * DTypeSize(dtype)));
    *view = buf->View(dtype, Shape{n});
    return absl::OkStatus();
  };
  RETURN_IF_ERROR(alloc(DType::kF32, shard, &master_buf_, &master_));
  RETURN_IF_ERROR(alloc(DType::kF32, shard, &m_buf_, &m_));
  RETURN_IF_ERROR(alloc(DType::kF32, shard, &v_buf_, &v_));
  if (model_->compute_params().dtype != DType::kF32) {
    RETURN_IF_ERROR(alloc(model_->compute_params().dtype, shard, &out_buf_, &out_));
  }
  if (config_.kind == OptimizerKind::kLamb) {
    RETURN_IF_ERROR(alloc(DType::kF32, 2 * static_cast<int64_t>(params.size()), &norms_buf_, &norms_));
  }
  RETURN_IF_ERROR(be.PrepareOptimizer(segments_, shard));
  be.Zero(m_);
  be.Zero(v_);
  for (const ShardPiece& piece : layout.pieces())
    be.Convert(FlatRange(model_->params(), piece.begin, piece.end),
               FlatRange(master_, piece.shard_offset, piece.shard_offset + (piece.end - piece.begin)));
  if (!out_.empty()) be.Convert(master_, out_);  // the alignment gaps gather as the model's zeros
  return absl::OkStatus();
}

void ShardedOptimizer::FinishDeviceWork() {
  if (model_->backend().device() != Device::kCpu && !comm_->orders_after_device_work()) model_->backend().Synchronize();
}

absl::StatusOr<StepResult> ShardedOptimizer::Step(float lr) {
  Backend& be = model_->backend();
  const TensorView grads = sync_->shard_grads();
  StepResult r;
  double sum_squares = be.SumSquares(grads);
  if (comm_->world_size() > 1) {
    float partial = static_cast<float>(sum_squares);
    RETURN_IF_ERROR(comm_->AllReduce(CommBuffer{&partial, 1, DType::kF32, Device::kCpu}, ReduceOp::kSum));
    sum_squares = partial;
  }
  r.grad_norm = std::sqrt(sum_squares);
  if (!std::isfinite(r.grad_norm)) return r;  // the same on every rank: all skip
  const AdamWHyper h = NextHyper(lr, r.grad_norm);
  if (config_.kind == OptimizerKind::kAdamW) {
    be.AdamWStep(master_, grads, m_, v_, out_, segments_, h);
  } else {
    be.LambMoments(master_, grads, m_, v_, segments_, h, norms_);
    if (comm_->world_size() > 1) {
      FinishDeviceWork();
      RETURN_IF_ERROR(comm_->AllReduce(norms_, ReduceOp::kSum));
    }
    be.LambUpdate(master_, m_, v_, out_, segments_, h, norms_);
  }
  RETURN_IF_ERROR(AllGather(out_.empty() ? master_ : out_, model_->compute_params()));
  ++step_;
  gathered_ = OptimizerState{};  // stale now; its host copy of the moments is freed
  r.applied = true;
  return r;
}

absl::Status ShardedOptimizer::AllGather(TensorView shard, TensorView full) {
  Backend& be = model_->backend();
  const ShardLayout& layout = sync_->layout();
  full = full.Reshaped(Shape{full.numel()});
  const GradBucket& last = layout.buckets().back();
  const ShardPiece& mine = layout.pieces().back();
  const bool own_tail = !last.sharded() && mine.begin == last.begin;
  if (own_tail) {
    const TensorView src = FlatRange(shard, mine.shard_offset, shard.numel()), dst = FlatRange(full, last.begin, last.end);
    if (dst.device == Device::kCpu && be.device() != Device::kCpu) {
      std::memcpy(dst.data, src.data, dst.bytes());  // the moments, gathered on the host
    } else {
      be.Convert(src, dst);
    }
  }
  if (full.device != Device::kCpu) FinishDeviceWork();
  std::vector<std::unique_ptr<Work>> pending;
  absl::Status status;
  for (const GradBucket& b : layout.buckets()) {
    absl::StatusOr<std::unique_ptr<Work>> work =
        b.sharded() ? comm_->StartAllGather(CommBuffer::Of(FlatRange(shard, b.shard_offset, b.shard_offset + b.piece)),
                                            CommBuffer::Of(FlatRange(full, b.begin, b.end)))
                    : comm_->StartBroadcast(CommBuffer::Of(FlatRange(full, b.begin, b.end)), layout.world_size() - 1);
    if (!work.ok()) {
      status = work.status();
      break;
    }
    pending.push_back(*std::move(work));
  }
  for (auto& w : pending) status.Update(w->Wait());
  return status;
}

absl::Status ShardedOptimizer::GatherState() {
  Backend& be = model_->backend();
  RETURN_IF_ERROR(AllGather(master_, model_->params()));
  const int64_t n = model_->layout().total();
  OptimizerState state;
  state.step = step_;
  for (auto [moments, full] : {std::pair{m_, &state.m}, std::pair{v_, &state.v}}) {
    std::vector<float> shard(moments.numel());
    be.CopyToHost(moments, shard.data());
    full->assign(n, 0.0f);
    RETURN_IF_ERROR(AllGather(CpuF32(shard.data(), {moments.numel()}), CpuF32(full->data(), {n})));
  }
  gathered_ = std::move(state);
  return absl::OkStatus();
}

absl::StatusOr<OptimizerState> ShardedOptimizer::StateToHost() const {
  if (gathered_.m.empty())
    return absl::FailedPreconditionError("the sharded optimizer's state must be gathered (GatherState) after each step");
  return gathered_;
}

absl::Status ShardedOptimizer::LoadState(const OptimizerState& state) {
  Backend& be = model_->backend();
  const int64_t n = model_->layout().total();
  if (static_cast<int64_t>(state.m.size()) != n || static_cast<int64_t>(state.v.size()) != n)
    return absl::InvalidArgumentError(absl::StrCat("optimizer state has ", state.m.size(), "/", state.v.size(),
                                                   " moments for ", n, " parameters"));
  for (const ShardPiece& piece : sync_->layout().pieces()) {
    const int64_t len = piece.end - piece.begin;
    be.CopyFromHost(state.m.data() + piece.begin, FlatRange(m_, piece.shard_offset, piece.shard_offset + len));
    be.CopyFromHost(state.v.data() + piece.begin, FlatRange(v_, piece.shard_offset, piece.shard_offset + len));
    be.Convert(FlatRange(model_->params(), piece.begin, piece.end), FlatRange(master_, piece.shard_offset, piece.shard_offset + len));
  }
  if (!out_.empty()) be.Convert(master_, out_);
  step_ = state.step;
  gathered_ = OptimizerState{};  // stale now; its host copy of the moments is freed
  return absl::OkStatus();
}

size_t ShardedOptimizer::state_bytes() const {
  return master_buf_.bytes() + m_buf_.bytes() + v_buf_.bytes() + out_buf_.bytes() + norms_buf_.bytes() +
         sync_->allocated_bytes();
}

}  // namespace lamina
