// Launchers of the fused attention kernels (model/cuda/flash_attention.cuh).
#include "model/cuda/flash_attention.cuh"
#include "model/cuda/kernels.h"

namespace lamina::cuda {
namespace {

using namespace flash;  // NOLINT: the kernels and their tile constants

void CheckFlashShape(const FlashShape& s) {
  LAMINA_KERNEL_CHECK(FlashAttentionSupports(s.head_dim));
  LAMINA_KERNEL_CHECK(s.warp_rows == 16 || s.warp_rows == 32);
  LAMINA_KERNEL_CHECK(!s.hold_key_fragments || s.warp_rows == 16);
  LAMINA_KERNEL_CHECK(s.batch > 0 && s.heads > 0 && s.seq > 0);
  LAMINA_KERNEL_CHECK(s.batch * s.heads < (1LL << 31) && s.seq < (1 << 30));
}

}  // namespace

bool FlashAttentionSupports(int64_t head_dim) { return head_dim > 0 && head_dim <= 128 && head_dim % 8 == 0; }

size_t FlashAttentionSavedBytes(const FlashShape& s) {
  return static_cast<size_t>(SavedLayout(s.batch * s.heads, s.seq).bytes);
}

void LaunchFlashAttentionForward(const FlashShape& s, const uint16_t* qkv, const int32_t* key_mask, float p,
                                 RngContext rng, uint16_t* out, void* saved, cudaStream_t stream) {
  CheckFlashShape(s);
  LAMINA_KERNEL_CHECK(Aligned16({qkv, out, saved}));
  float* lse = static_cast<float*>(saved);
  uint32_t* keep_bits = SavedLayout(s.batch * s.heads, s.seq).KeepBits(saved);
  const int T = static_cast<int>(s.seq), heads = static_cast<int>(s.heads), D = static_cast<int>(s.head_dim);
  const int H = heads * D;
  LAMINA_DISPATCH_HEAD_DIM(D, DP, LAMINA_DISPATCH_WARP_TILES(s.warp_rows, DP, MT, {
    const dim3 grid(static_cast<unsigned>(s.batch * s.heads), static_cast<unsigned>(CeilDiv(s.seq, kTile * MT)));
    LaunchWithSmem(FlashForwardKernel<DP, MT>, grid, kThreads, SmemBytes<ForwardSmem<DP, MT>>(), stream, qkv,
                   key_mask, T, heads, H, D, p, rng, out, lse, keep_bits);
  }));
}

size_t FlashAttentionBackwardScratchBytes(const FlashShape& s) { return s.batch * s.heads * s.seq * sizeof(float); }

void LaunchFlashAttentionBackward(const FlashShape& s, const uint16_t* dout, const uint16_t* qkv,
                                  const int32_t* key_mask, const uint16_t* out, const void* saved, float p,
                                  uint16_t* dqkv, void* scratch, cudaStream_t stream) {
  CheckFlashShape(s);
  LAMINA_KERNEL_CHECK(Aligned16({dout, qkv, out, dqkv, saved}));
  const float* lse = static_cast<const float*>(saved);
  const uint32_t* keep_bits = SavedLayout(s.batch * s.heads, s.seq).KeepBits(saved);
  const int T = static_cast<int>(s.seq), heads = static_cast<int>(s.heads), D = static_cast<int>(s.head_dim);
  const int H = heads * D;
  float* delta = static_cast<float*>(scratch);  // written by the dQ kernel, read by the dK/dV kernel
  const unsigned bh = static_cast<unsigned>(s.batch * s.heads);
  LAMINA_DISPATCH_HEAD_DIM(D, DP, LAMINA_DISPATCH_WARP_TILES(s.warp_rows, DP, MT, {
    const dim3 grid(bh, static_cast<unsigned>(CeilDiv(s.seq, kTile * MT)));
    LaunchWithSmem(FlashBackwardQueryKernel<DP, MT>, grid, kThreads, SmemBytes<QuerySmem<DP, MT>>(), stream, qkv,
                   key_mask, dout, out, lse, keep_bits, T, heads, H, D, p, delta, dqkv);
    LAMINA_DISPATCH_HOLD_KV(s.hold_key_fragments, DP, MT, kHold, {
      LaunchWithSmem(FlashBackwardKeyKernel<DP, MT, kHold>, grid, kThreads, SmemBytes<KeySmem<DP, MT, kHold>>(),
                     stream, qkv, key_mask, dout, lse, keep_bits, delta, T, heads, H, D, p, dqkv);
    });
  }));
}

}  // namespace lamina::cuda
