// Joining the job: MPI, this rank's place in the world and on its node, and its GPU.
//
// MPI is the source of truth for rank, world size and local rank (ranks sharing a node, found
// with MPI_Comm_split_type(MPI_COMM_TYPE_SHARED)). The launcher's environment (mpirun's
// OMPI_COMM_WORLD_*, Slurm's SLURM_*) is only read to report it and to catch a launch that went
// wrong, such as `srun` without `--mpi=pmix` starting N independent worlds of one.
//
// Joining takes two steps when the job may use NCCL, because the NCCL communicator orders its
// collectives after the caller's CUDA stream, and that stream belongs to a backend created on
// the GPU that Bootstrap() binds:
//   ASSIGN_OR_RETURN(Distributed dist, Bootstrap({.comm = "auto"}));   // MPI, GPU bound
//   ASSIGN_OR_RETURN(std::unique_ptr<Backend> backend, MakeBackend("cuda"));
//   if (absl::Status s = SelectCommunicator(&dist, backend->native_stream()); !s.ok()) dist.comm->Fail(s);
//   Communicator& comm = *dist.comm;                                   // NCCL or MPI from here on
#pragma once

#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "dist/communicator.h"

namespace lamina {

struct WorldInfo {
  int rank = 0;
  int world_size = 1;
  int local_rank = 0;
  int local_size = 1;
  std::string host;
  std::string launcher = "none";  // "mpirun", "srun" or "none" (started directly)
  int gpu = -1;                   // the CUDA device this rank uses, -1 without one
  int gpu_count = 0;              // CUDA devices visible to this rank

  // "rank 1 of 4 (local 1 of 2) on node7, launched by mpirun, GPU 1 of 2"
  std::string ToString() const;
};

struct BootstrapOptions {
  // Select CUDA device local_rank % device count (when this build has CUDA and a GPU is there).
  bool bind_gpu = true;
  // The communicator: "nccl", "mpi" or "auto" (see SelectCommunicator()). Bootstrap() always
  // joins with MPI, which NCCL is later set up over; here it only checks the choice, so that a
  // "nccl" that cannot work in this process (no CUDA build, no GPU) fails at start-up.
  std::string comm = "auto";
};

struct Distributed {
  std::unique_ptr<Communicator> comm;
  WorldInfo world;
  std::string comm_choice = "auto";  // BootstrapOptions::comm, for SelectCommunicator()
};

// Initialises MPI (a world of one when started without a launcher), creates the MPI
// communicator, checks the launcher agrees, and binds the GPU.
absl::StatusOr<Distributed> Bootstrap(const BootstrapOptions& options = {});

// The second step of joining: once the caller's compute stream exists, replaces dist->comm (the
// MpiCommunicator from Bootstrap()) by an NCCL communicator wrapping it, as dist->comm_choice says:
//   "mpi":  keeps MPI.
//   "nccl": NCCL, or an error.
//   "auto": NCCL when this build has CUDA and every rank has a compute stream and a GPU of its
//           own; otherwise MPI, and rank 0 prints one line saying so and why.
// `compute_stream` is Backend::native_stream() of the backend the rank computes with (null for
// the CPU backend). Collective: every rank calls it at the same point, and all end up with the
// same kind. On error dist->comm is still the MPI communicator, for Fail(). A Communicator*
// taken from dist->comm before the call is stale after it.
absl::Status SelectCommunicator(Distributed* dist, void* compute_stream);

// Whether every rank has a GPU of its own: gpu_ids[r] names rank r's device (its UUID, which is
// the same whatever CUDA_VISIBLE_DEVICES numbering a rank sees). An error names the first two
// ranks sharing one and suggests `--comm mpi`: NCCL refuses two ranks on one device, MPI can
// share it.
absl::Status CheckOneRankPerGpu(const std::vector<std::string>& gpu_ids);

// Compares what MPI reports with the launcher's environment (read through `getenv`); an error
// explains the likely launch mistake. Fills world->launcher.
absl::Status CheckLauncher(const std::function<const char*(const char*)>& getenv, WorldInfo* world);

}  // namespace lamina
