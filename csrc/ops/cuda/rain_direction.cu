// CUDA kernels of the rain-direction sums: the shared implementation of common/related_impl.h run by
// CudaLaunch (one thread per output element, grid-stride loop).
#include <c10/cuda/CUDAGuard.h>
#include <torch/library.h>

#include "../common/related_impl.h"
#include "launch.cuh"

namespace derain {
namespace {

at::Tensor rain_direction_sums_cuda(const at::Tensor& z, const at::Tensor& z_gt, const at::Tensor& kernels) {
  const c10::cuda::OptionalCUDAGuard guard(z.device());
  return related_impl::rain_direction_sums<CudaLaunch>(z, z_gt, kernels);
}

at::Tensor rain_direction_sums_backward_cuda(const at::Tensor& grad, const at::Tensor& z, const at::Tensor& z_gt,
                                             const at::Tensor& kernels) {
  const c10::cuda::OptionalCUDAGuard guard(z.device());
  return related_impl::rain_direction_sums_backward<CudaLaunch>(grad, z, z_gt, kernels);
}

}  // namespace

TORCH_LIBRARY_IMPL(derain, CUDA, m) {
  m.impl("_rain_direction_sums", &rain_direction_sums_cuda);
  m.impl("_rain_direction_sums_backward", &rain_direction_sums_backward_cuda);
}

}  // namespace derain
