// `lamina bench train` and `lamina bench step`: the time of a training step on synthetic batches
// (random token ids, 15% of positions predicted), split by phase: forward (with the loss),
// backward, gradient synchronisation over the ranks, optimizer. `bench train` reports throughput
// (seq/s, tokens/s, MFU) and memory of one process; `bench step`, run under mpirun, adds one row
// per rank so a slow rank or a slow all-reduce shows, and runs the gradient sync both after the
// backward pass and overlapped with it, to show how much of the communication the overlap hides.
#include <algorithm>
#include <cstdio>
#include <random>

#include "absl/flags/flag.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "core/status.h"
#include "core/timer.h"
#include "dist/bootstrap.h"
#include "dist/grad_sync.h"
#include "dist/sharded_optimizer.h"
#include "launch/common_flags.h"
#include "launch/subcommand.h"
#include "model/flops.h"
#include "model/op_profile.h"
#include "pretrain/run_config.h"

ABSL_FLAG(int64_t, micro_batch, 0, "bench train/step: sequences per forward/backward (0 = the config's batch.micro_batch)");
ABSL_FLAG(int, steps, 20, "bench train/step: timed steps (after --warmup untimed ones)");
ABSL_FLAG(double, peak_tflops, 0, "bench train/step: peak TFLOP/s for MFU (0 = known GPUs: H100/H200 989, A100 312)");
ABSL_FLAG(bool, profile_ops, false,
          "bench train/step: then run --steps more steps timing every backend op in the device's order (CUDA events "
          "on the GPU) and print the ops by time, largest first");

