// CUDA kernels of the dark channel: the shared implementation of common/related_impl.h run by
// CudaLaunch (one thread per output element, grid-stride loop).
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

}  // namespace

TORCH_LIBRARY_IMPL(derain, CUDA, m) {
  m.impl("_dark_channel", &dark_channel_cuda);
  m.impl("_dark_channel_backward", &dark_channel_backward_cuda);
}

}  // namespace derain
