// Runs tests/cuda/mma_probe.cuh's kernel on the GPU, for mma_probe_test.cc.
#include <cuda_runtime.h>

#include <vector>

#include "model/cuda/cuda_check.h"
#include "tests/cuda/mma_probe.cuh"

namespace lamina::cuda::probe {

bool RunMmaProbeOnGpu(const std::vector<uint16_t>& a, const std::vector<uint16_t>& bt, const std::vector<uint16_t>& b,
                      std::vector<float>& abt, std::vector<float>& ab, std::vector<float>& chain) {
  int devices = 0;
  if (cudaGetDeviceCount(&devices) != cudaSuccess || devices == 0) {
    (void)cudaGetLastError();  // clear the sticky "no device" error
    return false;
  }
  uint16_t* d_in = nullptr;
  float* d_out = nullptr;
  const size_t in_elems = a.size() + bt.size() + b.size();
  LAMINA_CUDA_CHECK(cudaMalloc(&d_in, in_elems * sizeof(uint16_t)));
  LAMINA_CUDA_CHECK(cudaMalloc(&d_out, 3 * 256 * sizeof(float)));
  LAMINA_CUDA_CHECK(cudaMemcpy(d_in, a.data(), a.size() * 2, cudaMemcpyHostToDevice));
  LAMINA_CUDA_CHECK(cudaMemcpy(d_in + a.size(), bt.data(), bt.size() * 2, cudaMemcpyHostToDevice));
  LAMINA_CUDA_CHECK(cudaMemcpy(d_in + a.size() + bt.size(), b.data(), b.size() * 2, cudaMemcpyHostToDevice));
  MmaProbeKernel<<<1, 32, MmaProbeSmemBytes()>>>(d_in, d_in + a.size(), d_in + a.size() + bt.size(), d_out,
                                                  d_out + 256, d_out + 512);
  LAMINA_CUDA_CHECK_LAUNCH();
  std::vector<float> out(3 * 256);
  LAMINA_CUDA_CHECK(cudaMemcpy(out.data(), d_out, out.size() * sizeof(float), cudaMemcpyDeviceToHost));
  LAMINA_CUDA_CHECK(cudaFree(d_in));
  LAMINA_CUDA_CHECK(cudaFree(d_out));
  abt.assign(out.begin(), out.begin() + 256);
  ab.assign(out.begin() + 256, out.begin() + 512);
  chain.assign(out.begin() + 512, out.end());
  return true;
}

}  // namespace lamina::cuda::probe
