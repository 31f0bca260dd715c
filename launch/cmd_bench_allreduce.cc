// `lamina bench allreduce`: all-reduce time and bandwidth of the communicator `--comm` selects,
// per message size, printed like nccl-tests. Run it under mpirun/srun for several ranks, e.g.
//   mpirun -np 2 build/lamina bench allreduce --bytes 1K,1M,64M --dtype bf16
// With NCCL the buffers are on the device and the CUDA backend's stream is the compute stream the
// collectives are ordered after, as in training.
#include <algorithm>
#include <cstdio>
#include <string>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/strings/ascii.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_split.h"
#include "core/bf16.h"
#include "core/buffer.h"
#include "core/timer.h"
#include "dist/bootstrap.h"
#include "launch/common_flags.h"
#include "launch/subcommand.h"
#include "model/backend.h"

ABSL_FLAG(std::string, bytes, "1K,4K,16K,64K,256K,1M,4M,16M,64M",
          "bench allreduce: message sizes in bytes, comma-separated, with optional K, M or G suffix (powers of 1024)");
ABSL_FLAG(std::string, dtype, "f32", "bench allreduce: element type, f32 or bf16");
ABSL_FLAG(std::string, buffers, "auto",
          "bench allreduce: where the buffers live: host, device (needs a CUDA build and a GPU; MPI stages them "
          "through pinned host memory), or auto (device with the NCCL communicator, else host)");

