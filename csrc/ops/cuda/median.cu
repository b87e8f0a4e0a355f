// CUDA kernels of the median filter: the selection of common/median_impl.h run by CudaLaunch
// (the tiled selection, one thread block per output tile, or the per-pixel fallback); the
// backward sums the routed gradients with scatter_add (atomic adds: equal to the CPU's up to
// round-off, not run-to-run deterministic).
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

std::tuple<at::Tensor, at::Tensor> median_filter_with_index_cuda(const at::Tensor& x, at::IntArrayRef kernel_size,
                                                                 c10::string_view padding) {
  const c10::cuda::OptionalCUDAGuard guard(x.device());
  return median_impl::median_filter_with_index<CudaLaunch>(x, kernel_size, padding);
}

}  // namespace

TORCH_LIBRARY_IMPL(derain, CUDA, m) {
  m.impl("median_filter", &median_filter_cuda);
  m.impl("_median_filter_backward", &median_filter_backward_cuda);
  m.impl("_median_filter_with_index", &median_filter_with_index_cuda);
}

}  // namespace derain
