#include "dist/bootstrap.h"

#include <unistd.h>

#include <cstdio>
#include <cstdlib>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "core/status.h"
#include "dist/mpi_communicator.h"
#include "dist/nccl_communicator.h"

#if LAMINA_WITH_CUDA
#include <cuda_runtime.h>
#endif

namespace lamina {
namespace {

// The integer value of an environment variable, or -1 when unset or not a number.
int EnvInt(const std::function<const char*(const char*)>& getenv, const char* name) {
  const char* value = getenv(name);
  int n = -1;
  if (value == nullptr || !absl::SimpleAtoi(value, &n)) return -1;
  return n;
}

absl::Status BindGpu(WorldInfo* world) {
#if LAMINA_WITH_CUDA
  int count = 0;
  if (cudaGetDeviceCount(&count) != cudaSuccess || count == 0) {
    cudaGetLastError();  // no GPU here is not an error; the CPU backend runs instead
    return absl::OkStatus();
  }
  world->gpu_count = count;
  world->gpu = world->local_rank % count;
  cudaError_t err = cudaSetDevice(world->gpu);
  if (err != cudaSuccess) {
    return absl::InternalError(absl::StrCat("rank ", world->rank, ": cudaSetDevice(", world->gpu,
                                            ") failed: ", cudaGetErrorString(err)));
  }
#else
  (void)world;
#endif
  return absl::OkStatus();
}

}  // namespace

std::string WorldInfo::ToString() const {
  std::string s = absl::StrCat("rank ", rank, " of ", world_size, " (local ", local_rank, " of ", local_size, ") on ",
                               host, ", launched by ", launcher);
  if (gpu >= 0) {
    absl::StrAppend(&s, ", GPU ", gpu, " of ", gpu_count);
    if (local_size > gpu_count) absl::StrAppend(&s, " (shared: ", local_size, " ranks on this node)");
  } else {
    absl::StrAppend(&s, ", no GPU");
  }
  return s;
}

absl::Status CheckLauncher(const std::function<const char*(const char*)>& getenv, WorldInfo* world) {
  const int ompi_size = EnvInt(getenv, "OMPI_COMM_WORLD_SIZE");
  const int slurm_tasks = EnvInt(getenv, "SLURM_STEP_NUM_TASKS");
  if (ompi_size >= 0) {
    world->launcher = "mpirun";
    const int ompi_rank = EnvInt(getenv, "OMPI_COMM_WORLD_RANK");
    if (ompi_size != world->world_size || ompi_rank != world->rank) {
      return absl::FailedPreconditionError(
          absl::StrCat("mpirun says rank ", ompi_rank, " of ", ompi_size, " but MPI says rank ", world->rank, " of ",
                       world->world_size, "; is lamina linked against the MPI library of this mpirun?"));
    }
  } else if (slurm_tasks >= 0) {
    world->launcher = "srun";
    if (slurm_tasks != world->world_size) {
      return absl::FailedPreconditionError(absl::StrCat(
          "srun started ", slurm_tasks, " tasks but MPI sees a world of ", world->world_size,
          "; launch with `srun --mpi=pmix` (see `srun --mpi=list`) so the tasks join one MPI job"));
    }
    const int procid = EnvInt(getenv, "SLURM_PROCID");
    if (procid >= 0 && procid != world->rank) {
      return absl::FailedPreconditionError(
          absl::StrCat("SLURM_PROCID is ", procid, " but MPI says rank ", world->rank, "; launch with srun --mpi=pmix"));
    }
  } else {
    world->launcher = "none";
  }
  return absl::OkStatus();
}

absl::StatusOr<Distributed> Bootstrap(const BootstrapOptions& options) {
  if (options.comm != "auto" && options.comm != "nccl" && options.comm != "mpi") {
    return absl::InvalidArgumentError(absl::StrCat("--comm ", options.comm, ": expected auto, nccl or mpi"));
  }
  if (options.comm == "nccl") {
    if (absl::Status s = NcclAvailable(); !s.ok()) {
      return absl::Status(s.code(), absl::StrCat("--comm nccl: ", s.message(), "; use --comm mpi or auto"));
    }
  }
  ASSIGN_OR_RETURN(std::unique_ptr<MpiCommunicator> comm, MpiCommunicator::Create());
  Distributed d;
  d.world.rank = comm->rank();
  d.world.world_size = comm->world_size();
  d.world.local_rank = comm->local_rank();
  d.world.local_size = comm->local_size();
  char host[256] = {};
  gethostname(host, sizeof(host) - 1);
  d.world.host = host;
  RETURN_IF_ERROR(CheckLauncher([](const char* name) { return std::getenv(name); }, &d.world));
  if (options.bind_gpu) RETURN_IF_ERROR(BindGpu(&d.world));
  d.comm = std::move(comm);
  d.comm_choice = options.comm;
  return d;
}

absl::Status SelectCommunicator(Distributed* dist, void* compute_stream) {
  if (dist->comm_choice == "mpi") return absl::OkStatus();
  if (dynamic_cast<MpiCommunicator*>(dist->comm.get()) == nullptr) {
    return absl::FailedPreconditionError(
        absl::StrCat("SelectCommunicator: expected Bootstrap()'s MPI communicator, found ", dist->comm->name()));
  }
  std::unique_ptr<MpiCommunicator> mpi(static_cast<MpiCommunicator*>(dist->comm.release()));
  absl::StatusOr<std::unique_ptr<Communicator>> nccl = MakeNcclCommunicator(&mpi, compute_stream);
  if (nccl.ok()) {
    dist->comm = std::move(nccl).value();
    return absl::OkStatus();
  }
  dist->comm = std::move(mpi);
  // These two mean "NCCL cannot work here", and every rank got the same one.
  const bool cannot = absl::IsFailedPrecondition(nccl.status()) || absl::IsUnavailable(nccl.status());
  if (dist->comm_choice == "auto" && cannot) {
    if (dist->comm->rank() == 0) {
      std::fprintf(stderr, "communicator: mpi (--comm auto, not nccl: %s)\n", std::string(nccl.status().message()).c_str());
    }
    return absl::OkStatus();
  }
  return Annotate(nccl.status(), absl::StrCat("--comm ", dist->comm_choice));
}

absl::Status CheckOneRankPerGpu(const std::vector<std::string>& gpu_ids) {
  for (size_t a = 0; a < gpu_ids.size(); ++a) {
    for (size_t b = a + 1; b < gpu_ids.size(); ++b) {
      if (gpu_ids[a] != gpu_ids[b]) continue;
      return absl::FailedPreconditionError(absl::StrCat(
          "ranks ", a, " and ", b, " share one GPU (", gpu_ids[a],
          "), but NCCL needs a GPU per rank: start at most as many ranks per node as it has GPUs, or use --comm mpi "
          "(which can share a GPU)"));
    }
  }
  return absl::OkStatus();
}

}  // namespace lamina
