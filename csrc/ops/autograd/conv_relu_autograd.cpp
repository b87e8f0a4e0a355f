// Autograd kernel of conv3x3_relu, registered from C++ (common.h says why and how). It saves the
// inputs, the weight and the output (whose sign is the ReLU's mask); the backward computes every
// needed gradient in one op (derain::_conv3x3_relu_backward).
#include <torch/library.h>

#include "common.h"

namespace derain {
namespace {

using namespace autograd;
using T = const at::Tensor&;
using OptT = const c10::optional<at::Tensor>&;
using Grads = std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor>;

at::Tensor conv_relu_op(T x, T w, T b, OptT x2) {
  static const auto op = op_handle<at::Tensor(T, T, T, OptT)>("derain::conv3x3_relu");
  return op.call(x, w, b, x2);
}

Grads conv_relu_backward_op(T g, T out, T x, T w, OptT x2, bool input_grad) {
  static const auto op = op_handle<Grads(T, T, T, T, OptT, bool)>("derain::_conv3x3_relu_backward");
  return op.call(g, out, x, w, x2, input_grad);
}

class ConvRelu : public torch::autograd::Function<ConvRelu> {
 public:
  static at::Tensor forward(AutogradContext* ctx, T x, T w, T b, OptT x2) {
    at::AutoDispatchBelowADInplaceOrView below;
    at::Tensor out = conv_relu_op(x, w, b, x2);
    ctx->save_for_backward({x, w, out, x2 ? *x2 : at::Tensor()});
    return out;
  }

  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    const auto s = ctx->get_saved_variables();
    const c10::optional<at::Tensor> x2 = s[3].defined() ? c10::optional<at::Tensor>(s[3]) : c10::nullopt;
    // no input gradient where no input needs one (a network's first layer): that adjoint
    // convolution is half of such a layer's backward
    const bool input_grad = ctx->needs_input_grad(0) || (x2 && ctx->needs_input_grad(3));
    auto [gx, gx2, gw, gb] = conv_relu_backward_op(grads[0], s[2], s[0], s[1], x2, input_grad);
    if (!input_grad) return {at::Tensor(), gw, gb, at::Tensor()};
    return {gx, gw, gb, x2 ? gx2 : at::Tensor()};
  }
};

at::Tensor conv_relu_autograd(T x, T w, T b, OptT x2) {
  const at::Tensor none;
  if (!needs_graph({&x, &w, &b, x2 ? &*x2 : &none})) {
    at::AutoDispatchBelowADInplaceOrView below;
    return conv_relu_op(x, w, b, x2);
  }
  return ConvRelu::apply(x, w, b, x2);
}

}  // namespace

TORCH_LIBRARY_IMPL(derain, Autograd, m) { m.impl("conv3x3_relu", &conv_relu_autograd); }

}  // namespace derain
