// Comparing parameter vectors in tests.
#pragma once

#include <cmath>
#include <vector>

namespace lamina::testing {

// ||a - b|| / ||b||, accumulated in double.
inline double RelativeDifference(const std::vector<float>& a, const std::vector<float>& b) {
  double d = 0, n = 0;
  for (size_t i = 0; i < a.size() && i < b.size(); ++i) {
    d += (static_cast<double>(a[i]) - b[i]) * (static_cast<double>(a[i]) - b[i]);
    n += static_cast<double>(b[i]) * b[i];
  }
  return std::sqrt(d / n);
}

}  // namespace lamina::testing
