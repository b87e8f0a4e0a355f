// Autograd kernel of conv3x3, registered from C++ (common.h says why and how). It saves the
// input, the weight and the output (the activation's derivative is a function of it); the
// backward computes the needed gradients in one op (derain::_conv3x3_backward).
#include <torch/library.h>

#include <string>

#include "common.h"

namespace derain {
namespace {

using namespace autograd;
using T = const at::Tensor&;
using Grads = std::tuple<at::Tensor, at::Tensor, at::Tensor>;

at::Tensor conv3x3_op(T x, T w, T b, c10::string_view activation) {
  static const auto op = op_handle<at::Tensor(T, T, T, c10::string_view)>("derain::conv3x3");
  return op.call(x, w, b, activation);
}

Grads conv3x3_backward_op(T g, T out, T x, T w, c10::string_view activation, bool input_grad) {
  static const auto op = op_handle<Grads(T, T, T, T, c10::string_view, bool)>("derain::_conv3x3_backward");
  return op.call(g, out, x, w, activation, input_grad);
}

class Conv3x3 : public torch::autograd::Function<Conv3x3> {
 public:
  static at::Tensor forward(AutogradContext* ctx, T x, T w, T b, c10::string_view activation) {
    at::AutoDispatchBelowADInplaceOrView below;
    at::Tensor out = conv3x3_op(x, w, b, activation);
    ctx->save_for_backward({x, w, out});
    ctx->saved_data["activation"] = std::string(activation);
    return out;
  }

  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    const auto s = ctx->get_saved_variables();
    const std::string activation = ctx->saved_data["activation"].toStringRef();
    const bool input_grad = ctx->needs_input_grad(0);  // not for a network's input
    auto [gx, gw, gb] = conv3x3_backward_op(grads[0], s[2], s[0], s[1], activation, input_grad);
    return {input_grad ? gx : at::Tensor(), gw, gb, at::Tensor()};
  }
};

at::Tensor conv3x3_autograd(T x, T w, T b, c10::string_view activation) {
  if (!needs_graph({&x, &w, &b})) {
    at::AutoDispatchBelowADInplaceOrView below;
    return conv3x3_op(x, w, b, activation);
  }
  return Conv3x3::apply(x, w, b, activation);
}

}  // namespace

TORCH_LIBRARY_IMPL(derain, Autograd, m) { m.impl("conv3x3", &conv3x3_autograd); }

}  // namespace derain
