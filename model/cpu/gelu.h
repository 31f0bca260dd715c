// The erf form of GELU and its derivative, shared by the elementwise op and the fused linear layer.
#pragma once

#include <cmath>

namespace lamina::cpu {

// gelu(x) = x * Phi(x) = 0.5 x (1 + erf(x / sqrt 2)).
inline float GeluValue(float x) { return 0.5f * x * (1.0f + std::erf(x * static_cast<float>(M_SQRT1_2))); }

// gelu'(x) = Phi(x) + x * phi(x) = 0.5 (1 + erf(x / sqrt 2)) + x exp(-x^2 / 2) / sqrt(2 pi).
inline float GeluDerivative(float x) {
  constexpr float kInvSqrt2Pi = 0.3989422804014327f;
  return 0.5f * (1.0f + std::erf(x * static_cast<float>(M_SQRT1_2))) + x * std::exp(-0.5f * x * x) * kInvSqrt2Pi;
}

}  // namespace lamina::cpu
