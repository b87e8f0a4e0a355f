// CUDA kernels of the total-variation sums: the shared implementation of common/related_impl.h run by
// CudaLaunch (one thread per output element, grid-stride loop).
#include <c10/cuda/CUDAGuard.h>
#include <torch/library.h>

#include "../common/related_impl.h"
#include "launch.cuh"

namespace derain {
namespace {

at::Tensor tv_sums_cuda(const at::Tensor& x, int64_t p, c10::string_view padding) {
  const c10::cuda::OptionalCUDAGuard guard(x.device());
  return related_impl::tv_sums<CudaLaunch>(x, p, padding);
}

at::Tensor tv_sums_backward_cuda(const at::Tensor& grad, const at::Tensor& x, int64_t p,
                                 c10::string_view padding) {
  const c10::cuda::OptionalCUDAGuard guard(x.device());
  return related_impl::tv_sums_backward<CudaLaunch>(grad, x, p, padding);
}

}  // namespace

TORCH_LIBRARY_IMPL(derain, CUDA, m) {
  m.impl("_tv_sums", &tv_sums_cuda);
  m.impl("_tv_sums_backward", &tv_sums_backward_cuda);
}

}  // namespace derain
