// CUDA kernels of conv3x3: ATen ops (common/conv3x3_impl.h: cuDNN's convolution, then the
// activation), registered here so that every op with a CPU kernel has a compiled CUDA one.
#include <c10/cuda/CUDAGuard.h>
#include <torch/library.h>

#include "../common/conv3x3_impl.h"

namespace derain {
namespace {

at::Tensor conv3x3_cuda(const at::Tensor& x, const at::Tensor& w, const at::Tensor& b, c10::string_view activation) {
  const c10::cuda::OptionalCUDAGuard guard(x.device());
  return conv3x3_impl::forward(x, w, b, activation);
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> conv3x3_backward_cuda(const at::Tensor& grad, const at::Tensor& out,
                                                                    const at::Tensor& x, const at::Tensor& w,
                                                                    c10::string_view activation, bool input_grad) {
  const c10::cuda::OptionalCUDAGuard guard(x.device());
  return conv3x3_impl::backward(grad, out, x, w, activation, input_grad);
}

}  // namespace

TORCH_LIBRARY_IMPL(derain, CUDA, m) {
  m.impl("conv3x3", &conv3x3_cuda);
  m.impl("_conv3x3_backward", &conv3x3_backward_cuda);
}

}  // namespace derain
