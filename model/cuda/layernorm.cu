// Launchers of the layer norm kernels (model/cuda/layernorm.cuh). dgamma/dbeta are summed over
// fixed chunks of rows and then over the chunks in order (row_sums.cuh), so they are
// deterministic.
#include <algorithm>
#include <initializer_list>

#include "model/cuda/common.cuh"
#include "model/cuda/kernels.h"
#include "model/cuda/layernorm.cuh"
#include "model/cuda/row_sums.cuh"

namespace lamina::cuda {
namespace {

using namespace layernorm;  // NOLINT: the kernels and their row layout

// Whether rows of `hidden` elements can take the register-cached 8-wide kernels.
bool WideRows(int64_t hidden, std::initializer_list<const void*> pointers) {
  return hidden % 8 == 0 && hidden <= 32 * 8 * layernorm::kMaxChunks && Aligned16(pointers);
}

unsigned RowBlocks(int64_t rows) { return static_cast<unsigned>(CeilDiv(rows, kRowsPerBlock)); }

}  // namespace

void LaunchLayerNormForward(Ref a, Ref b, float p, RngContext rng, Ref gamma, Ref beta, float eps, Ref sum, Ref out,
                            float* mean, float* rstd, int64_t rows, int64_t hidden, cudaStream_t stream) {
  if (rows == 0) return;
  LAMINA_KERNEL_CHECK(hidden > 0 && gamma.dtype == beta.dtype && p >= 0.0f && p < 1.0f);
  LAMINA_KERNEL_CHECK(b.data == nullptr || (b.dtype == a.dtype && sum.data != nullptr && sum.dtype == a.dtype));
  const bool wide = WideRows(hidden, {a.data, b.data, gamma.data, beta.data, sum.data, out.data});
  LAMINA_DISPATCH_FLOAT(a.dtype, TX,
                        LAMINA_DISPATCH_FLOAT(gamma.dtype, TW, LAMINA_DISPATCH_FLOAT(out.dtype, TO, {
                                                auto kernel = wide ? LayerNormForward8Kernel<TX, TW, TO>
                                                                   : LayerNormForwardKernel<TX, TW, TO>;
                                                kernel<<<RowBlocks(rows), kRowsPerBlock * 32, 0, stream>>>(
                                                    static_cast<const TX*>(a.data), static_cast<const TX*>(b.data),
                                                    ElementDropout(rng, p), static_cast<const TW*>(gamma.data),
                                                    static_cast<const TW*>(beta.data), eps, static_cast<TX*>(sum.data),
                                                    static_cast<TO*>(out.data), mean, rstd, rows, hidden);
                                              })));
  LAMINA_CUDA_CHECK_LAUNCH();
}

size_t LayerNormBackwardScratchBytes(int64_t rows, int64_t hidden) {
  return static_cast<size_t>(2 * CeilDiv(rows, row_sums::kChunkRows) * hidden) * sizeof(float);
}

void LaunchLayerNormBackward(Ref dout, Ref x, Ref gamma, const float* mean, const float* rstd, Ref dx, bool accumulate,
                             float* dgamma, float* dbeta, float p, RngContext rng, Ref dropped, int64_t rows,
                             int64_t hidden, void* scratch, cudaStream_t stream) {
  if (rows == 0 || hidden == 0) return;
  LAMINA_KERNEL_CHECK(p >= 0.0f && p < 1.0f && (dropped.data == nullptr || dropped.dtype == dx.dtype));
  const int64_t chunks = CeilDiv(rows, row_sums::kChunkRows);
  float* partial = static_cast<float*>(scratch);
  const ElementDropout drop(rng, p);
  LAMINA_DISPATCH_FLOAT(
      dout.dtype, TG,
      LAMINA_DISPATCH_FLOAT(
          x.dtype, TX,
          LAMINA_DISPATCH_FLOAT(
              gamma.dtype, TW, LAMINA_DISPATCH_FLOAT(dx.dtype, TD, {
                const auto* g = static_cast<const TG*>(dout.data);
                const auto* xs = static_cast<const TX*>(x.data);
                const auto* w = static_cast<const TW*>(gamma.data);
                if (WideRows(hidden, {dout.data, x.data, gamma.data, dx.data, dropped.data})) {
                  LaunchWithSmem(BackwardKernelFor<TG, TX, TW, TD>(hidden), dim3(static_cast<unsigned>(chunks)),
                                 kRowsPerBlock * 32, BackwardSmemBytes(hidden), stream, g, xs, w, mean, rstd,
                                 static_cast<TD*>(dx.data), accumulate, drop, static_cast<TD*>(dropped.data), partial,
                                 rows, hidden);
                } else {
                  // The parameter sums read dout first: dx may alias it.
                  const int width = std::min(VectorWidth(dout.data, hidden, hidden, DTypeSize(dout.dtype)),
                                             VectorWidth(x.data, hidden, hidden, DTypeSize(x.dtype)));
                  LAMINA_DISPATCH_WIDTH(width, V, {
                    const dim3 grid(static_cast<unsigned>(CeilDiv(hidden, 32 * V)), static_cast<unsigned>(chunks));
                    row_sums::LayerNormParamPartialKernel<V, TG, TX>
                        <<<grid, row_sums::kThreads, row_sums::SmemBytes(V, 2), stream>>>(g, xs, mean, rstd, partial,
                                                                                          rows, hidden, chunks);
                  });
                  LAMINA_CUDA_CHECK_LAUNCH();
                  LayerNormBackwardDxKernel<TG, TX, TW, TD><<<RowBlocks(rows), kRowsPerBlock * 32, 0, stream>>>(
                      g, xs, w, mean, rstd, static_cast<TD*>(dx.data), accumulate, drop, static_cast<TD*>(dropped.data),
                      rows, hidden);
                  LAMINA_CUDA_CHECK_LAUNCH();
                }
              }))));
  LaunchChunkFinalize(partial, 1.0f, dgamma, chunks, hidden, stream);
  LaunchChunkFinalize(partial + chunks * hidden, 1.0f, dbeta, chunks, hidden, stream);
}

}  // namespace lamina::cuda
