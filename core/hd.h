// Marks functions that compile for both host and device (nvcc) and plain host otherwise.
#pragma once

#if defined(__CUDACC__)
#define LAMINA_HD __host__ __device__ __forceinline__
#else
#define LAMINA_HD inline
#endif
