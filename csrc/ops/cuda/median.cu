// CUDA kernels of the median filter: the exact per-pixel selection of
// common/median_impl.h run by CudaLaunch (one thread per output pixel); the
// backward sums the routed gradients with index_add_ (atomic adds: equal to
// the CPU's up to round-off, not run-to-run deterministic).
#include <c10/cuda/CUDAGuard.h>
#include <torch/library.h>

#include "../common/median_impl.h"
#include "launch.cuh"

namespace derain {
namespace {

at::Tensor median_filter_cuda(const at::Tensor& x, at::IntArrayRef kernel_size, c10::string_view padding) {
  const c10::cuda::OptionalCUDAGuard guard(x.device());
  return median_impl::median_filter<CudaLaunch>(x, kernel_size, padding);
}

at::Tensor median_filter_backward_cuda(const at::Tensor& grad, const at::Tensor& x, at::IntArrayRef kernel_size,
                                       c10::string_view padding) {
  const c10::cuda::OptionalCUDAGuard guard(x.device());
  return median_impl::median_filter_backward<CudaLaunch>(grad, x, kernel_size, padding);
}

}  // namespace

TORCH_LIBRARY_IMPL(derain, CUDA, m) {
  m.impl("median_filter", &median_filter_cuda);
  m.impl("_median_filter_backward", &median_filter_backward_cuda);
}

}  // namespace derain
