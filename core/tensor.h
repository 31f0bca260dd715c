// A non-owning view of a contiguous, row-major tensor on some device.
#pragma once

#include <array>
#include <cstdint>
#include <initializer_list>
#include <string>
#include <vector>

#include "core/dtype.h"
#include "core/status.h"

namespace lamina {

constexpr int kMaxDims = 4;

class Shape {
 public:
  Shape() = default;
  Shape(std::initializer_list<int64_t> dims) {
    LAMINA_CHECK(dims.size() <= kMaxDims);
    for (int64_t d : dims) dims_[rank_++] = d;
  }
  int rank() const { return rank_; }
  int64_t operator[](int i) const { return dims_[i]; }
  int64_t& operator[](int i) { return dims_[i]; }
  int64_t numel() const {
    int64_t n = 1;
    for (int i = 0; i < rank_; ++i) n *= dims_[i];
    return n;
  }
  bool operator==(const Shape& o) const {
    if (rank_ != o.rank_) return false;
    for (int i = 0; i < rank_; ++i)
      if (dims_[i] != o.dims_[i]) return false;
    return true;
  }
  std::string ToString() const;
  std::vector<int64_t> dims() const { return std::vector<int64_t>(dims_.begin(), dims_.begin() + rank_); }

 private:
  std::array<int64_t, kMaxDims> dims_{};
  int rank_ = 0;
};

// Row-major and contiguous: strides follow from the shape. Views that need other layouts
// (heads inside a fused QKV row) are expressed by the ops that consume them, not here.
struct TensorView {
  void* data = nullptr;
  DType dtype = DType::kF32;
  Device device = Device::kCpu;
  Shape shape;

  bool empty() const { return data == nullptr; }
  int64_t numel() const { return shape.numel(); }
  size_t bytes() const { return static_cast<size_t>(numel()) * DTypeSize(dtype); }
  int64_t dim(int i) const { return shape[i]; }
  int rank() const { return shape.rank(); }
  // Rows and columns when read as a matrix: the last dimension against all the others.
  int64_t cols() const { return shape.rank() == 0 ? 1 : shape[shape.rank() - 1]; }
  int64_t rows() const { return cols() == 0 ? 0 : numel() / cols(); }

  template <typename T>
  T* as() const {
    return static_cast<T*>(data);
  }
  // The same memory read with another shape of the same size.
  TensorView Reshaped(Shape s) const;
  // Rows [begin, end) of the view read as a matrix.
  TensorView RowSlice(int64_t begin, int64_t end) const;
  std::string ToString() const;
};

// "[2, 3]" for dimensions of any count (file formats allow more than kMaxDims).
std::string ShapeString(const std::vector<int64_t>& dims);

inline TensorView MakeView(void* data, DType dtype, Device device, Shape shape) {
  return TensorView{data, dtype, device, shape};
}

inline TensorView CpuF32(float* data, Shape shape) { return TensorView{data, DType::kF32, Device::kCpu, shape}; }
inline TensorView CpuI32(int32_t* data, Shape shape) { return TensorView{data, DType::kI32, Device::kCpu, shape}; }

}  // namespace lamina
