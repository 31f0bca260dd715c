// The bf16 sum used by the collectives: each addition converts both operands to f32, adds, and
// rounds the result back to bf16 (round to nearest even), exactly as core/bf16.h converts.
#pragma once

#include <cstdint>

#include "core/bf16.h"

namespace lamina {

// inout[i] = bf16(float(in[i]) + float(inout[i])) for i < n.
inline void AccumulateBf16(const uint16_t* in, uint16_t* inout, int64_t n) {
  for (int64_t i = 0; i < n; ++i) inout[i] = FloatToBf16Bits(Bf16BitsToFloat(in[i]) + Bf16BitsToFloat(inout[i]));
}

// x[i] = bf16(float(x[i]) / divisor), the second half of a bf16 average.
inline void DivideBf16(uint16_t* x, int64_t n, float divisor) {
  for (int64_t i = 0; i < n; ++i) x[i] = FloatToBf16Bits(Bf16BitsToFloat(x[i]) / divisor);
}

}  // namespace lamina
