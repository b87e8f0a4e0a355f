// CUDA kernels of the compositing ops: ATen's gpu_kernel (one fused pass,
// broadcasting, any strides) over the per-element rules shared with the CPU
// emulation (common/composite_impl.h).
#include <c10/cuda/CUDAGuard.h>
#include <torch/library.h>

#include "../common/composite_impl.h"
#include "launch.cuh"

namespace derain {
namespace {

at::Tensor min_composite_cuda(const at::Tensor& x, const at::Tensor& y) {
  const c10::cuda::OptionalCUDAGuard guard(x.device());
  return composite_impl::min_composite<CudaLaunch>(x, y);
}

std::tuple<at::Tensor, at::Tensor> min_composite_backward_cuda(const at::Tensor& grad, const at::Tensor& x,
                                                               const at::Tensor& y) {
  const c10::cuda::OptionalCUDAGuard guard(x.device());
  return composite_impl::min_composite_backward<CudaLaunch>(grad, x, y);
}

at::Tensor rain_composite_cuda(const at::Tensor& clean, const at::Tensor& rain, bool clamp) {
  const c10::cuda::OptionalCUDAGuard guard(clean.device());
  return composite_impl::rain_composite<CudaLaunch>(clean, rain, clamp);
}

at::Tensor rain_composite_backward_cuda(const at::Tensor& grad, const at::Tensor& clean, const at::Tensor& rain,
                                        bool clamp) {
  const c10::cuda::OptionalCUDAGuard guard(clean.device());
  return composite_impl::rain_composite_backward<CudaLaunch>(grad, clean, rain, clamp);
}

}  // namespace

TORCH_LIBRARY_IMPL(derain, CUDA, m) {
  m.impl("min_composite", &min_composite_cuda);
  m.impl("_min_composite_backward", &min_composite_backward_cuda);
  m.impl("rain_composite", &rain_composite_cuda);
  m.impl("_rain_composite_backward", &rain_composite_backward_cuda);
}

}  // namespace derain
