// conv3x3_relu on ATen ops: relu(conv2d(cat(x, x2), weight, bias, padding=1)) and its backward
// through convolution_backward. The CUDA kernels (cuda/conv_relu.cu, with cuDNN's fused
// convolution + bias + ReLU for the forward) and the fallback of other devices
// (CompositeExplicitAutograd, conv_relu.cpp) run it; the CPU kernel is cpu/conv_relu_kernel.cpp.
#pragma once

#include <ATen/ATen.h>

#include "block_impl.h"

namespace derain {
namespace conv_relu_impl {

inline at::MemoryFormat out_format(const at::Tensor& x) {
  return x.dim() == 4 && x.is_contiguous(at::MemoryFormat::ChannelsLast) && !x.is_contiguous()
             ? at::MemoryFormat::ChannelsLast
             : at::MemoryFormat::Contiguous;
}

inline at::Tensor input(const at::Tensor& x, const c10::optional<at::Tensor>& x2) {
  return x2 ? at::cat({x, *x2}, 1) : x;
}

template <typename C = block_impl::AtenConv>
at::Tensor forward(const at::Tensor& x, const at::Tensor& w, const at::Tensor& b, const c10::optional<at::Tensor>& x2) {
  TORCH_CHECK(x.dim() == 4 && (!x2 || x2->dim() == 4), "derain: x and x2 must be (N, C, H, W)");
  return C::conv_relu(input(x, x2), w, b, 1).contiguous(out_format(x));
}

inline std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor> backward(const at::Tensor& grad,
                                                                          const at::Tensor& out, const at::Tensor& x,
                                                                          const at::Tensor& w,
                                                                          const c10::optional<at::Tensor>& x2,
                                                                          bool input_grad = true) {
  const at::Tensor gz = at::threshold_backward(grad, out, 0);
  auto [gin, gw, gb] = at::convolution_backward(gz, input(x, x2), w, at::OptionalIntArrayRef({w.size(0)}), {1, 1},
                                                {1, 1}, {1, 1}, false, {0, 0}, 1, {input_grad, true, true});
  if (!input_grad) return {at::empty({0}, x.options()), at::empty({0}, x.options()), gw.contiguous(), gb.contiguous()};
  const int64_t C1 = x.size(1);
  at::Tensor gx = gin.narrow(1, 0, C1).contiguous(out_format(x));
  at::Tensor gx2 = x2 ? gin.narrow(1, C1, x2->size(1)).contiguous(out_format(*x2)) : at::empty({0}, x.options());
  return {gx, gx2, gw.contiguous(), gb.contiguous()};
}

}  // namespace conv_relu_impl
}  // namespace derain
