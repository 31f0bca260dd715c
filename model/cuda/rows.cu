// Row gather and its scatter-add backward (indices distinct, so no two blocks touch one row).
#include "model/cuda/common.cuh"
#include "model/cuda/kernels.h"

namespace lamina::cuda {
namespace {

constexpr int kThreads = 256;

template <typename TX, typename TO>
__global__ void GatherRowsKernel(const TX* x, const int32_t* index, TO* out, int64_t cols) {
  const int64_t i = blockIdx.x;
  const TX* src = x + static_cast<int64_t>(index[i]) * cols;
  for (int64_t c = threadIdx.x; c < cols; c += blockDim.x) out[i * cols + c] = FromF<TO>(ToF(src[c]));
}

template <typename TG, typename TD>
__global__ void ScatterAddRowsKernel(const TG* dout, const int32_t* index, TD* dx, int64_t cols) {
  const int64_t i = blockIdx.x;
  TD* dst = dx + static_cast<int64_t>(index[i]) * cols;
  for (int64_t c = threadIdx.x; c < cols; c += blockDim.x) dst[c] = FromF<TD>(ToF(dst[c]) + ToF(dout[i * cols + c]));
}

}  // namespace

void LaunchGatherRows(Ref x, const int32_t* index, Ref out, int64_t n, int64_t cols, cudaStream_t stream) {
  if (n == 0 || cols == 0) return;
  LAMINA_DISPATCH_FLOAT(x.dtype, TX, LAMINA_DISPATCH_FLOAT(out.dtype, TO, {
                          GatherRowsKernel<TX, TO><<<static_cast<unsigned>(n), kThreads, 0, stream>>>(
                              static_cast<const TX*>(x.data), index, static_cast<TO*>(out.data), cols);
                        }));
  LAMINA_CUDA_CHECK_LAUNCH();
}

void LaunchScatterAddRows(Ref dout, const int32_t* index, Ref dx, int64_t n, int64_t cols, cudaStream_t stream) {
  if (n == 0 || cols == 0) return;
  LAMINA_DISPATCH_FLOAT(dout.dtype, TG, LAMINA_DISPATCH_FLOAT(dx.dtype, TD, {
                          ScatterAddRowsKernel<TG, TD><<<static_cast<unsigned>(n), kThreads, 0, stream>>>(
                              static_cast<const TG*>(dout.data), index, static_cast<TD*>(dx.data), cols);
                        }));
  LAMINA_CUDA_CHECK_LAUNCH();
}

}  // namespace lamina::cuda
