#include "core/tensor.h"

#include "absl/strings/str_join.h"

namespace lamina {

std::string Shape::ToString() const {
  std::string s = "[";
  for (int i = 0; i < rank_; ++i) absl::StrAppend(&s, i ? ", " : "", dims_[i]);
  return s + "]";
}

std::string ShapeString(const std::vector<int64_t>& dims) { return absl::StrCat("[", absl::StrJoin(dims, ", "), "]"); }

TensorView TensorView::Reshaped(Shape s) const {
  LAMINA_CHECK(s.numel() == numel(), "reshape ", shape.ToString(), " -> ", s.ToString());
  TensorView v = *this;
  v.shape = s;
  return v;
}

TensorView TensorView::RowSlice(int64_t begin, int64_t end) const {
  LAMINA_CHECK(begin >= 0 && begin <= end && end <= rows(), "rows [", begin, ", ", end, ") of ", shape.ToString());
  TensorView v = *this;
  v.data = static_cast<char*>(data) + static_cast<size_t>(begin * cols()) * DTypeSize(dtype);
  v.shape = Shape{end - begin, cols()};
  return v;
}

std::string TensorView::ToString() const {
  return absl::StrCat(DTypeName(dtype), shape.ToString(), "@", DeviceName(device));
}

}  // namespace lamina
