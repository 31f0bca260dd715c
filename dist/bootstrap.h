// Joining the job: MPI, this rank's place in the world and on its node, and its GPU.
//
// MPI is the source of truth for rank, world size and local rank (ranks sharing a node, found
// with MPI_Comm_split_type(MPI_COMM_TYPE_SHARED)). The launcher's environment (mpirun's
// OMPI_COMM_WORLD_*, Slurm's SLURM_*) is only read to report it and to catch a launch that went
// wrong, such as `srun` without `--mpi=pmix` starting N independent worlds of one.
#pragma once

#include <functional>
#include <memory>
#include <string>

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
};

struct Distributed {
  std::unique_ptr<Communicator> comm;
  WorldInfo world;
};

// Initialises MPI (a world of one when started without a launcher), creates the communicator,
// checks the launcher agrees, and binds the GPU.
absl::StatusOr<Distributed> Bootstrap(const BootstrapOptions& options = {});

// Compares what MPI reports with the launcher's environment (read through `getenv`); an error
// explains the likely launch mistake. Fills world->launcher.
absl::Status CheckLauncher(const std::function<const char*(const char*)>& getenv, WorldInfo* world);

}  // namespace lamina
