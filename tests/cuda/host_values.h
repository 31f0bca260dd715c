// Kernel operands on the host, for the emulation tests: stored as the kernel's element type T
// (bf16 bits or f32), with what they are as floats; and the random source they are drawn from.
#pragma once

#include <cstdint>
#include <random>
#include <string>
#include <vector>

#include "core/bf16.h"
#include "gtest/gtest.h"

namespace lamina::testing {

// A random source seeded afresh in each test, whose seed every failure reported while it lives
// names (so a failing draw can be replayed).
class TestRandom {
 public:
  TestRandom()
      : seed_(std::random_device{}()), gen_(seed_), trace_(__FILE__, __LINE__, "seed " + std::to_string(seed_)) {}
  std::mt19937& gen() { return gen_; }
  // Uniform in [lo, hi].
  int64_t Pick(int64_t lo, int64_t hi) { return std::uniform_int_distribution<int64_t>(lo, hi)(gen_); }

 private:
  uint32_t seed_;
  std::mt19937 gen_;
  ::testing::ScopedTrace trace_;
};

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