namespace lamina {
namespace {

constexpr char kName[] = "bench allreduce";

absl::StatusOr<std::vector<int64_t>> ParseSizes(const std::string& list) {
  std::vector<int64_t> sizes;
  for (absl::string_view item : absl::StrSplit(list, ',', absl::SkipWhitespace())) {
    item = absl::StripAsciiWhitespace(item);
    int64_t scale = 1;
    if (!item.empty()) {
      const char suffix = absl::ascii_toupper(item.back());
      if (suffix == 'K' || suffix == 'M' || suffix == 'G') {
        scale = suffix == 'K' ? 1 << 10 : suffix == 'M' ? 1 << 20 : int64_t{1} << 30;
        item.remove_suffix(1);
      }
    }
    int64_t n = 0;
    if (!absl::SimpleAtoi(item, &n) || n <= 0) {
      return absl::InvalidArgumentError(absl::StrCat("--bytes: '", item, "' is not a positive size (e.g. 4096, 64K, 16M)"));
    }
    sizes.push_back(n * scale);
  }
  if (sizes.empty()) return absl::InvalidArgumentError("--bytes: no sizes given");
  return sizes;
}

// Fills the buffer with rank + 1 (exact in f32 and bf16). Device buffers are written through the
// backend's stream, which the communicator orders its collectives after.
void Fill(const CommBuffer& data, int rank, Backend* gpu) {
  const float v = static_cast<float>(rank + 1);
  if (data.device == Device::kCuda) {
    const std::vector<float> host(data.count, v);
    gpu->CopyFromHost(host.data(), TensorView{data.data, data.dtype, data.device, Shape{data.count}});
  } else if (data.dtype == DType::kF32) {
    std::fill_n(static_cast<float*>(data.data), data.count, v);
  } else {
    std::fill_n(static_cast<uint16_t*>(data.data), data.count, FloatToBf16Bits(v));
  }
}

// Elements that differ from world * (world + 1) / 2, the sum of a filled buffer.
int64_t CountWrong(const CommBuffer& data, int world, Backend* gpu) {
  const float want = static_cast<float>(world * (world + 1) / 2);
  std::vector<float> got(data.count);
  if (data.device == Device::kCuda) {
    gpu->CopyToHost(TensorView{data.data, data.dtype, data.device, Shape{data.count}}, got.data());
  } else {
    for (int64_t i = 0; i < data.count; ++i) {
      got[i] = data.dtype == DType::kF32 ? static_cast<const float*>(data.data)[i]
                                         : Bf16BitsToFloat(static_cast<const uint16_t*>(data.data)[i]);
    }
  }
  return std::count_if(got.begin(), got.end(), [want](float x) { return x != want; });
}

int RunBenchAllReduce(const std::vector<std::string>& args) {
  if (!args.empty()) return ReportError(kName, "takes no positional arguments");
  absl::StatusOr<std::vector<int64_t>> sizes = ParseSizes(absl::GetFlag(FLAGS_bytes));
  if (!sizes.ok()) return ReportError(kName, std::string(sizes.status().message()));
  const std::string dtype_name = absl::GetFlag(FLAGS_dtype);
  if (dtype_name != "f32" && dtype_name != "bf16") return ReportError(kName, "--dtype must be f32 or bf16");
  const DType dtype = dtype_name == "f32" ? DType::kF32 : DType::kBF16;
  std::string where = absl::GetFlag(FLAGS_buffers);
  if (where != "host" && where != "device" && where != "auto") {
    return ReportError(kName, "--buffers must be host, device or auto");
  }
  if (where == "device" && !CudaAvailable()) return ReportError(kName, "--buffers device needs a CUDA build and a GPU");
  const int iters = absl::GetFlag(FLAGS_iters);
  const int warmup = absl::GetFlag(FLAGS_warmup);
  if (iters <= 0 || warmup < 0) return ReportError(kName, "--iters must be positive and --warmup not negative");

  absl::StatusOr<Distributed> dist = Bootstrap({.comm = absl::GetFlag(FLAGS_comm)});
  if (!dist.ok()) return ReportError(kName, std::string(dist.status().message()));
  // The GPU's backend, created once Bootstrap() has bound the GPU: its stream is what NCCL
  // orders after, and it moves the device buffers' contents.
  std::unique_ptr<Backend> gpu;
  if (CudaAvailable() && (where != "host" || dist->comm_choice != "mpi")) {
    absl::StatusOr<std::unique_ptr<Backend>> backend = MakeBackend("cuda");
    if (!backend.ok()) dist->comm->Fail(Annotate(backend.status(), kName));
    gpu = std::move(backend).value();
  }
  if (absl::Status s = SelectCommunicator(&*dist, gpu ? gpu->native_stream() : nullptr); !s.ok()) {
    dist->comm->Fail(Annotate(s, kName));
  }
  Communicator& comm = *dist->comm;
  const int world = comm.world_size();
  // From here on every rank runs the same collectives; an error on one rank ends the job.
  const auto check = [&](const absl::Status& s) {
    if (!s.ok()) comm.Fail(Annotate(s, kName));
  };
  if (where == "auto") where = comm.name() == "nccl" ? "device" : "host";
  const Device device = where == "host" ? Device::kCpu : Device::kCuda;
  const bool print = comm.rank() == 0;
  if (print) {
    std::printf("# lamina bench allreduce: %s communicator, %d rank(s), sum, %s, %s buffers%s, %d iters, %d warmup\n",
                comm.name().c_str(), world, dtype_name.c_str(), where.c_str(),
                comm.name() == "nccl" && device == Device::kCpu ? " (through MPI)" : "", iters, warmup);
    std::printf("# busbw = algbw * 2(n-1)/n; time is the mean over ranks of the mean per call\n");
    std::printf("#%13s %13s %6s %6s %10s %8s %8s %7s\n", "size", "count", "type", "redop", "time", "algbw", "busbw",
                "#wrong");
    std::printf("#%13s %13s %6s %6s %10s %8s %8s %7s\n", "(B)", "(elements)", "", "", "(us)", "(GB/s)", "(GB/s)", "");
  }
  const size_t elem = DTypeSize(dtype);
  double busbw_total = 0;
  int measured = 0;
  for (int64_t requested : *sizes) {
    const int64_t count = std::max<int64_t>(1, requested / static_cast<int64_t>(elem));
    const size_t bytes = static_cast<size_t>(count) * elem;
    absl::StatusOr<Buffer> buffer = Buffer::Allocate(device, bytes);
    check(buffer.status());
    const CommBuffer data{buffer->data(), count, dtype, device};

    // Correctness once: every rank contributes rank + 1.
    Fill(data, comm.rank(), gpu.get());
    check(comm.AllReduce(data, ReduceOp::kSum));
    int32_t wrong = static_cast<int32_t>(std::min<int64_t>(CountWrong(data, world, gpu.get()), 1 << 30));

    for (int i = 0; i < warmup; ++i) check(comm.AllReduce(data, ReduceOp::kSum));
    check(comm.Barrier());
    Timer timer;
    for (int i = 0; i < iters; ++i) check(comm.AllReduce(data, ReduceOp::kSum));
    float seconds = static_cast<float>(timer.Seconds() / iters);
    check(comm.AllReduce(CommBuffer{&seconds, 1, DType::kF32, Device::kCpu}, ReduceOp::kAverage));
    check(comm.AllReduce(CommBuffer{&wrong, 1, DType::kI32, Device::kCpu}, ReduceOp::kSum));

    const double algbw = static_cast<double>(bytes) / seconds / 1e9;
    const double busbw = algbw * 2.0 * (world - 1) / world;
    busbw_total += busbw;
    ++measured;
    if (print) {
      std::printf(" %13zu %13lld %6s %6s %10.1f %8.3f %8.3f %7d\n", bytes, static_cast<long long>(count),
                  dtype_name.c_str(), "sum", seconds * 1e6, algbw, busbw, wrong);
      std::fflush(stdout);
    }
    if (wrong != 0) comm.Fail(absl::InternalError(absl::StrCat(wrong, " wrong elements in the all-reduce of ", bytes,
                                                               " bytes")));
  }
  if (print) std::printf("# Avg bus bandwidth    : %.3f GB/s\n", busbw_total / measured);
  check(comm.Finish());
  return 0;
}

}  // namespace

LAMINA_SUBCOMMAND("bench allreduce", "Time the all-reduce of the active communicator per message size (nccl-tests style)",
                  RunBenchAllReduce,
                  lamina::FlagNames({{"buffers", "bytes", "comm", "dtype", "iters", "warmup"}}));

}  // namespace lamina
