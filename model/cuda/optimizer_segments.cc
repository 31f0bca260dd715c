#include "model/cuda/optimizer_segments.h"

#include <algorithm>
#include <cmath>

#include "core/status.h"
#include "model/cuda/cuda_check.h"

namespace lamina::cuda {

absl::StatusOr<const DeviceSegment*> DeviceSegmentTable::Upload(std::span<const ParamSegment> segments,
                                                                int64_t params, cudaStream_t stream) {
  bool same = segments.size() == host_.size();
  for (size_t i = 0; same && i < segments.size(); ++i) {
    same = segments[i].offset == host_[i].offset && segments[i].size == host_[i].size &&
           (segments[i].decay ? 1 : 0) == host_[i].decay && segments[i].tensor == host_[i].tensor;
  }
  if (same) return device_;
  int64_t max_segment = 0;
  std::vector<DeviceSegment> table = DeviceSegments(segments, params, &max_segment);
  const size_t bytes = table.size() * sizeof(DeviceSegment);
  if (bytes > device_buffer_.bytes()) {
    LAMINA_CUDA_CHECK(cudaStreamSynchronize(stream));  // the old table may still be read
    absl::StatusOr<Buffer> b = Buffer::Allocate(Device::kCuda, bytes);
    if (!b.ok()) return Annotate(b.status(), "the optimizer's table of parameter segments");
    device_buffer_ = *std::move(b);
  }
  host_ = std::move(table);
  max_segment_ = max_segment;
  device_ = static_cast<DeviceSegment*>(device_buffer_.data());
  if (bytes > 0) {
    LAMINA_CUDA_CHECK(cudaMemcpyAsync(device_, host_.data(), bytes, cudaMemcpyHostToDevice, stream));
    LAMINA_CUDA_CHECK(cudaStreamSynchronize(stream));  // host_ may change before a later copy would read it
  }
  return device_;
}

std::vector<DeviceSegment> DeviceSegments(std::span<const ParamSegment> segments, int64_t params,
                                          int64_t* max_segment) {
  std::vector<DeviceSegment> table;
  *max_segment = 0;
  for (const ParamSegment& s : segments) {
    LAMINA_CHECK(s.offset >= 0 && s.size >= 0 && s.offset + s.size <= params, "segment [", s.offset, ", +", s.size,
                 ") outside ", params, " parameters");
    table.push_back(DeviceSegment{s.offset, s.size, s.decay ? 1 : 0, s.tensor});
    *max_segment = std::max(*max_segment, s.size);
  }
  return table;
}

OptimizerHyper DeviceHyper(const AdamWHyper& hyper) {
  OptimizerHyper h;
  h.lr = hyper.lr;
  h.beta1 = hyper.beta1;
  h.beta2 = hyper.beta2;
  h.eps = hyper.eps;
  h.weight_decay = hyper.weight_decay;
  h.grad_scale = hyper.grad_scale;
  h.bias_correction1 = static_cast<float>(1.0 - std::pow(static_cast<double>(hyper.beta1), static_cast<double>(hyper.step)));
  h.bias_correction2 = static_cast<float>(1.0 - std::pow(static_cast<double>(hyper.beta2), static_cast<double>(hyper.step)));
  return h;
}

}  // namespace lamina::cuda
