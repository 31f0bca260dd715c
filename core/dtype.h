// Element types of tensors and their sizes.
#pragma once

#include <cstddef>
#include <cstdint>

namespace lamina {

enum class DType : uint8_t { kF32, kBF16, kF16, kI32, kU16 };

constexpr size_t DTypeSize(DType t) {
  switch (t) {
    case DType::kF32: return 4;
    case DType::kI32: return 4;
    case DType::kBF16: return 2;
    case DType::kF16: return 2;
    case DType::kU16: return 2;
  }
  return 0;
}

constexpr const char* DTypeName(DType t) {
  switch (t) {
    case DType::kF32: return "f32";
    case DType::kBF16: return "bf16";
    case DType::kF16: return "f16";
    case DType::kI32: return "i32";
    case DType::kU16: return "u16";
  }
  return "?";
}

enum class Device : uint8_t { kCpu, kCuda };

constexpr const char* DeviceName(Device d) { return d == Device::kCpu ? "cpu" : "cuda"; }

}  // namespace lamina
