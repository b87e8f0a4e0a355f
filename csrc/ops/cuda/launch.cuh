// CudaLaunch: the launch policy of the shared op implementations on CUDA
// (see csrc/ops/common/launch.h). grid() is a grid-stride loop calling the
// functor once per element on the current stream; elementwise() is ATen's
// gpu_kernel (broadcasting, any strides, vectorised loads); blocks() runs phased
// thread-block functors with dynamic shared memory.
#pragma once

#include <ATen/ATen.h>
#include <ATen/cuda/CUDAContext.h>
#include <ATen/native/cuda/Loops.cuh>
#include <c10/cuda/CUDAException.h>

namespace derain {

template <typename F>
__global__ void grid_loop_kernel(int64_t n, F f) {
  const int64_t stride = int64_t(blockDim.x) * gridDim.x;
  for (int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; i < n; i += stride) f(i);
}

// Blocks of `blockDim.x` threads run f's phases with a barrier after each (see launch.h).
template <typename F>
__global__ void block_phases_kernel(int64_t n, F f) {
  extern __shared__ __align__(16) unsigned char smem[];
  const int phases = f.phases();
  for (int64_t b = blockIdx.x; b < n; b += gridDim.x) {
    for (int phase = 0; phase < phases; ++phase) {
      f(phase, b, int(threadIdx.x), smem);
      __syncthreads();
    }
  }
}

struct CudaLaunch {
  static constexpr bool is_cuda = true;

  template <typename F>
  static void grid(int64_t n, const F& f) {
    if (n <= 0) return;
    constexpr int threads = 256;
    const int64_t blocks = std::min<int64_t>((n + threads - 1) / threads, int64_t(1) << 20);
    grid_loop_kernel<F><<<static_cast<unsigned>(blocks), threads, 0, at::cuda::getCurrentCUDAStream()>>>(n, f);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  }

  template <typename F>
  static void blocks(int64_t n, int threads, int64_t smem_bytes, const F& f) {
    if (n <= 0) return;
    if (smem_bytes > 48 * 1024)  // above the default, shared memory must be asked for
      C10_CUDA_CHECK(cudaFuncSetAttribute(block_phases_kernel<F>, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                          int(smem_bytes)));
    const int64_t grid = std::min<int64_t>(n, int64_t(1) << 30);
    block_phases_kernel<F><<<static_cast<unsigned>(grid), threads, size_t(smem_bytes),
                             at::cuda::getCurrentCUDAStream()>>>(n, f);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  }

  template <typename scalar_t, typename F>
  static void elementwise(at::TensorIteratorBase& iter, const F& f) {
    at::native::gpu_kernel(iter, f);
  }
};

}  // namespace derain
