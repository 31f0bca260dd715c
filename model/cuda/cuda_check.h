// Return-code checks for the CUDA runtime and cuBLASLt. Plain C++ (no Abseil), so that .cu files
// compiled by nvcc and .cc files compiled by the host compiler share it.
#pragma once

#include <cublasLt.h>
#include <cuda_runtime.h>

namespace lamina::cuda {

// Abort with the call, its error string and where it happened; failures here are bugs or a broken
// device, never user input.
[[noreturn]] void CudaFailed(const char* expr, const char* error, const char* file, int line);

}  // namespace lamina::cuda

#define LAMINA_CUDA_CHECK(expr)                                                               \
  do {                                                                                        \
    const cudaError_t _lamina_err = (expr);                                                   \
    if (_lamina_err != cudaSuccess)                                                           \
      ::lamina::cuda::CudaFailed(#expr, cudaGetErrorString(_lamina_err), __FILE__, __LINE__); \
  } while (0)

#define LAMINA_CUBLAS_CHECK(expr)                                                                 \
  do {                                                                                            \
    const cublasStatus_t _lamina_st = (expr);                                                     \
    if (_lamina_st != CUBLAS_STATUS_SUCCESS)                                                      \
      ::lamina::cuda::CudaFailed(#expr, cublasLtGetStatusString(_lamina_st), __FILE__, __LINE__); \
  } while (0)

// After every kernel launch: catches bad launch configurations at the launch site.
#define LAMINA_CUDA_CHECK_LAUNCH() LAMINA_CUDA_CHECK(cudaGetLastError())
