// `lamina bench allreduce`: all-reduce time and bandwidth of the active communicator per
// message size, printed like nccl-tests. Run it under mpirun/srun for several ranks, e.g.
//   mpirun -np 2 build/lamina bench allreduce --bytes 1K,1M,64M --dtype bf16
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

ABSL_FLAG(std::string, bytes, "1K,4K,16K,64K,256K,1M,4M,16M,64M",
          "bench allreduce: message sizes in bytes, comma-separated, with optional K, M or G suffix (powers of 1024)");
ABSL_FLAG(std::string, dtype, "f32", "bench allreduce: element type, f32 or bf16");
ABSL_FLAG(std::string, buffers, "host",
          "bench allreduce: where the buffers live, host or device (device needs a CUDA build and GPU; MPI stages "
          "them through pinned host memory)");

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

// Fills the buffer with rank + 1 (exact in f32 and bf16).
void Fill(void* host, DType dtype, int64_t count, int rank) {
  const float v = static_cast<float>(rank + 1);
  if (dtype == DType::kF32) {
    std::fill_n(static_cast<float*>(host), count, v);
  } else {
    std::fill_n(static_cast<uint16_t*>(host), count, FloatToBf16Bits(v));
  }
}

// Elements that differ from world * (world + 1) / 2, the sum of a filled buffer.
int64_t CountWrong(const void* host, DType dtype, int64_t count, int world) {
  const float want = static_cast<float>(world * (world + 1) / 2);
  int64_t wrong = 0;
  for (int64_t i = 0; i < count; ++i) {
    const float got = dtype == DType::kF32 ? static_cast<const float*>(host)[i]
                                           : Bf16BitsToFloat(static_cast<const uint16_t*>(host)[i]);
    wrong += got != want;
  }
  return wrong;
}

int RunBenchAllReduce(const std::vector<std::string>& args) {
  if (!args.empty()) return ReportError(kName, "takes no positional arguments");
  absl::StatusOr<std::vector<int64_t>> sizes = ParseSizes(absl::GetFlag(FLAGS_bytes));
  if (!sizes.ok()) return ReportError(kName, std::string(sizes.status().message()));
  const std::string dtype_name = absl::GetFlag(FLAGS_dtype);
  if (dtype_name != "f32" && dtype_name != "bf16") return ReportError(kName, "--dtype must be f32 or bf16");
  const DType dtype = dtype_name == "f32" ? DType::kF32 : DType::kBF16;
  const std::string where = absl::GetFlag(FLAGS_buffers);
  if (where != "host" && where != "device") return ReportError(kName, "--buffers must be host or device");
  const Device device = where == "host" ? Device::kCpu : Device::kCuda;
  const int iters = absl::GetFlag(FLAGS_iters);
  const int warmup = absl::GetFlag(FLAGS_warmup);
  if (iters <= 0 || warmup < 0) return ReportError(kName, "--iters must be positive and --warmup not negative");

  absl::StatusOr<Distributed> dist = Bootstrap();
  if (!dist.ok()) return ReportError(kName, std::string(dist.status().message()));
  Communicator& comm = *dist->comm;
  const int world = comm.world_size();
  // From here on every rank runs the same collectives; an error on one rank ends the job.
  const auto check = [&](const absl::Status& s) {
    if (!s.ok()) comm.Fail(Annotate(s, kName));
  };
  const bool print = comm.rank() == 0;
  if (print) {
    std::printf("# lamina bench allreduce: %s communicator, %d rank(s), sum, %s, %s buffers, %d iters, %d warmup\n",
                comm.name().c_str(), world, dtype_name.c_str(), where.c_str(), iters, warmup);
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
    std::vector<char> host(bytes);
    const CommBuffer data{buffer->data(), count, dtype, device};

    // Correctness once: every rank contributes rank + 1.
    Fill(host.data(), dtype, count, comm.rank());
    check(CopyBytes(buffer->data(), device, host.data(), Device::kCpu, bytes));
    check(comm.AllReduce(data, ReduceOp::kSum));
    check(CopyBytes(host.data(), Device::kCpu, buffer->data(), device, bytes));
    int32_t wrong = static_cast<int32_t>(std::min<int64_t>(CountWrong(host.data(), dtype, count, world), 1 << 30));

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
                  RunBenchAllReduce);

}  // namespace lamina
