// CUDA kernels of conv3x3_relu: ATen ops (common/conv_relu_impl.h), the forward as cuDNN's fused
// convolution + bias + ReLU for float32 (config fused_epilogues).
#include <c10/cuda/CUDAGuard.h>
#include <torch/library.h>

#include "../common/conv_relu_impl.h"
#include "cudnn_fused.cuh"

namespace derain {
namespace {

at::Tensor conv_relu_cuda(const at::Tensor& x, const at::Tensor& w, const at::Tensor& b,
                          const c10::optional<at::Tensor>& x2) {
  const c10::cuda::OptionalCUDAGuard guard(x.device());
  return conv_relu_impl::forward<CudnnFusedConv>(x, w, b, x2);
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor> conv_relu_backward_cuda(
    const at::Tensor& grad, const at::Tensor& out, const at::Tensor& x, const at::Tensor& w,
    const c10::optional<at::Tensor>& x2, bool input_grad) {
  const c10::cuda::OptionalCUDAGuard guard(x.device());
  return conv_relu_impl::backward(grad, out, x, w, x2, input_grad);
}

}  // namespace

TORCH_LIBRARY_IMPL(derain, CUDA, m) {
  m.impl("conv3x3_relu", &conv_relu_cuda);
  m.impl("_conv3x3_relu_backward", &conv_relu_backward_cuda);
}

}  // namespace derain
