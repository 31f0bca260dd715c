// Embedding lookup and its deterministic backward.
#include <algorithm>

#include <cub/device/device_radix_sort.cuh>

#include "model/cuda/common.cuh"
#include "model/cuda/kernels.h"
#include "model/cuda/row_sums.cuh"

namespace lamina::cuda {
namespace {

constexpr int kThreads = 256;
constexpr int64_t kTypeChunkRows = 128;  // rows per partial sum of the token-type gradient
constexpr int64_t kRunBlocks = 1024;     // blocks of the word-gradient kernel (about 8 per SM of an H100)

template <typename TW, typename TO>
__global__ void EmbeddingForwardKernel(const int32_t* ids, const int32_t* type_ids, const TW* word, const TW* pos,
                                       const TW* type, float scale, TO* out, int64_t seq, int64_t hidden) {
  const int64_t n = blockIdx.x;
  const TW* wr = word + static_cast<int64_t>(ids[n]) * hidden;
  const TW* pr = pos + (n % seq) * hidden;
  const TW* tr = type + static_cast<int64_t>(type_ids[n]) * hidden;
  TO* orow = out + n * hidden;
  for (int64_t c = threadIdx.x; c < hidden; c += blockDim.x)
    orow[c] = FromF<TO>((ToF(wr[c]) + ToF(pr[c]) + ToF(tr[c])) * scale);
}

__global__ void IotaKernel(int32_t* x, int64_t n) {
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x)
    x[i] = static_cast<int32_t>(i);
}

// dpos[t] += sum over b of dout[b * seq + t], one thread per (t, c), b in order.
template <typename TG>
__global__ void PositionSumKernel(const TG* dout, float scale, float* dpos, int64_t batch, int64_t seq,
                                  int64_t hidden) {
  const int64_t n = seq * hidden;
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    float acc = 0.0f;
    for (int64_t b = 0; b < batch; ++b) acc += ToF(dout[b * n + i]);
    dpos[i] += acc * scale;
  }
}

// partial[chunk][type][c] = sum of the chunk's rows of that type; one thread per (chunk, c).
template <typename TG>
__global__ void TypePartialKernel(const int32_t* type_ids, const TG* dout, float* partial, int64_t rows, int64_t hidden,
                                  int64_t type_vocab) {
  const int64_t chunk = blockIdx.y;
  const int64_t c = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x;
  if (c >= hidden) return;
  float* part = partial + chunk * type_vocab * hidden;
  for (int64_t t = 0; t < type_vocab; ++t) part[t * hidden + c] = 0.0f;
  const int64_t end = min(rows, (chunk + 1) * kTypeChunkRows);
  for (int64_t r = chunk * kTypeChunkRows; r < end; ++r) part[type_ids[r] * hidden + c] += ToF(dout[r * hidden + c]);
}

size_t RoundUp256(size_t n) { return (n + 255) / 256 * 256; }

size_t SortTempBytes(int64_t rows) {
  size_t bytes = 0;
  LAMINA_CUDA_CHECK(cub::DeviceRadixSort::SortPairs(
      nullptr, bytes, static_cast<const int32_t*>(nullptr), static_cast<int32_t*>(nullptr),
      static_cast<const int32_t*>(nullptr), static_cast<int32_t*>(nullptr), static_cast<int>(rows)));
  return bytes;
}

}  // namespace

void LaunchEmbeddingForward(const int32_t* ids, const int32_t* type_ids, Ref word, Ref pos, Ref type, float scale,
                            Ref out, int64_t rows, int64_t seq, int64_t hidden, cudaStream_t stream) {
  if (rows == 0 || hidden == 0) return;
  LAMINA_KERNEL_CHECK(word.dtype == pos.dtype && word.dtype == type.dtype);
  LAMINA_DISPATCH_FLOAT(word.dtype, TW, LAMINA_DISPATCH_FLOAT(out.dtype, TO, {
                          EmbeddingForwardKernel<TW, TO><<<static_cast<unsigned>(rows), kThreads, 0, stream>>>(
                              ids, type_ids, static_cast<const TW*>(word.data), static_cast<const TW*>(pos.data),
                              static_cast<const TW*>(type.data), scale, static_cast<TO*>(out.data), seq, hidden);
                        }));
  LAMINA_CUDA_CHECK_LAUNCH();
}

