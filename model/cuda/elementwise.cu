// Elementwise kernels: dtype conversion, GELU (both forms), tanh, add, dropout (alone or before an add),
// scale.
#include "model/cuda/common.cuh"
#include "model/cuda/kernels.h"

namespace lamina::cuda {
namespace {

constexpr int kThreads = 256;

// out[i] = f(in...) over a grid-stride loop; F maps floats to a float.
template <typename TO, typename TA, typename F>
__global__ void Map1(const TA* a, TO* out, int64_t n, F f) {
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x)
    out[i] = FromF<TO>(f(ToF(a[i]), i));
}

// The value as loaded: Convert's map, and Map2's default treatment of its second input (an
// ElementDropout, with the same interface, puts a dropout in front of the map instead).
struct Identity {
  __device__ float operator()(float x, int64_t) const { return x; }
  __device__ void Apply8(int64_t, float (&)[8]) const {}
};

template <typename TO, typename TA, typename TB, typename F, typename G>
__global__ void Map2(const TA* a, const TB* b, TO* out, int64_t n, F f, G g) {
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x)
    out[i] = FromF<TO>(f(ToF(a[i]), g(ToF(b[i]), i)));
}

// The same maps eight elements per thread with 16-byte accesses; n8 = n / 8.
template <typename TO, typename TA, typename F>
__global__ void Map1x8(const TA* a, TO* out, int64_t n8, F f) {
  for (int64_t j = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; j < n8;
       j += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    float v[8];
    Load8(a + 8 * j, v);
#pragma unroll
    for (int k = 0; k < 8; ++k) v[k] = f(v[k], 8 * j + k);
    Store8(out + 8 * j, v);
  }
}

template <typename TO, typename TA, typename TB, typename F, typename G>
__global__ void Map2x8(const TA* a, const TB* b, TO* out, int64_t n8, F f, G g) {
  for (int64_t j = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; j < n8;
       j += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    float v[8], w[8];
    Load8(a + 8 * j, v);
    Load8(b + 8 * j, w);
    g.Apply8(8 * j, w);
#pragma unroll
    for (int k = 0; k < 8; ++k) v[k] = f(v[k], w[k]);
    Store8(out + 8 * j, v);
  }
}

template <typename F>
void Launch1(Ref a, Ref out, int64_t n, cudaStream_t stream, F f) {
  if (n == 0) return;
  const bool wide = n % 8 == 0 && Aligned16(a.data) && Aligned16(out.data);
  LAMINA_DISPATCH_FLOAT(a.dtype, TA, LAMINA_DISPATCH_FLOAT(out.dtype, TO, {
                          if (wide) {
                            Map1x8<TO, TA><<<GridFor(n / 8, kThreads), kThreads, 0, stream>>>(
                                static_cast<const TA*>(a.data), static_cast<TO*>(out.data), n / 8, f);
                          } else {
                            Map1<TO, TA><<<GridFor(n, kThreads), kThreads, 0, stream>>>(
                                static_cast<const TA*>(a.data), static_cast<TO*>(out.data), n, f);
                          }
                        }));
  LAMINA_CUDA_CHECK_LAUNCH();
}

// out = f(a, g(b)); g (Identity, or an ElementDropout) sees the element index.
template <typename F, typename G = Identity>
void Launch2(Ref a, Ref b, Ref out, int64_t n, cudaStream_t stream, F f, G g = {}) {
  if (n == 0) return;
  const bool wide = n % 8 == 0 && Aligned16(a.data) && Aligned16(b.data) && Aligned16(out.data);
  LAMINA_DISPATCH_FLOAT(a.dtype, TA,
                        LAMINA_DISPATCH_FLOAT(b.dtype, TB, LAMINA_DISPATCH_FLOAT(out.dtype, TO, {
                                                if (wide) {
                                                  Map2x8<TO, TA, TB><<<GridFor(n / 8, kThreads), kThreads, 0, stream>>>(
                                                      static_cast<const TA*>(a.data), static_cast<const TB*>(b.data),
                                                      static_cast<TO*>(out.data), n / 8, f, g);
                                                } else {
                                                  Map2<TO, TA, TB><<<GridFor(n, kThreads), kThreads, 0, stream>>>(
                                                      static_cast<const TA*>(a.data), static_cast<const TB*>(b.data),
                                                      static_cast<TO*>(out.data), n, f, g);
                                                }
                                              })));
  LAMINA_CUDA_CHECK_LAUNCH();
}

// Dropout eight elements per thread (ElementDropout::Apply8: two Philox blocks for them instead
// of eight).
template <typename TO, typename TA>
__global__ void Dropout8Kernel(const TA* x, TO* out, int64_t n8, ElementDropout drop) {
  for (int64_t j = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; j < n8;
       j += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    float v[8];
    Load8(x + 8 * j, v);
    drop.Apply8(8 * j, v);
    Store8(out + 8 * j, v);
  }
}

template <bool kTanh>
struct GeluOp {
  __device__ float operator()(float x, int64_t) const { return kTanh ? GeluTanhValue(x) : GeluValue(x); }
};
template <bool kTanh>
struct GeluBackwardOp {
  __device__ float operator()(float g, float x) const { return g * GeluDerivativeOf<kTanh>(x); }
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
struct ScaleOp {
  float s;
  __device__ float operator()(float x, int64_t) const { return x * s; }
};

}  // namespace

void LaunchConvert(Ref src, Ref dst, int64_t n, cudaStream_t stream) { Launch1(src, dst, n, stream, Identity{}); }

void LaunchGelu(Ref x, Ref out, int64_t n, GeluForm form, cudaStream_t stream) {
  if (form == GeluForm::kTanh) Launch1(x, out, n, stream, GeluOp<true>{});
  else Launch1(x, out, n, stream, GeluOp<false>{});
}

void LaunchGeluBackward(Ref dout, Ref x, Ref dx, int64_t n, GeluForm form, cudaStream_t stream) {
  if (form == GeluForm::kTanh) Launch2(dout, x, dx, n, stream, GeluBackwardOp<true>{});
  else Launch2(dout, x, dx, n, stream, GeluBackwardOp<false>{});
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
  const ElementDropout drop(rng, p);
  if (n % 8 == 0 && Aligned16(x.data) && Aligned16(out.data)) {
    LAMINA_DISPATCH_FLOAT(x.dtype, TA, LAMINA_DISPATCH_FLOAT(out.dtype, TO, {
                            Dropout8Kernel<TO, TA><<<GridFor(n / 8, kThreads), kThreads, 0, stream>>>(
                                static_cast<const TA*>(x.data), static_cast<TO*>(out.data), n / 8, drop);
                          }));
    LAMINA_CUDA_CHECK_LAUNCH();
    return;
  }
  Launch1(x, out, n, stream, drop);
}

void LaunchAddDropout(Ref a, Ref b, float p, RngContext rng, Ref out, int64_t n, cudaStream_t stream) {
  // The 8-wide map draws the mask as Dropout8Kernel does (Apply8), the scalar one as Launch1's.
  Launch2(a, b, out, n, stream, AddOp{}, ElementDropout(rng, p));
}

void LaunchScale(float* x, float s, int64_t n, cudaStream_t stream) {
  Launch1(Ref{x, DType::kF32}, Ref{x, DType::kF32}, n, stream, ScaleOp{s});
}

}  // namespace lamina::cuda
