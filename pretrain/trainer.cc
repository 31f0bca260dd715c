#include "pretrain/trainer.h"

#include <unistd.h>

#include <atomic>
#include <cmath>
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <optional>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "core/file_util.h"
#include "core/status.h"
#include "core/timer.h"
#include "data/dataset.h"
#include "dist/consistency.h"
#include "dist/fault_injection.h"
#include "dist/grad_sync.h"
#include "dist/sharded_optimizer.h"
#include "model/flops.h"
#include "model/layer_stats.h"
#include "checkpoint/checkpoint.h"
#include "checkpoint/load_model.h"
#include "pretrain/config_changes.h"
#include "pretrain/evaluate.h"
#include "pretrain/metrics.h"
#include "pretrain/train_data.h"

namespace lamina {
namespace {

std::atomic<int> g_stop_signal{0};

// The first signal asks for a checkpoint at the end of the step (or of the evaluation batch); a
// second one exits at once, writing nothing (only async-signal-safe calls here).
extern "C" void OnStopSignal(int sig) {
  if (g_stop_signal.exchange(sig) != 0) {
    static const char kMessage[] = "pretrain: second stop signal: exiting now, without a checkpoint\n";
    (void)!write(STDERR_FILENO, kMessage, sizeof(kMessage) - 1);
    std::_Exit(128 + sig);
  }
}

}  // namespace

void InstallStopSignalHandlers() {
  std::signal(SIGTERM, OnStopSignal);
  std::signal(SIGINT, OnStopSignal);
}

struct Trainer::Impl {
  std::shared_ptr<const MlmDataset> dataset;
  std::unique_ptr<MlmTrainLoader> loader;
  std::unique_ptr<MlmValidationSet> val;
  std::unique_ptr<GradientSync> sync;
  std::optional<MetricsWriter> metrics;  // rank 0 only
  std::optional<FaultPlan> fault_plan;
  int64_t seq_len = 0;
  double flops_per_token = 0;
  double peak_tflops = 0;
  int consecutive_bad = 0;
  int64_t skipped_total = 0;
  std::string last_checkpoint;
  Timer run_timer;
  int64_t steps_this_run = 0;
};

Trainer::~Trainer() = default;

namespace {

// checkpoint.init_from: a fresh run starts from another run's weights (and, with init_optimizer
// "keep", its optimizer moments), at step 0 of its own schedule and a fresh data position: the
// loader is never restored, because the other run's position indexes a dataset that may have
// another seq_len (phase 1 at 128, phase 2 at 512).
absl::Status InitializeFrom(const RunConfig& config, int64_t seq_len, int rank, BertModel* model, Optimizer* opt) {
  auto resolved = ResolveCheckpoint(config.checkpoint.init_from);  // a checkpoint, or a run dir's newest
  if (!resolved.ok()) return Annotate(resolved.status(), "checkpoint.init_from");
  const std::string& from = *resolved;
  const bool keep_optimizer = config.checkpoint.init_optimizer == "keep";
  auto state = LoadCheckpoint(from, model, keep_optimizer ? opt : nullptr);
  if (!state.ok()) return Annotate(state.status(), absl::StrCat("rank ", rank, ": checkpoint.init_from ", from));
  if (rank == 0)
    std::fprintf(stderr,
                 "initialised from %s (step %lld of its run): weights%s; a fresh data position over %s (seq_len %lld); "
                 "the schedule from step 0\n",
                 from.c_str(), static_cast<long long>(state->step),
                 keep_optimizer ? " and optimizer moments" : " only (optimizer reset)", config.data.train.c_str(),
                 static_cast<long long>(seq_len));
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<std::unique_ptr<Trainer>> Trainer::Create(const RunConfig& config, const TrainerOptions& options,
                                                         Communicator* comm, std::unique_ptr<Backend> backend) {
  std::unique_ptr<Trainer> t(new Trainer());
  t->config_ = config;
  t->options_ = options;
  t->comm_ = comm;
  t->impl_ = std::make_unique<Impl>();
  Impl& im = *t->impl_;
  t->rank_ = comm ? comm->rank() : 0;
  t->world_ = comm ? comm->world_size() : 1;
  ASSIGN_OR_RETURN(t->accumulation_, config.batch.Accumulation(t->world_));
  if (options.run_dir.empty()) return absl::InvalidArgumentError("no run directory (--out) given");

  // Data.
  auto data = OpenTrainData(config);
  if (!data.ok()) return Annotate(data.status(), absl::StrCat("rank ", t->rank_));
  im.dataset = data->dataset;
  im.seq_len = data->seq_len;
  const MaskingVocab& vocab = data->vocab;
  LoaderConfig lc;
  lc.seed = config.run.seed;
  lc.global_batch = config.batch.global_batch;
  lc.micro_batch = config.batch.micro_batch;
  lc.rank = t->rank_;
  lc.world = t->world_;
  lc.accumulation = t->accumulation_;
  lc.masking = config.data.masking;
  lc.prefetch = config.data.prefetch;
  ASSIGN_OR_RETURN(im.loader, MlmTrainLoader::Create(im.dataset, vocab, lc));
  ASSIGN_OR_RETURN(MlmValidationSet val, MlmValidationSet::Create(im.dataset, vocab, config.data.masking));
  im.val = std::make_unique<MlmValidationSet>(std::move(val));
  // Every run evaluates at its end (and every eval.every steps): refuse now rather than after training.
  if (im.val->num_sequences() == 0)
    return absl::FailedPreconditionError(absl::StrCat(
        config.data.train, ": the dataset has no validation sequences, and a run evaluates at least at its end; "
                           "prepare it with --val_docs N (N > 0)"));

  // Model and optimizer.
  if (backend != nullptr) {
    t->backend_ = std::move(backend);
  } else {
    ASSIGN_OR_RETURN(t->backend_, MakeBackend(config.run.device, config.run.backend_options()));
  }
  ASSIGN_OR_RETURN(t->model_, BertModel::Create(config.model, HeadOptions{}, t->backend_.get()));
  t->model_->Initialize(config.run.seed);
  im.flops_per_token = TrainFlopsPerToken(config.model, im.seq_len, config.data.masking.mask_prob);
  im.peak_tflops = config.run.peak_tflops > 0 ? config.run.peak_tflops : KnownPeakTflops(t->backend_->name());

  if (comm != nullptr) {
    RETURN_IF_ERROR(CheckSameEverywhere(*comm, config.ToJson(), im.dataset->manifest().ToJson()));
    RETURN_IF_ERROR(BroadcastParameters(*comm, t->model_->params()));
    t->model_->RefreshComputeParams();
    GradSyncOptions so;
    so.bucket_mb = config.run.grad_bucket_mb;
    so.bf16 = config.run.grad_bf16;
    so.shard = config.run.zero_stage == 1;
    ASSIGN_OR_RETURN(im.sync, GradientSync::Create(comm, t->backend_.get(), t->model_->grads(), so));
  } else if (config.run.zero_stage != 0) {
    return absl::InvalidArgumentError("run.zero_stage 1 needs a communicator (run under mpirun/srun)");
  }
  // After the broadcast: a sharded optimizer takes its master shard from the parameters.
  if (config.run.zero_stage == 1) {
    ASSIGN_OR_RETURN(t->optimizer_, ShardedOptimizer::Create(config.optimizer, t->model_.get(), comm, im.sync.get()));
  } else {
    ASSIGN_OR_RETURN(t->optimizer_, Optimizer::Create(config.optimizer, t->model_.get()));
  }

  ASSIGN_OR_RETURN(im.fault_plan, FaultPlanFromEnv());

  // Resume.
  std::string ckpt;
  if (options.resume == "auto") {
    auto latest = LatestCheckpoint(options.run_dir);
    if (latest.ok()) ckpt = *latest;
    else if (!absl::IsNotFound(latest.status())) return latest.status();
  } else if (options.resume != "none") {
    ckpt = options.resume;
  }
  if (!ckpt.empty()) {
    auto state = LoadCheckpoint(ckpt, t->model_.get(), t->optimizer_.get());
    if (!state.ok()) return Annotate(state.status(), absl::StrCat("rank ", t->rank_, ": resuming from ", ckpt));
    const std::vector<ConfigChange> changes = DiffResolvedConfigs(state->run_config, config.ToJson());
    if (t->rank_ == 0)
      for (const ConfigChange& c : changes)
        std::fprintf(stderr, "resume: %s: checkpoint %s, now %s%s\n", c.key.c_str(), c.before.c_str(), c.after.c_str(),
                     c.trajectory ? " (changes the trajectory)" : "");
    RETURN_IF_ERROR(CheckResumeConfigChanges(changes, options.allow_config_change, ckpt));
    ASSIGN_OR_RETURN(LoaderPosition pos, LoaderPosition::FromJson(state->data_position.dump()));
    RETURN_IF_ERROR(im.loader->Restore(pos));
    t->step_ = state->step;
    im.last_checkpoint = ckpt;
    if (t->rank_ == 0) std::fprintf(stderr, "resumed from %s at step %lld\n", ckpt.c_str(), static_cast<long long>(t->step_));
  } else if (!config.checkpoint.init_from.empty()) {
    RETURN_IF_ERROR(InitializeFrom(config, im.seq_len, t->rank_, t->model_.get(), t->optimizer_.get()));
  }

  if (t->rank_ == 0) {
    std::error_code ec;
    std::filesystem::create_directories(options.run_dir, ec);
    if (ec) return absl::PermissionDeniedError(absl::StrCat("cannot create ", options.run_dir, ": ", ec.message()));
    RETURN_IF_ERROR(WriteFileAtomic(options.run_dir + "/config.json", config.ToJson().dump(2) + "\n"));
    std::optional<int64_t> resume_step;
    if (!ckpt.empty()) resume_step = t->step_;
    ASSIGN_OR_RETURN(MetricsWriter metrics, MetricsWriter::Open(options.run_dir + "/metrics.jsonl", resume_step));
    im.metrics.emplace(std::move(metrics));
    std::fprintf(stderr,
                 "pretrain: %s, %lld params, %lld layers x %lld hidden, norm %s; %d rank(s) x micro-batch %lld x %d "
                 "accumulation = global batch of %lld sequences of %lld tokens; %lld train sequences; optimizer "
                 "state %.1f MiB per rank%s\n",
                 t->backend_->name().c_str(), static_cast<long long>(TotalParams(t->model_->layout())),
                 static_cast<long long>(config.model.layers), static_cast<long long>(config.model.hidden),
                 NormName(config.model.norm).c_str(), t->world_, static_cast<long long>(config.batch.micro_batch),
                 t->accumulation_, static_cast<long long>(config.batch.global_batch),
                 static_cast<long long>(im.seq_len), static_cast<long long>(im.dataset->train().num_sequences()),
                 t->optimizer_->state_bytes() / 1048576.0, config.run.zero_stage == 1 ? " (ZeRO-1)" : "");
    if (im.sync) std::fprintf(stderr, "gradient sync over %s: %s, %.1f MiB per step%s\n", comm->name().c_str(),
                              im.sync->layout().ToString().c_str(),
                              im.sync->bytes_per_step() / 1048576.0,
                              config.run.grad_overlap ? ", overlapped with the backward pass" : "");
  }
  return t;
}

bool Trainer::StopRequested() {
  int32_t stop = g_stop_signal.load() != 0 ? 1 : 0;
  if (comm_ != nullptr && world_ > 1) {
    // Every rank must stop at the same step: one signalled rank stops them all.
    absl::Status s = comm_->AllReduce(CommBuffer{&stop, 1, DType::kI32, Device::kCpu}, ReduceOp::kSum);
    if (!s.ok()) comm_->Fail(s);
  }
  return stop != 0;
}

absl::Status Trainer::TrainStep() {
  Impl& im = *impl_;
  Timer timer;
  // The LAMINA_FAULT_INJECT test hook of the distributed tests (dist/fault_injection.h).
  if (im.fault_plan.has_value() && comm_ != nullptr) RETURN_IF_ERROR(InjectFault(*im.fault_plan, *comm_, step_));
  const StepBatch sb = im.loader->Next();
  model_->ZeroGrads();
  // Averaging over ranks divides by world_, so each rank scales by world_ / N(global).
  const float grad_scale = sb.global_masked > 0 ? static_cast<float>(world_) / sb.global_masked : 0.0f;
  double loss_sum = 0;
  ForwardOptions fo;
  fo.training = true;
  fo.seed = config_.run.seed;
  fo.step = step_;
  fo.compute_grad = true;
  fo.grad_scale = grad_scale;
  // The layer diagnostics of this step (rank 0 writes them): the last micro-batch's hidden
  // states, the averaged gradient and the update the optimizer makes from it.
  const bool log_layers = rank_ == 0 && config_.run.log_layer_norms > 0 && step_ % config_.run.log_layer_norms == 0;
  nlohmann::json layers_record;
  for (size_t i = 0; i < sb.micro_batches.size(); ++i) {
    ASSIGN_OR_RETURN(LossStats s, model_->ForwardMlm(sb.micro_batches[i], fo));
    const bool last_micro = i + 1 == sb.micro_batches.size();
    if (log_layers && last_micro) layers_record["hidden_norm"] = model_->LayerOutputNorms();
    // The last micro-batch's backward launches each gradient bucket as soon as it is final.
    const bool overlap = im.sync && config_.run.grad_overlap && last_micro;
    if (overlap) {
      model_->Backward([&im](int64_t from) { im.sync->OnGradientsReady(from); });
    } else {
      model_->Backward();
    }
    loss_sum += s.loss_sum;
  }
  if (im.sync) {
    RETURN_IF_ERROR(im.sync->Wait());
    float l = static_cast<float>(loss_sum);
    RETURN_IF_ERROR(comm_->AllReduce(CommBuffer{&l, 1, DType::kF32, Device::kCpu}, ReduceOp::kSum));
    loss_sum = l;
  }
  const double loss = sb.global_masked > 0 ? loss_sum / sb.global_masked : 0.0;
  const double lr = config_.schedule.LearningRate(step_);
  std::vector<float> params_before;
  if (log_layers) {
    layers_record["grad_norm"] = ComputeLayerGroupNorms(model_->layout(), model_->GradsToHost()).ToJson();
    params_before = model_->ParamsToHost();
  }
  StepResult r;
  // Every rank sees the same loss, so all skip together (a sharded step is collective).
  if (std::isfinite(loss)) {
    ASSIGN_OR_RETURN(r, optimizer_->Step(static_cast<float>(lr)));
  }
  if (log_layers)
    layers_record["update_norm"] =
        ComputeLayerUpdateNorms(model_->layout(), params_before, model_->ParamsToHost()).ToJson();
  backend_->Synchronize();
  const double seconds = timer.Seconds();
  ++step_;
  ++im.steps_this_run;
  if (!r.applied) {
    ++im.consecutive_bad;
    ++im.skipped_total;
  } else {
    im.consecutive_bad = 0;
  }
  if (rank_ == 0) {
    const double tokens_per_s = config_.batch.global_batch * im.seq_len / seconds;
    RETURN_IF_ERROR(im.metrics->Write({{"kind", "train"},
                                       {"step", step_},
                                       {"loss", loss},
                                       {"lr", lr},
                                       {"grad_norm", r.grad_norm},
                                       {"tokens_per_s", tokens_per_s},
                                       {"seconds", seconds},
                                       {"skipped", !r.applied}}));
    if (log_layers) {
      layers_record["kind"] = "layers";
      layers_record["step"] = step_;
      RETURN_IF_ERROR(im.metrics->Write(layers_record));
    }
    if (step_ % config_.run.log_every == 0 || step_ == config_.run.steps || !r.applied) {
      ProgressInfo p;
      p.step = step_;
      p.total_steps = config_.run.steps;
      p.loss = loss;
      p.lr = lr;
      p.grad_norm = r.grad_norm;
      p.tokens_per_s = tokens_per_s;
      p.flops_per_s = im.flops_per_token * tokens_per_s;
      p.peak_flops = im.peak_tflops * 1e12 * world_;
      p.seconds_per_step = im.run_timer.Seconds() / im.steps_this_run;
      std::fprintf(stderr, "%s%s\n", FormatProgress(p).c_str(),
                   r.applied ? "" : "  [update skipped: non-finite loss or gradient]");
    }
  }
  if (im.consecutive_bad >= config_.run.max_bad_steps) {
    return absl::InternalError(absl::StrCat(
        im.consecutive_bad, " consecutive steps with a non-finite loss or gradient (the last at step ", step_,
        "); stopping. ",
        im.last_checkpoint.empty() ? "No checkpoint was written." : "The last good checkpoint is " + im.last_checkpoint));
  }
  return absl::OkStatus();
}

absl::Status Trainer::EvaluateAndLog() {
  Impl& im = *impl_;
  Timer timer;
  absl::StatusOr<EvalResult> evaluated = EvaluateMlm(*model_, *im.val, config_.eval.batch_size,
                                                     config_.eval.max_batches, comm_, [this] { return StopRequested(); });
  if (absl::IsCancelled(evaluated.status())) {
    // A stop signal: no eval record (a partial one would be a wrong number); Run checkpoints.
    if (rank_ == 0) std::fprintf(stderr, "eval step %lld: %s (stop requested)\n", static_cast<long long>(step_),
                                 std::string(evaluated.status().message()).c_str());
    return absl::OkStatus();
  }
  ASSIGN_OR_RETURN(EvalResult e, std::move(evaluated));
  if (rank_ == 0) {
    RETURN_IF_ERROR(im.metrics->Write({{"kind", "eval"},
                                       {"step", step_},
                                       {"mlm_loss", e.loss},
                                       {"mlm_accuracy", e.accuracy},
                                       {"perplexity", e.perplexity()},
                                       {"tokens", e.tokens}}));
    std::fprintf(stderr, "eval step %lld: val loss %.4f, perplexity %.2f, masked-token accuracy %.4f (%lld tokens, %.1f s)\n",
                 static_cast<long long>(step_), e.loss, e.perplexity(), e.accuracy, static_cast<long long>(e.tokens),
                 timer.Seconds());
  }
  return absl::OkStatus();
}

absl::Status Trainer::SaveCheckpointNow() {
  Impl& im = *impl_;
  RETURN_IF_ERROR(optimizer_->GatherState());  // collective when the state is sharded
  if (rank_ == 0) {
    CheckpointState state;
    state.step = step_;
    state.seed = config_.run.seed;
    state.run_config = config_.ToJson();
    state.data_position = nlohmann::json::parse(im.loader->position().ToJson());
    ASSIGN_OR_RETURN(im.last_checkpoint, SaveCheckpoint(options_.run_dir, *model_, *optimizer_, state, config_.checkpoint.keep));
    std::fprintf(stderr, "checkpoint: %s\n", im.last_checkpoint.c_str());
  }
  // The other ranks wait, so that none resumes or exits before the checkpoint exists.
  if (comm_ != nullptr && world_ > 1) RETURN_IF_ERROR(comm_->Barrier());
  return absl::OkStatus();
}

absl::Status Trainer::Run() {
  const int64_t total = config_.run.steps;
  if (step_ >= total) {
    if (rank_ == 0) std::fprintf(stderr, "pretrain: already at step %lld of %lld\n", static_cast<long long>(step_), static_cast<long long>(total));
    return absl::OkStatus();
  }
  impl_->run_timer.Reset();
  while (step_ < total) {
    RETURN_IF_ERROR(TrainStep());
    const bool last = step_ == total;
    if (config_.eval.every > 0 && step_ % config_.eval.every == 0 && !last) RETURN_IF_ERROR(EvaluateAndLog());
    if (config_.checkpoint.every > 0 && step_ % config_.checkpoint.every == 0 && !last) RETURN_IF_ERROR(SaveCheckpointNow());
    if (!last && StopRequested()) {
      if (rank_ == 0) std::fprintf(stderr, "pretrain: stop requested (signal %d) at step %lld; writing a checkpoint\n",
                                   g_stop_signal.load(), static_cast<long long>(step_));
      return SaveCheckpointNow();
    }
  }
  RETURN_IF_ERROR(EvaluateAndLog());
  RETURN_IF_ERROR(SaveCheckpointNow());
  if (rank_ == 0 && impl_->skipped_total > 0)
    std::fprintf(stderr, "pretrain: %lld update(s) skipped for non-finite values\n", static_cast<long long>(impl_->skipped_total));
  return absl::OkStatus();
}

}  // namespace lamina