size_t EmbeddingBackwardScratchBytes(int64_t rows, int64_t hidden, int64_t type_vocab) {
  const size_t ints = RoundUp256(static_cast<size_t>(rows) * sizeof(int32_t));
  const size_t type_partial =
      RoundUp256(static_cast<size_t>(CeilDiv(rows, kTypeChunkRows) * type_vocab * hidden) * sizeof(float));
  return 3 * ints + type_partial + RoundUp256(SortTempBytes(rows));
}

void LaunchEmbeddingBackward(const int32_t* ids, const int32_t* type_ids, Ref dout, float scale, float* dword,
                             float* dpos, float* dtype, int64_t rows, int64_t seq, int64_t hidden, int64_t vocab,
                             int64_t type_vocab, void* scratch, size_t scratch_bytes, cudaStream_t stream) {
  if (rows == 0 || hidden == 0) return;
  LAMINA_KERNEL_CHECK(scratch_bytes >= EmbeddingBackwardScratchBytes(rows, hidden, type_vocab));
  char* s = static_cast<char*>(scratch);
  const size_t ints = RoundUp256(static_cast<size_t>(rows) * sizeof(int32_t));
  int32_t* order_in = reinterpret_cast<int32_t*>(s);
  int32_t* order_out = reinterpret_cast<int32_t*>(s + ints);
  int32_t* sorted_ids = reinterpret_cast<int32_t*>(s + 2 * ints);
  float* type_partial = reinterpret_cast<float*>(s + 3 * ints);
  const int64_t chunks = CeilDiv(rows, kTypeChunkRows);
  void* sort_temp = s + 3 * ints + RoundUp256(static_cast<size_t>(chunks * type_vocab * hidden) * sizeof(float));
  size_t sort_bytes = SortTempBytes(rows);

  IotaKernel<<<GridFor(rows, kThreads), kThreads, 0, stream>>>(order_in, rows);
  LAMINA_CUDA_CHECK_LAUNCH();
  int end_bit = 1;
  while ((int64_t{1} << end_bit) < vocab && end_bit < 31) ++end_bit;
  LAMINA_CUDA_CHECK(cub::DeviceRadixSort::SortPairs(sort_temp, sort_bytes, ids, sorted_ids, order_in, order_out,
                                                    static_cast<int>(rows), 0, end_bit, stream));
  const int64_t batch = rows / seq;
  LAMINA_DISPATCH_FLOAT(dout.dtype, TG, {
    const TG* g = static_cast<const TG*>(dout.data);
    // Enough blocks to fill the GPU; each walks the sorted positions with a grid stride.
    const unsigned run_blocks = static_cast<unsigned>(std::min<int64_t>(rows, kRunBlocks));
    LAMINA_DISPATCH_WIDTH(VectorWidth(g, hidden, hidden, sizeof(TG)), V, {
      row_sums::WordRunSumKernel<V, TG><<<run_blocks, row_sums::kThreads, row_sums::SmemBytes(V, 1), stream>>>(
          sorted_ids, order_out, g, scale, dword, rows, hidden);
    });
    LAMINA_CUDA_CHECK_LAUNCH();
    PositionSumKernel<TG><<<GridFor(seq * hidden, kThreads), kThreads, 0, stream>>>(g, scale, dpos, batch, seq, hidden);
    LAMINA_CUDA_CHECK_LAUNCH();
    const dim3 grid(static_cast<unsigned>(CeilDiv(hidden, kThreads)), static_cast<unsigned>(chunks));
    TypePartialKernel<TG><<<grid, kThreads, 0, stream>>>(type_ids, g, type_partial, rows, hidden, type_vocab);
    LAMINA_CUDA_CHECK_LAUNCH();
  });
  // The chunks' [type_vocab, hidden] partials summed in chunk order, as a column sum of that width.
  const int64_t type_cols = type_vocab * hidden;
  LaunchChunkFinalize(type_partial, scale, dtype, chunks, type_cols, stream);
}

}  // namespace lamina::cuda
