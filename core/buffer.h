// Owning device or host memory, and a bump arena for activations.
#pragma once

#include <cstddef>
#include <utility>

#include "absl/status/statusor.h"
#include "core/tensor.h"

namespace lamina {

// Memory owned on one device: 256-byte aligned host memory, or cudaMalloc'd device memory.
class Buffer {
 public:
  Buffer() = default;
  static absl::StatusOr<Buffer> Allocate(Device device, size_t bytes);
  ~Buffer();
  Buffer(Buffer&& o) noexcept { *this = std::move(o); }
  Buffer& operator=(Buffer&& o) noexcept;
  Buffer(const Buffer&) = delete;
  Buffer& operator=(const Buffer&) = delete;

  void* data() const { return data_; }
  size_t bytes() const { return bytes_; }
  Device device() const { return device_; }
  TensorView View(DType dtype, Shape shape, size_t byte_offset = 0) const;

 private:
  void* data_ = nullptr;
  size_t bytes_ = 0;
  Device device_ = Device::kCpu;
};

// Hands out aligned slices of one Buffer; Reset() frees them all at once. Activations of a
// forward/backward pass come from here, so a step allocates nothing once the arena is sized.
class Arena {
 public:
  Arena() = default;
  static absl::StatusOr<Arena> Create(Device device, size_t bytes);
  // A tensor of `shape` from the arena; an error when the arena is full.
  absl::StatusOr<TensorView> Take(DType dtype, Shape shape);
  void Reset() { used_ = 0; }
  size_t used() const { return used_; }
  size_t peak() const { return peak_; }
  size_t capacity() const { return buffer_.bytes(); }
  Device device() const { return buffer_.device(); }

 private:
  Buffer buffer_;
  size_t used_ = 0;
  size_t peak_ = 0;
};

// Bytes held by live Buffers of one device kind, in this process, and the most held at once since
// the process started or the last ResetPeakAllocated. Every lamina allocation (parameters,
// optimizer state, the activation arena, backend scratch, the cuBLASLt workspace) is a Buffer, so
// on the GPU this is what torch.cuda.max_memory_allocated counts for PyTorch: not the CUDA context,
// nor memory that NCCL or cuBLASLt allocate internally (DeviceBytesInUse shows those).
struct AllocatedBytes {
  size_t current = 0;
  size_t peak = 0;
};
AllocatedBytes Allocated(Device device);
void ResetPeakAllocated(Device device);

// Bytes in use on the current GPU as the driver reports it (total less free): every process's
// allocations, the CUDA context and the libraries' own. An error without CUDA or a GPU.
absl::StatusOr<size_t> DeviceBytesInUse();

// Copies between any two devices (host<->device through cudaMemcpy when built with CUDA). The copy
// is ordered on the legacy default stream only: it does not wait for work on a backend's
// non-blocking stream, so synchronise that first (Backend::Synchronize).
absl::Status CopyBytes(void* dst, Device dst_device, const void* src, Device src_device, size_t bytes);

// Whether this build has CUDA and a usable GPU is present.
bool CudaAvailable();

}  // namespace lamina
