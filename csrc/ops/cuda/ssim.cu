// CUDA kernels of SSIM: the shared implementation of common/ssim_impl.h (blurs,
// SSIM terms and derivatives, transposed blurs, one thread per element) run by
// CudaLaunch; the means of the reductions are ATen sums in float64.
#include <c10/cuda/CUDAGuard.h>
#include <torch/library.h>

#include "../common/ssim_impl.h"
#include "launch.cuh"

namespace derain {
namespace {

at::Tensor ssim_cuda(const at::Tensor& x, const at::Tensor& y, int64_t window_size, double sigma,
                     double data_range, c10::string_view padding, c10::string_view reduction, double k1, double k2) {
  const c10::cuda::OptionalCUDAGuard guard(x.device());
  return ssim_impl::ssim<CudaLaunch>(x, y, window_size, sigma, data_range, padding, reduction, k1, k2);
}

std::tuple<at::Tensor, at::Tensor> ssim_backward_cuda(const at::Tensor& grad, const at::Tensor& x,
                                                      const at::Tensor& y, int64_t window_size, double sigma,
                                                      double data_range, c10::string_view padding,
                                                      c10::string_view reduction, double k1, double k2) {
  const c10::cuda::OptionalCUDAGuard guard(x.device());
  return ssim_impl::ssim_backward<CudaLaunch>(grad, x, y, window_size, sigma, data_range, padding, reduction, k1,
                                              k2);
}

at::Tensor ssim_backward_x_cuda(const at::Tensor& grad, const at::Tensor& x, const at::Tensor& y,
                                int64_t window_size, double sigma, double data_range, c10::string_view padding,
                                c10::string_view reduction, double k1, double k2) {
  const c10::cuda::OptionalCUDAGuard guard(x.device());
  return ssim_impl::ssim_backward_x<CudaLaunch>(grad, x, y, window_size, sigma, data_range, padding, reduction, k1,
                                                k2);
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> ssim_with_grad_cuda(const at::Tensor& x, const at::Tensor& y,
                                                                   int64_t window_size, double sigma,
                                                                   double data_range, c10::string_view padding,
                                                                   c10::string_view reduction, double k1, double k2,
                                                                   bool need_y) {
  const c10::cuda::OptionalCUDAGuard guard(x.device());
  return ssim_impl::ssim_with_grad<CudaLaunch>(x, y, window_size, sigma, data_range, padding, reduction, k1, k2,
                                               need_y);
}

}  // namespace

TORCH_LIBRARY_IMPL(derain, CUDA, m) {
  m.impl("ssim", &ssim_cuda);
  m.impl("_ssim_backward", &ssim_backward_cuda);
  m.impl("_ssim_backward_x", &ssim_backward_x_cuda);
  m.impl("_ssim_with_grad", &ssim_with_grad_cuda);
}

}  // namespace derain
