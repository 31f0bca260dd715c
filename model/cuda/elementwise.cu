// Elementwise kernels: dtype conversion, GELU (erf form, as the reference), tanh, add, dropout, scale.
#include "model/cuda/common.cuh"
#include "model/cuda/kernels.h"

namespace lamina::cuda {
namespace {

constexpr int kThreads = 256;

__device__ __forceinline__ float GeluValue(float x) { return 0.5f * x * (1.0f + erff(x * 0.70710678118654752f)); }

__device__ __forceinline__ float GeluDerivative(float x) {
  constexpr float kInvSqrt2Pi = 0.3989422804014327f;
  return 0.5f * (1.0f + erff(x * 0.70710678118654752f)) + x * __expf(-0.5f * x * x) * kInvSqrt2Pi;
}

// out[i] = f(in...) over a grid-stride loop; F maps floats to a float.
template <typename TO, typename TA, typename F>
__global__ void Map1(const TA* a, TO* out, int64_t n, F f) {
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x)
    out[i] = FromF<TO>(f(ToF(a[i]), i));
}

template <typename TO, typename TA, typename TB, typename F>
__global__ void Map2(const TA* a, const TB* b, TO* out, int64_t n, F f) {
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x)
    out[i] = FromF<TO>(f(ToF(a[i]), ToF(b[i])));
}

template <typename F>
void Launch1(Ref a, Ref out, int64_t n, cudaStream_t stream, F f) {
  if (n == 0) return;
  LAMINA_DISPATCH_FLOAT(a.dtype, TA, LAMINA_DISPATCH_FLOAT(out.dtype, TO, {
    Map1<TO, TA><<<GridFor(n, kThreads), kThreads, 0, stream>>>(static_cast<const TA*>(a.data),
                                                                 static_cast<TO*>(out.data), n, f);
  }));
  LAMINA_CUDA_CHECK_LAUNCH();
}

template <typename F>
void Launch2(Ref a, Ref b, Ref out, int64_t n, cudaStream_t stream, F f) {
  if (n == 0) return;
  LAMINA_DISPATCH_FLOAT(a.dtype, TA, LAMINA_DISPATCH_FLOAT(b.dtype, TB, LAMINA_DISPATCH_FLOAT(out.dtype, TO, {
    Map2<TO, TA, TB><<<GridFor(n, kThreads), kThreads, 0, stream>>>(
        static_cast<const TA*>(a.data), static_cast<const TB*>(b.data), static_cast<TO*>(out.data), n, f);
  })));
  LAMINA_CUDA_CHECK_LAUNCH();
}

struct Identity {
  __device__ float operator()(float x, int64_t) const { return x; }
};
struct GeluOp {
  __device__ float operator()(float x, int64_t) const { return GeluValue(x); }
};
struct GeluBackwardOp {
  __device__ float operator()(float g, float x) const { return g * GeluDerivative(x); }
};
struct TanhOp {
  __device__ float operator()(float x, int64_t) const { return tanhf(x); }
};
struct TanhBackwardOp {
  __device__ float operator()(float g, float y) const { return g * (1.0f - y * y); }
};
struct AddOp {
  __device__ float operator()(float a, float b) const { return a + b; }
};
struct DropoutOp {
  RngContext rng;
  float p, scale;
  __device__ float operator()(float x, int64_t i) const {
    return DropoutKeep(rng, static_cast<uint64_t>(i), p) ? x * scale : 0.0f;
  }
};
struct ScaleOp {
  float s;
  __device__ float operator()(float x, int64_t) const { return x * s; }
};

}  // namespace

void LaunchConvert(Ref src, Ref dst, int64_t n, cudaStream_t stream) { Launch1(src, dst, n, stream, Identity{}); }

void LaunchGelu(Ref x, Ref out, int64_t n, cudaStream_t stream) { Launch1(x, out, n, stream, GeluOp{}); }

void LaunchGeluBackward(Ref dout, Ref x, Ref dx, int64_t n, cudaStream_t stream) {
  Launch2(dout, x, dx, n, stream, GeluBackwardOp{});
}

void LaunchTanh(Ref x, Ref out, int64_t n, cudaStream_t stream) { Launch1(x, out, n, stream, TanhOp{}); }

void LaunchTanhBackward(Ref dout, Ref out, Ref dx, int64_t n, cudaStream_t stream) {
  Launch2(dout, out, dx, n, stream, TanhBackwardOp{});
}

void LaunchAdd(Ref a, Ref b, Ref out, int64_t n, cudaStream_t stream) { Launch2(a, b, out, n, stream, AddOp{}); }

void LaunchDropout(Ref x, float p, RngContext rng, Ref out, int64_t n, cudaStream_t stream) {
  if (p == 0.0f) {
    LaunchConvert(x, out, n, stream);
    return;
  }
  Launch1(x, out, n, stream, DropoutOp{rng, p, 1.0f / (1.0f - p)});
}

void LaunchScale(float* x, float s, int64_t n, cudaStream_t stream) {
  Launch1(Ref{x, DType::kF32}, Ref{x, DType::kF32}, n, stream, ScaleOp{s});
}

}  // namespace lamina::cuda
