// CUDA kernels of the dark channel, total variation and rain-direction ops: the
// shared implementations of common/related_impl.h run by CudaLaunch (one thread
// per output element, grid-stride loop).
#include <c10/cuda/CUDAGuard.h>
#include <torch/library.h>

#include "../common/related_impl.h"
#include "launch.cuh"

namespace derain {
namespace {

std::tuple<at::Tensor, at::Tensor> dark_channel_cuda(const at::Tensor& x, int64_t patch) {
  const c10::cuda::OptionalCUDAGuard guard(x.device());
  return related_impl::dark_channel<CudaLaunch>(x, patch);
}

at::Tensor dark_channel_backward_cuda(const at::Tensor& grad, const at::Tensor& index, int64_t channels) {
  const c10::cuda::OptionalCUDAGuard guard(grad.device());
  return related_impl::dark_channel_backward<CudaLaunch>(grad, index, channels);
}

at::Tensor tv_sums_cuda(const at::Tensor& x, int64_t p, c10::string_view padding) {
  const c10::cuda::OptionalCUDAGuard guard(x.device());
  return related_impl::tv_sums<CudaLaunch>(x, p, padding);
}

at::Tensor tv_sums_backward_cuda(const at::Tensor& grad, const at::Tensor& x, int64_t p,
                                 c10::string_view padding) {
  const c10::cuda::OptionalCUDAGuard guard(x.device());
  return related_impl::tv_sums_backward<CudaLaunch>(grad, x, p, padding);
}

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
  m.impl("dark_channel", &dark_channel_cuda);
  m.impl("dark_channel_backward", &dark_channel_backward_cuda);
  m.impl("tv_sums", &tv_sums_cuda);
  m.impl("tv_sums_backward", &tv_sums_backward_cuda);
  m.impl("rain_direction_sums", &rain_direction_sums_cuda);
  m.impl("rain_direction_sums_backward", &rain_direction_sums_backward_cuda);
}

}  // namespace derain
