// `lamina pretrain`: MLM pretraining, on one process or as ranks of `mpirun` / `srun`.
#include <cstdio>
#include <filesystem>

#include "absl/flags/flag.h"
#include "absl/strings/str_cat.h"
#include "dist/bootstrap.h"
#include "model/backend.h"
#include "launch/common_flags.h"
#include "launch/subcommand.h"
#include "pretrain/run_config.h"
#include "pretrain/trainer.h"

ABSL_FLAG(std::string, resume, "auto",
          "pretrain: auto = continue from the newest complete checkpoint in --out if there is one; none = start fresh "
          "(existing checkpoints stay until pruned); or a checkpoint directory to start from");

namespace lamina {
namespace {

int RunPretrain(const std::vector<std::string>& args) {
  if (!args.empty()) return ReportError("pretrain", absl::StrCat("unexpected argument '", args[0], "'"));
  const std::string config_path = absl::GetFlag(FLAGS_config);
  if (config_path.empty()) return ReportError("pretrain", "--config FILE is required (see launch/configs/)");
  std::vector<std::string> overrides = absl::GetFlag(FLAGS_set);
  AddBackendOverrides(&overrides);
  auto config = LoadRunConfig(config_path, overrides);
  if (!config.ok()) return ReportError("pretrain", std::string(config.status().message()));
  TrainerOptions options;
  options.run_dir = absl::GetFlag(FLAGS_out);
  if (options.run_dir.empty()) options.run_dir = "runs/" + std::filesystem::path(config_path).stem().string();
  options.resume = absl::GetFlag(FLAGS_resume);

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

LAMINA_SUBCOMMAND("pretrain", "masked-LM pretraining (one process, or ranks under mpirun/srun)", lamina::RunPretrain);
