// conv3x3 on ATen ops: activation(conv2d(x, weight, bias, padding=1)) and its backward through
// convolution_backward. The fallback of every device without a kernel of its own
// (CompositeExplicitAutograd, conv3x3.cpp: CUDA included), and the CPU kernel's path for shapes
// its few-output-channel loops do not take (cpu/conv3x3_kernel.cpp).
#pragma once

#include <ATen/ATen.h>

#include <string>

namespace derain {
namespace conv3x3_impl {

enum class Activation { None, Relu, Tanh };

inline Activation parse_activation(c10::string_view name) {
  if (name == "none") return Activation::None;
  if (name == "relu") return Activation::Relu;
  if (name == "tanh") return Activation::Tanh;
  TORCH_CHECK(false, "derain: activation must be 'none', 'relu' or 'tanh', got '", std::string(name), "'");
  return Activation::None;
}

inline at::MemoryFormat out_format(const at::Tensor& x) {
  return x.dim() == 4 && x.is_contiguous(at::MemoryFormat::ChannelsLast) && !x.is_contiguous()
             ? at::MemoryFormat::ChannelsLast
             : at::MemoryFormat::Contiguous;
}

inline at::Tensor activate(const at::Tensor& z, Activation a) {
  return a == Activation::Relu ? at::relu(z) : a == Activation::Tanh ? at::tanh(z) : z;
}

// The gradient before the activation, from the activation's output: relu' = [out > 0],
// tanh' = 1 - out^2.
inline at::Tensor pre_activation_grad(const at::Tensor& grad, const at::Tensor& out, Activation a) {
  if (a == Activation::Relu) return at::threshold_backward(grad, out, 0);
  if (a == Activation::Tanh) return at::tanh_backward(grad, out);
  return grad;
}

inline at::Tensor forward(const at::Tensor& x, const at::Tensor& w, const at::Tensor& b, c10::string_view activation) {
  const Activation a = parse_activation(activation);
  TORCH_CHECK(x.dim() == 4, "derain: x must be (N, C, H, W)");
  if (x.size(2) == 0 || x.size(3) == 0)  // conv2d refuses empty images
    return at::zeros({x.size(0), w.size(0), x.size(2), x.size(3)}, x.options()).contiguous(out_format(x));
  return activate(at::conv2d(x, w, b, 1, 1), a).contiguous(out_format(x));
}

inline std::tuple<at::Tensor, at::Tensor, at::Tensor> backward(const at::Tensor& grad, const at::Tensor& out,
                                                               const at::Tensor& x, const at::Tensor& w,
                                                               c10::string_view activation, bool input_grad) {
  const Activation a = parse_activation(activation);
  if (x.numel() == 0 || out.numel() == 0)
    return {input_grad ? at::zeros_like(x) : at::empty({0}, x.options()), at::zeros_like(w),
            at::zeros({w.size(0)}, w.options())};
  const at::Tensor gz = pre_activation_grad(grad, out, a);
  auto [gx, gw, gb] = at::convolution_backward(gz, x, w, at::OptionalIntArrayRef({w.size(0)}), {1, 1}, {1, 1},
                                               {1, 1}, false, {0, 0}, 1, {input_grad, true, true});
  return {input_grad ? gx.contiguous(out_format(x)) : at::empty({0}, x.options()), gw.contiguous(), gb.contiguous()};
}

}  // namespace conv3x3_impl
}  // namespace derain