namespace lamina {
namespace {

EncoderBatch SyntheticBatch(const BertConfig& c, int64_t batch, int64_t seq, std::mt19937& gen) {
  std::uniform_int_distribution<int32_t> token(5, static_cast<int32_t>(c.vocab_size) - 1);
  std::bernoulli_distribution predict(0.15);
  EncoderBatch b;
  b.batch = batch;
  b.seq = seq;
  b.input_ids.resize(batch * seq);
  for (int32_t& id : b.input_ids) id = token(gen);
  b.token_types.assign(batch * seq, 0);
  b.attention_mask.assign(batch * seq, 1);
  for (int64_t i = 0; i < batch * seq; ++i) {
    if (i % seq != 0 && predict(gen)) {
      b.mlm_positions.push_back(static_cast<int32_t>(i));
      b.mlm_labels.push_back(b.input_ids[i]);
    }
  }
  return b;
}

struct PhaseTimes {
  double forward = 0, backward = 0, sync = 0, optimizer = 0;
  double total() const { return forward + backward + sync + optimizer; }
  void Add(const PhaseTimes& t) {
    forward += t.forward;
    backward += t.backward;
    sync += t.sync;
    optimizer += t.optimizer;
  }
};

int RunBench(const std::string& cmd, bool per_rank) {
  auto config = RunConfigFromFlags();
  if (!config.ok()) return ReportError(cmd, std::string(config.status().message()));
  const int64_t seq = absl::GetFlag(FLAGS_seq_len);
  const int64_t micro = absl::GetFlag(FLAGS_micro_batch) > 0 ? absl::GetFlag(FLAGS_micro_batch) : config->batch.micro_batch;
  const int steps = absl::GetFlag(FLAGS_steps), warmup = absl::GetFlag(FLAGS_warmup);
  if (seq <= 0 || seq > config->model.max_positions)
    return ReportError(cmd, absl::StrCat("--seq_len must be in [1, model.max_positions = ", config->model.max_positions, "]"));
  if (steps <= 0 || warmup < 0) return ReportError(cmd, "--steps must be positive and --warmup >= 0");

  auto dist = Bootstrap({.comm = absl::GetFlag(FLAGS_comm)});
  if (!dist.ok()) return ReportError(cmd, std::string(dist.status().message()));
  const int world = dist->world.world_size, rank = dist->world.rank;
  auto fail = [&](const absl::Status& s) {
    if (world > 1) dist->comm->Fail(s);
    return ReportError(cmd, std::string(s.message()));
  };
  const bool zero = config->run.zero_stage == 1;
  auto backend = MakeBackend(config->run.device, config->run.backend_options());
  if (!backend.ok()) return fail(backend.status());
  ProfilingBackend* profiler = nullptr;  // only forwards until its recording starts
  if (absl::GetFlag(FLAGS_profile_ops)) {
    auto wrapped = std::make_unique<ProfilingBackend>(*std::move(backend));
    profiler = wrapped.get();
    *backend = std::move(wrapped);
  }
  // NCCL (--comm) orders its collectives after this backend's stream.
  if (absl::Status s = SelectCommunicator(&*dist, (*backend)->native_stream()); !s.ok()) return fail(s);
  Communicator& comm = *dist->comm;
  auto model = BertModel::Create(config->model, HeadOptions{}, backend->get());
  if (!model.ok()) return fail(model.status());
  (*model)->Initialize(config->run.seed);
  std::unique_ptr<GradientSync> sync;
  if (world > 1 || zero) {
    GradSyncOptions so;
    so.bucket_mb = config->run.grad_bucket_mb;
    so.bf16 = config->run.grad_bf16;
    so.shard = zero;
    auto s = GradientSync::Create(&comm, backend->get(), (*model)->grads(), so);
    if (!s.ok()) return fail(s.status());
    sync = std::move(*s);
  }
  auto opt = zero ? ShardedOptimizer::Create(config->optimizer, model->get(), &comm, sync.get())
                  : Optimizer::Create(config->optimizer, model->get());
  if (!opt.ok()) return fail(opt.status());

  std::mt19937 gen(1234 + rank);
  const EncoderBatch batch = SyntheticBatch(config->model, micro, seq, gen);
  Backend& be = **backend;
  // Summed phase times of `steps` steps after `untimed` ones. Without overlap the backward pass ends
  // before the gradient sync starts, so "sync" is the whole communication time; with overlap
  // the buckets leave during the backward pass and "sync" is only what is left to wait for.
  auto run_steps = [&](bool overlap, int untimed) -> absl::StatusOr<PhaseTimes> {
    PhaseTimes sum;
    for (int i = 0; i < untimed + steps; ++i) {
      PhaseTimes t;
      Timer timer;
      (*model)->ZeroGrads();
      ForwardOptions fo{.training = true, .seed = 1, .step = i, .compute_grad = true};
      fo.grad_scale = 1.0f / std::max<size_t>(1, batch.mlm_positions.size());
      auto f = (*model)->ForwardMlm(batch, fo);
      if (!f.ok()) return f.status();
      be.Synchronize();
      t.forward = timer.Seconds();
      timer.Reset();
      if (overlap) {
        (*model)->Backward([&](int64_t from) { sync->OnGradientsReady(from); });
      } else {
        (*model)->Backward();
      }
      be.Synchronize();
      t.backward = timer.Seconds();
      timer.Reset();
      if (sync) {
        RETURN_IF_ERROR(sync->Wait());
        be.Synchronize();
      }
      t.sync = timer.Seconds();
      timer.Reset();
      RETURN_IF_ERROR((*opt)->Step(1e-4f).status());
      be.Synchronize();
      t.optimizer = timer.Seconds();
      if (i >= untimed) sum.Add(t);
    }
    return sum;
  };
  std::vector<std::pair<std::string, PhaseTimes>> modes;
  for (bool overlap : sync ? std::vector<bool>{false, true} : std::vector<bool>{false}) {
    absl::StatusOr<PhaseTimes> t = run_steps(overlap, warmup);
    if (!t.ok()) return fail(t.status());
    modes.emplace_back(!sync ? "" : overlap ? "overlapped" : "serial", *t);
  }
  // The ops of `steps` more steps, after the timed ones (warm already), in the last mode's sync.
  std::vector<OpTime> op_times;
  double profiled_ms = 0;
  if (profiler != nullptr) {
    profiler->StartRecording();
    absl::StatusOr<PhaseTimes> t = run_steps(/*overlap=*/modes.size() == 2, /*untimed=*/0);
    if (!t.ok()) return fail(t.status());
    op_times = profiler->StopRecording();
    profiled_ms = t->total() * 1e3 / steps;
  }
  const double ms = 1e3 / steps;
  std::vector<float> mine;
  for (const auto& [name, t] : modes)
    for (double v : {t.forward, t.backward, t.sync, t.optimizer}) mine.push_back(static_cast<float>(v * ms));
  const int64_t per_rank_values = static_cast<int64_t>(mine.size());
  std::vector<float> all(per_rank_values * world);
  absl::Status s = comm.AllGather(CommBuffer{mine.data(), per_rank_values, DType::kF32, Device::kCpu},
                                  CommBuffer{all.data(), per_rank_values * world, DType::kF32, Device::kCpu});
  if (!s.ok()) return fail(s);
  if (rank == 0) {
    const PhaseTimes& best = modes.back().second;  // the overlapped mode when there is one
    const double step_s = best.total() / steps;
    const double seqs = static_cast<double>(micro) * world / step_s;
    const double flops = TrainFlopsPerToken(config->model, seq, 0.15);
    const double peak = absl::GetFlag(FLAGS_peak_tflops) > 0 ? absl::GetFlag(FLAGS_peak_tflops) : KnownPeakTflops(be.name());
    std::printf("%s: %s, %d rank(s), micro-batch %lld x seq %lld, %d steps after %d warm-up\n", cmd.c_str(),
                be.name().c_str(), world, static_cast<long long>(micro), static_cast<long long>(seq), steps, warmup);
    if (sync) {
      std::printf("gradient sync over %s: %s, %.1f MiB per rank per step%s\n", comm.name().c_str(),
                  sync->layout().ToString().c_str(), sync->bytes_per_step() / 1048576.0,
                  config->run.grad_bf16 ? " (bf16)" : "");
    }
    std::printf("%-6s %-11s %10s %10s %10s %10s %10s\n", "rank", "sync", "fwd ms", "bwd ms", "sync ms", "optim ms",
                "step ms");
    for (int r = 0; r < (per_rank ? world : 1); ++r) {
      for (size_t m = 0; m < modes.size(); ++m) {
        const float* p = &all[per_rank_values * r + 4 * m];
        std::printf("%-6d %-11s %10.2f %10.2f %10.2f %10.2f %10.2f\n", r, modes[m].first.c_str(), p[0], p[1], p[2],
                    p[3], p[0] + p[1] + p[2] + p[3]);
      }
    }
    if (modes.size() == 2) {
      // Means over the ranks. Serial: the sync wait is the whole communication. Overlapped: the
      // wait is what the backward pass did not hide; the backward pass itself may grow a little
      // (launching buckets, letting MPI progress).
      double phase[2][2] = {};  // [mode][backward, sync]
      for (int r = 0; r < world; ++r)
        for (int m = 0; m < 2; ++m)
          for (int k = 0; k < 2; ++k) phase[m][k] += all[per_rank_values * r + 4 * m + 1 + k] / world;
      const double hidden = phase[0][1] - phase[1][1];
      std::printf("gradient communication (mean over ranks): %.2f ms waited after the backward pass; overlapped, "
                  "%.2f ms (%.0f%% hidden), with the backward pass %+.2f ms\n",
                  phase[0][1], phase[1][1], phase[0][1] > 0 ? 100.0 * hidden / phase[0][1] : 0.0,
                  phase[1][0] - phase[0][0]);
    }
    std::printf("throughput: %.1f seq/s, %.0f tokens/s (all ranks)", seqs, seqs * seq);
    if (peak > 0) std::printf(", MFU %.1f%% of %.0f TFLOP/s per device", 100.0 * flops * seqs * seq / (peak * 1e12 * world), peak);
    // Model: f32 parameters and gradients, plus the bf16 compute copy on the GPU.
    const double params = static_cast<double>((*model)->layout().total());
    const double model_bytes = params * (8 + (be.act_dtype() == DType::kF32 ? 0 : DTypeSize(be.act_dtype())));
    const double replicated_state = params * 8;  // two f32 moments
    std::printf("\nmemory per rank: model %.1f MiB, optimizer state %.1f MiB%s, activations %.1f MiB\n",
                model_bytes / 1048576.0, (*opt)->state_bytes() / 1048576.0,
                zero ? absl::StrFormat(" (ZeRO-1 over %d ranks; %.1f MiB replicated)", world,
                                       replicated_state / 1048576.0).c_str()
                     : "",
                (*model)->activation_bytes() / double(1 << 20));
    // All of this process's buffers on the backend's device at their most (parameters, optimizer
    // state, activations, scratch, the cuBLASLt workspace): what torch.cuda.max_memory_allocated
    // reports for the PyTorch baseline. The driver's figure adds the CUDA context and what NCCL and
    // cuBLASLt allocate internally.
    std::printf("peak memory allocated per rank: %.1f MiB", Allocated(be.device()).peak / 1048576.0);
    if (be.device() == Device::kCuda) {
      absl::StatusOr<size_t> in_use = DeviceBytesInUse();
      if (in_use.ok()) std::printf(" (in use on the GPU, as the driver counts it: %.1f MiB)", *in_use / 1048576.0);
    }
    std::printf("\n");
    if (profiler != nullptr) {
      std::printf("\nops of %d more steps as the device ran them (each between its own marks; the device's time "
                  "between ops has a row; step %.2f ms while profiled):\n%s",
                  steps, profiled_ms, FormatOpTimes(op_times, steps).c_str());
    }
  }
  s = comm.Finish();
  if (!s.ok()) return ReportError(cmd, std::string(s.message()));
  return 0;
}

int RunBenchTrain(const std::vector<std::string>& args) {
  if (!args.empty()) return ReportError("bench train", absl::StrCat("unexpected argument '", args[0], "'"));
  return RunBench("bench train", /*per_rank=*/false);
}
int RunBenchStep(const std::vector<std::string>& args) {
  if (!args.empty()) return ReportError("bench step", absl::StrCat("unexpected argument '", args[0], "'"));
  return RunBench("bench step", /*per_rank=*/true);
}

}  // namespace
}  // namespace lamina

LAMINA_SUBCOMMAND("bench train", "training-step throughput (seq/s, tokens/s, MFU, memory) on synthetic batches",
                  lamina::RunBenchTrain,
                  lamina::FlagNames({{"config", "set", "seq_len", "micro_batch", "steps", "warmup", "peak_tflops",
                                      "profile_ops", "comm"},
                                     lamina::BackendFlags()}));
LAMINA_SUBCOMMAND("bench step", "training-step time per phase (forward, backward, gradient sync, optimizer) per rank",
                  lamina::RunBenchStep,
                  lamina::FlagNames({{"config", "set", "seq_len", "micro_batch", "steps", "warmup", "peak_tflops",
                                      "profile_ops", "comm"},
                                     lamina::BackendFlags()}));
