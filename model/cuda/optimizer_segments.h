// The host side of the optimizer kernels (model/cuda/optimizer.cu): the table of parameter
// segments they walk, kept on the device and uploaded only when the segments change (a replicated
// optimizer's never do; a ZeRO shard's are fixed too), and a step's constants.
#pragma once

#include <cuda_runtime.h>

#include <cstdint>
#include <span>
#include <vector>

#include "absl/status/statusor.h"
#include "core/buffer.h"
#include "model/backend.h"
#include "model/cuda/kernels.h"

namespace lamina::cuda {

class DeviceSegmentTable {
 public:
  // The table of `segments` (each inside [0, params)) on the device, uploaded on `stream` when it
  // differs from the last one; waits for the stream before reusing host or device memory. Fails
  // only when the device memory for a larger table cannot be had.
  absl::StatusOr<const DeviceSegment*> Upload(std::span<const ParamSegment> segments, int64_t params,
                                              cudaStream_t stream);
  int64_t max_segment() const { return max_segment_; }

 private:
  Buffer device_buffer_;
  std::vector<DeviceSegment> host_;
  DeviceSegment* device_ = nullptr;
  int64_t max_segment_ = 0;
};

// The kernels' table of `segments` (each checked to lie inside [0, params)) and, in *max_segment,
// the largest one's size, which sizes their grids.
std::vector<DeviceSegment> DeviceSegments(std::span<const ParamSegment> segments, int64_t params,
                                          int64_t* max_segment);

// The kernels' constants of one AdamW/LAMB step, bias corrections included.
OptimizerHyper DeviceHyper(const AdamWHyper& hyper);

}  // namespace lamina::cuda
