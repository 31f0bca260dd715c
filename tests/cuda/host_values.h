// Kernel operands on the host, for the emulation tests: stored as the kernel's element type T
// (bf16 bits or f32), with what they are as floats.
#pragma once

#include <cstdint>
#include <random>
#include <vector>

#include "core/bf16.h"

namespace lamina::testing {

// A stored element as a float.
template <typename T>
float AsFloat(T stored) {
  if constexpr (sizeof(T) == 2) {
    return Bf16BitsToFloat(stored);
  } else {
    return stored;
  }
}

template <typename T>
std::vector<float> AsFloats(const std::vector<T>& stored) {
  std::vector<float> f;
  f.reserve(stored.size());
  for (const T x : stored) f.push_back(AsFloat(x));
  return f;
}

// Values stored as T, and what they are as floats (bf16 rounds them).
template <typename T>
struct HostValues {
  std::vector<T> data;
  std::vector<float> value;

  static HostValues From(const std::vector<float>& v) {
    HostValues h;
    for (const float x : v) {
      if constexpr (sizeof(T) == 2) {
        h.data.push_back(FloatToBf16Bits(x));
      } else {
        h.data.push_back(x);
      }
      h.value.push_back(AsFloat(h.data.back()));
    }
    return h;
  }
};

// n values uniform in [-scale, scale].
inline std::vector<float> RandomFloats(std::mt19937& gen, int64_t n, float scale) {
  std::uniform_real_distribution<float> uni(-scale, scale);
  std::vector<float> v(n);
  for (float& x : v) x = uni(gen);
  return v;
}

template <typename T>
HostValues<T> RandomValues(std::mt19937& gen, int64_t n, float scale) {
  return HostValues<T>::From(RandomFloats(gen, n, scale));
}

}  // namespace lamina::testing
