// `lamina pretrain`: MLM pretraining, on one process or as ranks of `mpirun` / `srun`.
#include <cstdio>
#include <filesystem>

#include "absl/flags/flag.h"
#include "absl/strings/str_cat.h"
#include "dist/bootstrap.h"
#include "model/backend.h"
#include "model/flops.h"
#include "model/param_layout.h"
#include "launch/common_flags.h"
#include "launch/subcommand.h"
#include "pretrain/run_config.h"
#include "pretrain/trainer.h"

ABSL_FLAG(std::string, resume, "auto",
          "pretrain: auto = continue from the newest complete checkpoint in --out if there is one; none = start fresh "
          "(existing checkpoints stay until pruned); or a checkpoint directory to start from");

ABSL_FLAG(std::vector<std::string>, allow_config_change, {},
          "pretrain: config keys (or sections, e.g. schedule) that a resume may change although they change the "
          "trajectory (schedule, data, batch, optimizer, seed); without it such a change is refused, naming each key");
ABSL_FLAG(bool, dry_run, false,
          "pretrain: resolve and check the config (sections, keys, values, batch arithmetic), print it resolved "
          "and what the run would do, and exit without touching data or devices");

namespace lamina {
namespace {

// --dry_run: everything that can be checked without the data, the devices or the ranks. The
// resolved config goes to stdout, the description to stderr.
int DryRun(const std::string& config_path, const RunConfig& config) {
  const BatchConfig& b = config.batch;
  const absl::StatusOr<int> micro_batches = b.Accumulation(1);
  if (!micro_batches.ok()) return ReportError("pretrain", absl::StrCat(config_path, ": ", micro_batches.status().message()));
  const int64_t params = TotalParams(ParamLayout::Build(config.model, HeadOptions{}));
  const auto exists = [](const std::string& path) {
    return std::filesystem::exists(path) ? "exists here" : "not found here: give it with --set";
  };
  std::fprintf(stderr,
               "%s resolves: %lld params (%lld layers x %lld hidden, norm %s, init %s); optimizer %s, lr %g, %lld "
               "warmup steps, %lld steps; global batch %lld = %lld micro-batches of %lld, over R ranks with %lld / R "
               "accumulation steps each (R must divide %lld)\n"
               "  data.train %s (%s)\n",
               config_path.c_str(), static_cast<long long>(params), static_cast<long long>(config.model.layers),
               static_cast<long long>(config.model.hidden), NormName(config.model.norm).c_str(),
               InitName(config.model.init).c_str(), config.optimizer.ToJson()["name"].get<std::string>().c_str(),
               config.schedule.lr, static_cast<long long>(config.schedule.warmup_steps),
               static_cast<long long>(config.run.steps), static_cast<long long>(b.global_batch),
               static_cast<long long>(*micro_batches), static_cast<long long>(b.micro_batch),
               static_cast<long long>(*micro_batches), static_cast<long long>(*micro_batches), config.data.train.c_str(),
               exists(config.data.train));
  if (!config.checkpoint.init_from.empty())
    std::fprintf(stderr, "  checkpoint.init_from %s (%s), optimizer state: %s\n", config.checkpoint.init_from.c_str(),
                 exists(config.checkpoint.init_from), config.checkpoint.init_optimizer.c_str());
  std::printf("%s\n", config.ToJson().dump(2).c_str());
  return 0;
}

int RunPretrain(const std::vector<std::string>& args) {
  if (!args.empty()) return ReportError("pretrain", absl::StrCat("unexpected argument '", args[0], "'"));
  const std::string config_path = absl::GetFlag(FLAGS_config);
  auto config = RunConfigFromFlags();
  if (!config.ok()) return ReportError("pretrain", std::string(config.status().message()));
  if (absl::GetFlag(FLAGS_dry_run)) return DryRun(config_path, *config);
  TrainerOptions options;
  options.run_dir = absl::GetFlag(FLAGS_out);
  if (options.run_dir.empty()) options.run_dir = "runs/" + std::filesystem::path(config_path).stem().string();
  options.resume = absl::GetFlag(FLAGS_resume);
  options.allow_config_change = absl::GetFlag(FLAGS_allow_config_change);

  auto dist = Bootstrap({.comm = absl::GetFlag(FLAGS_comm)});
  if (!dist.ok()) return ReportError("pretrain", std::string(dist.status().message()));
  const bool multi = dist->world.world_size > 1;
  if (multi && dist->world.rank == 0) std::fprintf(stderr, "pretrain: %s\n", dist->world.ToString().c_str());
  // The backend comes first (on the GPU Bootstrap bound), because NCCL orders its collectives
  // after the backend's stream.
  absl::StatusOr<std::unique_ptr<Backend>> backend = MakeBackend(config->run.device, config->run.backend_options());
  absl::Status status = backend.ok() ? SelectCommunicator(&*dist, (*backend)->native_stream()) : backend.status();
  Communicator* comm = dist->comm.get();
  if (status.ok()) {
    InstallStopSignalHandlers();
    // One process trains without a communicator unless the sharded optimizer or an explicit
    // --comm nccl asks for one.
    const bool use_comm = multi || config->run.zero_stage != 0 || dist->comm_choice == "nccl";
    auto trainer = Trainer::Create(*config, options, use_comm ? comm : nullptr, *std::move(backend));
    status = trainer.ok() ? (*trainer)->Run() : trainer.status();
  }
  if (!status.ok()) {
    if (multi) comm->Fail(status);  // takes every rank down, naming this one
    return ReportError("pretrain", std::string(status.message()));
  }
  status = comm->Finish();
  if (!status.ok()) return ReportError("pretrain", std::string(status.message()));
  return 0;
}

}  // namespace
}  // namespace lamina

LAMINA_SUBCOMMAND("pretrain", "masked-LM pretraining (one process, or ranks under mpirun/srun)", lamina::RunPretrain,
                  lamina::FlagNames({{"config", "set", "out", "resume", "allow_config_change", "dry_run", "comm"}, lamina::BackendFlags()}));
