#include "core/buffer.h"

#include <atomic>
#include <cstdlib>
#include <cstring>

#include "absl/strings/str_cat.h"

#if LAMINA_WITH_CUDA
#include <cuda_runtime.h>
#endif

namespace lamina {
namespace {
constexpr size_t kAlign = 256;
size_t RoundUp(size_t n) { return (n + kAlign - 1) / kAlign * kAlign; }

struct Counters {
  std::atomic<size_t> current{0};
  std::atomic<size_t> peak{0};
};
Counters& CountersOf(Device device) {
  static Counters cpu, cuda;
  return device == Device::kCpu ? cpu : cuda;
}
void CountAllocation(Device device, size_t bytes) {
  Counters& c = CountersOf(device);
  const size_t now = c.current.fetch_add(bytes) + bytes;
  size_t peak = c.peak.load();
  while (now > peak && !c.peak.compare_exchange_weak(peak, now)) {
  }
}
}  // namespace

AllocatedBytes Allocated(Device device) {
  const Counters& c = CountersOf(device);
  return {c.current.load(), c.peak.load()};
}

void ResetPeakAllocated(Device device) {
  Counters& c = CountersOf(device);
  c.peak.store(c.current.load());
}

absl::StatusOr<size_t> DeviceBytesInUse() {
#if LAMINA_WITH_CUDA
  size_t free_bytes = 0, total_bytes = 0;
  const cudaError_t err = cudaMemGetInfo(&free_bytes, &total_bytes);
  if (err != cudaSuccess) {
    (void)cudaGetLastError();
    return absl::FailedPreconditionError(absl::StrCat("cudaMemGetInfo: ", cudaGetErrorString(err)));
  }
  return total_bytes - free_bytes;
#else
  return absl::FailedPreconditionError("this lamina was built without CUDA");
#endif
}

absl::StatusOr<Buffer> Buffer::Allocate(Device device, size_t bytes) {
  Buffer b;
  b.device_ = device;
  b.bytes_ = bytes;
  if (bytes == 0) return b;
  if (device == Device::kCpu) {
    b.data_ = std::aligned_alloc(kAlign, RoundUp(bytes));
    if (b.data_ == nullptr) return absl::ResourceExhaustedError(absl::StrCat("cannot allocate ", bytes, " host bytes"));
    CountAllocation(device, bytes);
    return b;
  }
#if LAMINA_WITH_CUDA
  cudaError_t err = cudaMalloc(&b.data_, bytes);
  if (err != cudaSuccess) {
    b.data_ = nullptr;
    (void)cudaGetLastError();  // an allocation failure is not sticky: clear it for the next call
    size_t free_bytes = 0, total_bytes = 0;
    const bool known = cudaMemGetInfo(&free_bytes, &total_bytes) == cudaSuccess;
    return absl::ResourceExhaustedError(absl::StrCat(
        "cudaMalloc of ", bytes, " bytes (", bytes >> 20, " MiB) failed: ", cudaGetErrorString(err),
        known ? absl::StrCat("; the GPU has ", free_bytes >> 20, " MiB free of ", total_bytes >> 20, " MiB") : "",
        "; a smaller batch.micro_batch (more accumulation steps, the same global batch) needs less"));
  }
  CountAllocation(device, bytes);
  return b;
#else
  return absl::FailedPreconditionError("this lamina was built without CUDA (configure with -DLAMINA_CUDA=ON)");
#endif
}

Buffer::~Buffer() {
  if (data_ == nullptr) return;
  CountersOf(device_).current.fetch_sub(bytes_);
  if (device_ == Device::kCpu) {
    std::free(data_);
  } else {
#if LAMINA_WITH_CUDA
    cudaFree(data_);
#endif
  }
}

Buffer& Buffer::operator=(Buffer&& o) noexcept {
  if (this != &o) {
    this->~Buffer();
    data_ = std::exchange(o.data_, nullptr);
    bytes_ = std::exchange(o.bytes_, 0);
    device_ = o.device_;
  }
  return *this;
}

TensorView Buffer::View(DType dtype, Shape shape, size_t byte_offset) const {
  LAMINA_CHECK(byte_offset + static_cast<size_t>(shape.numel()) * DTypeSize(dtype) <= bytes_, "view ",
               shape.ToString(), " at ", byte_offset, " past ", bytes_, " bytes");
  return TensorView{static_cast<char*>(data_) + byte_offset, dtype, device_, shape};
}

absl::StatusOr<Arena> Arena::Create(Device device, size_t bytes) {
  Arena a;
  ASSIGN_OR_RETURN(a.buffer_, Buffer::Allocate(device, bytes));
  return a;
}

absl::StatusOr<TensorView> Arena::Take(DType dtype, Shape shape) {
  const size_t bytes = static_cast<size_t>(shape.numel()) * DTypeSize(dtype);
  if (used_ + bytes > buffer_.bytes()) {
    return absl::ResourceExhaustedError(absl::StrCat("activation arena of ", buffer_.bytes(), " bytes is full (",
                                                     used_, " used, ", bytes, " more wanted)"));
  }
  TensorView v = buffer_.View(dtype, shape, used_);
  used_ = RoundUp(used_ + bytes);
  if (used_ > peak_) peak_ = used_;
  return v;
}

absl::Status CopyBytes(void* dst, Device dst_device, const void* src, Device src_device, size_t bytes) {
  if (bytes == 0) return absl::OkStatus();
  if (dst_device == Device::kCpu && src_device == Device::kCpu) {
    std::memcpy(dst, src, bytes);
    return absl::OkStatus();
  }
#if LAMINA_WITH_CUDA
  cudaError_t err = cudaMemcpy(dst, src, bytes, cudaMemcpyDefault);
  if (err != cudaSuccess) return absl::InternalError(absl::StrCat("cudaMemcpy: ", cudaGetErrorString(err)));
  return absl::OkStatus();
#else
  return absl::FailedPreconditionError("this lamina was built without CUDA");
#endif
}

bool CudaAvailable() {
#if LAMINA_WITH_CUDA
  int n = 0;
  return cudaGetDeviceCount(&n) == cudaSuccess && n > 0;
#else
  return false;
#endif
}

}  // namespace lamina
