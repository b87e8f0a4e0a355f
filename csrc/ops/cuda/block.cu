// CUDA kernels of the self-correcting block and of the fused inference of G: cuDNN convolutions
// through ATen (common/block_impl.h, the same code the CPU emulation runs), with their bias, ReLU
// and the block's residual add fused into the convolution by cuDNN for float32 (config
// fused_epilogues; off, or for float64 / without cuDNN: ATen's element-wise epilogues).
#include <c10/cuda/CUDAGuard.h>
#include <torch/library.h>

#include "../common/block_impl.h"
#include "cudnn_fused.cuh"

namespace derain {
namespace {

at::Tensor block_cuda(const at::Tensor& x, const at::Tensor& w1, const at::Tensor& b1, const at::Tensor& w3,
                      const at::Tensor& b3, int64_t dilation) {
  const c10::cuda::OptionalCUDAGuard guard(x.device());
  return block_impl::self_correcting_block<CudnnFusedConv>(x, w1, b1, w3, b3, dilation);
}

std::tuple<at::Tensor, at::Tensor> block_train_cuda(const at::Tensor& x, const at::Tensor& w1, const at::Tensor& b1,
                                                    const at::Tensor& w3, const at::Tensor& b3, int64_t dilation) {
  const c10::cuda::OptionalCUDAGuard guard(x.device());
  return block_impl::self_correcting_block_train<CudnnFusedConv>(x, w1, b1, w3, b3, dilation);
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor> block_backward_cuda(
    const at::Tensor& grad, const at::Tensor& x, const at::Tensor& out, const at::Tensor& w1, const at::Tensor& b1,
    const at::Tensor& w3, const at::Tensor& b3, int64_t dilation) {
  const c10::cuda::OptionalCUDAGuard guard(x.device());
  return block_impl::self_correcting_block_backward(grad, x, out, w1, b1, w3, b3, dilation);
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor> block_backward_la_cuda(
    const at::Tensor& grad, const at::Tensor& x, const at::Tensor& la, const at::Tensor& w1, const at::Tensor& w3,
    int64_t dilation) {
  const c10::cuda::OptionalCUDAGuard guard(x.device());
  return block_impl::self_correcting_block_backward_la(grad, x, la, w1, w3, dilation);
}

at::Tensor network_cuda(const at::Tensor& x, at::TensorList params, int64_t dilation) {
  const c10::cuda::OptionalCUDAGuard guard(x.device());
  return block_impl::rain_oer_me_derain<CudnnFusedConv>(x, params, dilation);
}

}  // namespace

TORCH_LIBRARY_IMPL(derain, CUDA, m) {
  m.impl("self_correcting_block", &block_cuda);
  m.impl("_self_correcting_block_backward", &block_backward_cuda);
  m.impl("_self_correcting_block_train", &block_train_cuda);
  m.impl("_self_correcting_block_backward_la", &block_backward_la_cuda);
  m.impl("_rain_oer_me_derain", &network_cuda);
}

}  // namespace derain
