// GELU and its derivative, shared by the elementwise op and the fused linear layer: the erf form
// (BERT's) and the tanh approximation (transformers' "gelu_new").
#pragma once

#include <cmath>

#include "model/backend.h"

namespace lamina::cpu {

// gelu(x) = x * Phi(x) = 0.5 x (1 + erf(x / sqrt 2)).
inline float GeluValue(float x) { return 0.5f * x * (1.0f + std::erf(x * static_cast<float>(M_SQRT1_2))); }

// gelu'(x) = Phi(x) + x * phi(x) = 0.5 (1 + erf(x / sqrt 2)) + x exp(-x^2 / 2) / sqrt(2 pi).
inline float GeluDerivative(float x) {
  constexpr float kInvSqrt2Pi = 0.3989422804014327f;
  return 0.5f * (1.0f + std::erf(x * static_cast<float>(M_SQRT1_2))) + x * std::exp(-0.5f * x * x) * kInvSqrt2Pi;
}

// gelu_tanh(x) = 0.5 x (1 + tanh(u)), u = sqrt(2/pi) (x + 0.044715 x^3).
inline float GeluTanhValue(float x) {
  constexpr float kSqrt2OverPi = 0.7978845608028654f, kCubic = 0.044715f;
  return 0.5f * x * (1.0f + std::tanh(kSqrt2OverPi * (x + kCubic * x * x * x)));
}

// gelu_tanh'(x) = 0.5 (1 + tanh u) + 0.5 x (1 - tanh^2 u) sqrt(2/pi) (1 + 3 * 0.044715 x^2).
inline float GeluTanhDerivative(float x) {
  constexpr float kSqrt2OverPi = 0.7978845608028654f, kCubic = 0.044715f;
  const float t = std::tanh(kSqrt2OverPi * (x + kCubic * x * x * x));
  return 0.5f * (1.0f + t) + 0.5f * x * (1.0f - t * t) * kSqrt2OverPi * (1.0f + 3.0f * kCubic * x * x);
}

// The activation's value and derivative; kNone is the identity.
inline float ActivationValue(Activation act, float x) {
  return act == Activation::kGelu ? GeluValue(x) : act == Activation::kGeluTanh ? GeluTanhValue(x) : x;
}
inline float ActivationDerivative(Activation act, float x) {
  return act == Activation::kGelu ? GeluDerivative(x) : act == Activation::kGeluTanh ? GeluTanhDerivative(x) : 1.0f;
}

}  // namespace lamina::cpu
