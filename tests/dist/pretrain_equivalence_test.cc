// Data parallelism changes nothing but speed: `mpirun -np N lamina pretrain` with micro-batch B
// ends with the parameters of one process with micro-batch N*B (dropout on), for N = 2 and 4.
#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <filesystem>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "core/buffer.h"
#include "core/safetensors.h"
#include "data/prepare.h"
#include "gtest/gtest.h"
#include "tests/testing/compare.h"
#include "checkpoint/checkpoint.h"
#include "tests/data/mlm_test_util.h"

namespace lamina {
namespace {

using datatest::TempDir;

std::string Lamina() {
  const char* b = std::getenv("LAMINA_BINARY");
  return b != nullptr ? b : "";
}

// Open MPI over TCP only (no shared memory), on the loopback interface: the transport a
// multi-node job's ranks on different hosts use, exercised on one host.
constexpr char kTcpTransport[] = "--mca btl tcp,self --mca btl_tcp_if_include lo";

// Runs `lamina pretrain` on `ranks` MPI ranks (a plain process for 0); returns the exit code.
int Pretrain(const TempDir& dir, int ranks, int micro, const std::string& out, const std::string& extra = "--resume none",
             const std::string& mpirun_flags = "") {
  const std::string args = absl::StrCat(" pretrain --config ", dir.path("run.json"), " --out ", out, " ", extra,
                                        " --set batch.micro_batch=", micro, " >> ", out, ".log 2>&1");
  const std::string launcher =
      ranks == 0 ? "" : absl::StrCat("mpirun --oversubscribe --allow-run-as-root ", mpirun_flags, " -np ", ranks, " ");
  return std::system((launcher + Lamina() + args).c_str());
}

std::vector<float> FinalParams(const std::string& run_dir) {
  auto ckpt = LatestCheckpoint(run_dir);
  EXPECT_TRUE(ckpt.ok()) << ckpt.status();
  if (!ckpt.ok()) return {};
  auto st = SafetensorsFile::Open(*ckpt + "/model.safetensors");
  EXPECT_TRUE(st.ok()) << st.status();
  std::vector<float> all;
  for (const SafetensorsTensorInfo& t : st->tensors()) {
    auto v = st->ReadFloats(t.name);
    EXPECT_TRUE(v.ok());
    all.insert(all.end(), v->begin(), v->end());
  }
  return all;
}

using testing::RelativeDifference;

// A tiny prepared corpus and run config; the runs differ only in --set overrides.
void WriteRun(const TempDir& dir, const std::string& optimizer) {
  datatest::WriteSyntheticDataset(dir, 3, 10);
  datatest::WritePlain(dir.path("run.json"), absl::StrCat(R"({
    "model": {"vocab_size": 85, "hidden": 32, "layers": 2, "heads": 2, "ffn": 64, "max_positions": 16, "norm": "pre"},
    "optimizer": {"name": ")", optimizer, R"("},
    "schedule": {"name": "linear", "lr": 1e-3},
    "data": {"train": ")", dir.path("ds"), R"(", "vocab": ")", dir.path("vocab.txt"), R"("},
    "batch": {"global_batch": 16, "micro_batch": 16},
    "eval": {"max_batches": 1},
    "checkpoint": {"every": 10},
    "run": {"steps": 20, "seed": 5, "device": "cpu", "log_every": 100}
  })"));
}

bool CanRun() { return !Lamina().empty() && std::system("mpirun --version > /dev/null 2>&1") == 0; }

TEST(DataParallelPretrain, RanksMatchOneProcessWithTheWholeBatch) {
  if (!CanRun()) GTEST_SKIP() << "needs LAMINA_BINARY (run through ctest) and mpirun";
  TempDir dir;
  WriteRun(dir, "adamw");
  ASSERT_EQ(Pretrain(dir, 0, 16, dir.path("one")), 0) << *ReadFile(dir.path("one.log"));
  const std::vector<float> one = FinalParams(dir.path("one"));
  ASSERT_FALSE(one.empty());
  for (int ranks : {2, 4}) {
    const std::string out = dir.path(absl::StrCat("np", ranks));
    ASSERT_EQ(Pretrain(dir, ranks, 16 / ranks, out), 0) << *ReadFile(out + ".log");
    const std::vector<float> many = FinalParams(out);
    ASSERT_EQ(many.size(), one.size());
    EXPECT_LT(RelativeDifference(many, one), 1e-5) << ranks << " ranks";
  }
  // The same over TCP, as ranks on separate nodes talk.
  const std::string tcp = dir.path("np2_tcp");
  ASSERT_EQ(Pretrain(dir, 2, 8, tcp, "--resume none", kTcpTransport), 0) << *ReadFile(tcp + ".log");
  const std::vector<float> over_tcp = FinalParams(tcp);
  ASSERT_EQ(over_tcp.size(), one.size());
  EXPECT_LT(RelativeDifference(over_tcp, one), 1e-5) << "2 ranks over TCP";
}

// ZeRO-1 (sharded optimizer state, gradients reduce-scattered during the backward pass) trains
// the same model as one process, with one, two and three ranks (three leave an uneven tail), for
// AdamW and LAMB; its checkpoints hold the whole state, so a run can resume on another number
// of ranks without sharding.
TEST(DataParallelPretrain, ZeroOneMatchesOneProcessAndResumesOnOtherRanks) {
  if (!CanRun()) GTEST_SKIP() << "needs LAMINA_BINARY (run through ctest) and mpirun";
  for (const std::string optimizer : {"adamw", "lamb"}) {
    TempDir dir;
    WriteRun(dir, optimizer);
    ASSERT_EQ(Pretrain(dir, 0, 12, dir.path("one"), "--resume none --set batch.global_batch=12"), 0)
        << *ReadFile(dir.path("one.log"));
    const std::vector<float> one = FinalParams(dir.path("one"));
    ASSERT_FALSE(one.empty());
    for (int ranks : {1, 3}) {
      const std::string out = dir.path(absl::StrCat("zero_np", ranks));
      ASSERT_EQ(Pretrain(dir, ranks, 12 / ranks, out, "--resume none --set run.zero_stage=1 --set batch.global_batch=12"), 0)
          << *ReadFile(out + ".log");
      EXPECT_TRUE(absl::StrContains(*ReadFile(out + ".log"), "(ZeRO-1)")) << *ReadFile(out + ".log");
      const std::vector<float> zero = FinalParams(out);
      ASSERT_EQ(zero.size(), one.size());
      EXPECT_LT(RelativeDifference(zero, one), 1e-5) << optimizer << ", " << ranks << " rank(s)";
    }
    // Sharded over 2 ranks; then its step-10 checkpoint resumed by one plain process.
    const std::string sharded = dir.path("zero_np2"), resumed = dir.path("resumed");
    ASSERT_EQ(Pretrain(dir, 2, 6, sharded, "--resume none --set run.zero_stage=1 --set batch.global_batch=12"), 0)
        << *ReadFile(sharded + ".log");
    EXPECT_LT(RelativeDifference(FinalParams(sharded), one), 1e-5) << optimizer << ", 2 ranks";
    ASSERT_EQ(Pretrain(dir, 0, 12, resumed,
                       absl::StrCat("--resume ", CheckpointDir(sharded, 10), " --set batch.global_batch=12")),
              0)
        << *ReadFile(resumed + ".log");
    EXPECT_LT(RelativeDifference(FinalParams(resumed), one), 1e-5) << optimizer << " resumed";
  }
}

// On a GPU (skipped without one): NCCL with one rank and ZeRO-1 with one rank train exactly like
// no communicator; two ranks sharing the one GPU through the staged MPI path, with and without
// ZeRO-1, match one rank with twice the micro-batch up to bf16 rounding (the GEMM shapes differ).
TEST(DataParallelPretrain, OnTheGpuNcclZeroAndTwoRanksSharingTheGpu) {
  if (!CanRun()) GTEST_SKIP() << "needs LAMINA_BINARY (run through ctest) and mpirun";
  if (!CudaAvailable()) GTEST_SKIP() << "no CUDA device";
  TempDir dir;
  WriteRun(dir, "lamb");
  const std::string common = "--set run.device=\"cuda\" --set batch.global_batch=12";
  ASSERT_EQ(Pretrain(dir, 0, 12, dir.path("one"), "--resume none --comm mpi " + common), 0)
      << *ReadFile(dir.path("one.log"));
  const std::vector<float> one = FinalParams(dir.path("one"));
  ASSERT_FALSE(one.empty());
  struct Case {
    std::string name;
    int ranks;
    std::string flags;
    double bound;
  };
  for (const Case& c : {Case{"nccl_np1", 0, "--comm nccl", 1e-6},
                        Case{"zero_nccl_np1", 0, "--comm nccl --set run.zero_stage=1", 1e-5},
                        Case{"staged_np2", 2, "--comm mpi", 1e-2},
                        Case{"zero_staged_np2", 2, "--comm mpi --set run.zero_stage=1", 1e-2}}) {
    const std::string out = dir.path(c.name);
    ASSERT_EQ(Pretrain(dir, c.ranks, 12 / std::max(1, c.ranks), out, absl::StrCat("--resume none ", c.flags, " ", common)),
              0)
        << *ReadFile(out + ".log");
    const std::vector<float> got = FinalParams(out);
    ASSERT_EQ(got.size(), one.size()) << c.name;
    EXPECT_LT(RelativeDifference(got, one), c.bound) << c.name;
  }
}

}  // namespace
}  // namespace lamina
