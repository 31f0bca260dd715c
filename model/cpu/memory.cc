// Memory ops of the CPU backend, and MakeCpuBackend().
#include <cstring>
#include <memory>

#include "core/bf16.h"
#include "model/cpu/cpu_backend.h"
#include "model/cpu/cpu_checks.h"

namespace lamina {

std::unique_ptr<Backend> MakeCpuBackend() { return std::make_unique<CpuBackend>(); }

void CpuBackend::Zero(TensorView t) {
  LAMINA_CHECK(t.device == Device::kCpu, "Zero of ", t.ToString());
  if (t.numel() > 0) std::memset(t.data, 0, t.bytes());
}

void CpuBackend::CopyFromHost(const float* src, TensorView dst) {
  float* d = cpu::F32(dst, "CopyFromHost dst");
  if (dst.numel() > 0) std::memcpy(d, src, dst.bytes());
}

void CpuBackend::CopyToHost(TensorView src, float* dst) {
  const float* s = cpu::F32(src, "CopyToHost src");
  if (src.numel() > 0) std::memcpy(dst, s, src.bytes());
}

void CpuBackend::CopyFromHostI32(const int32_t* src, TensorView dst) {
  cpu::I32(dst, "CopyFromHostI32 dst");
  if (dst.numel() > 0) std::memcpy(dst.data, src, dst.bytes());
}

void CpuBackend::Convert(TensorView src, TensorView dst) {
  LAMINA_CHECK(src.device == Device::kCpu && dst.device == Device::kCpu, "Convert ", src.ToString(), " -> ",
               dst.ToString());
  cpu::CheckNumel(dst, src.numel(), "Convert dst");
  const int64_t n = src.numel();
  if (src.dtype == dst.dtype) {
    LAMINA_CHECK(src.dtype == DType::kF32 || src.dtype == DType::kBF16, "Convert of ", src.ToString());
    if (n > 0 && src.data != dst.data) std::memmove(dst.data, src.data, src.bytes());
  } else if (src.dtype == DType::kF32 && dst.dtype == DType::kBF16) {
    const float* s = src.as<float>();
    uint16_t* d = dst.as<uint16_t>();
    for (int64_t i = 0; i < n; ++i) d[i] = FloatToBf16Bits(s[i]);
  } else if (src.dtype == DType::kBF16 && dst.dtype == DType::kF32) {
    const uint16_t* s = src.as<uint16_t>();
    float* d = dst.as<float>();
    for (int64_t i = 0; i < n; ++i) d[i] = Bf16BitsToFloat(s[i]);
  } else {
    LAMINA_CHECK(false, "Convert ", src.ToString(), " -> ", dst.ToString(), " is not supported");
  }
}

}  // namespace lamina
