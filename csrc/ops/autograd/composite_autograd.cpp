// Autograd kernels of min_composite and rain_composite, registered from C++.
//
// Why C++: a Python-registered autograd kernel (torch.library.register_autograd) is entered on
// every call, even when no input requires grad, and costs ≈ 3 µs of a ≈ 4.5 µs call on tiny
// tensors (docs/design/call-cost.md); these element-wise ops are the ones most often called on
// small tensors. One kernel for every device (the Autograd alias key): the forward and backward
// run the device kernels through the dispatcher. Gradients of broadcast inputs are summed back to
// the input shapes; the backward ops keep their own (Python-registered) autograd, so double
// backward works as before.
#include <torch/library.h>

#include "common.h"

namespace derain {
namespace {

using namespace autograd;

at::Tensor min_composite_op(const at::Tensor& x, const at::Tensor& y) {
  static const auto op = op_handle<at::Tensor(const at::Tensor&, const at::Tensor&)>("derain::min_composite");
  return op.call(x, y);
}

std::tuple<at::Tensor, at::Tensor> min_composite_backward_op(const at::Tensor& g, const at::Tensor& x,
                                                             const at::Tensor& y) {
  static const auto op = op_handle<std::tuple<at::Tensor, at::Tensor>(const at::Tensor&, const at::Tensor&,
                                                                      const at::Tensor&)>("derain::_min_composite_backward");
  return op.call(g, x, y);
}

at::Tensor rain_composite_op(const at::Tensor& clean, const at::Tensor& rain, bool clamp) {
  static const auto op = op_handle<at::Tensor(const at::Tensor&, const at::Tensor&, bool)>("derain::rain_composite");
  return op.call(clean, rain, clamp);
}

at::Tensor rain_composite_backward_op(const at::Tensor& g, const at::Tensor& clean, const at::Tensor& rain,
                                      bool clamp) {
  static const auto op = op_handle<at::Tensor(const at::Tensor&, const at::Tensor&, const at::Tensor&, bool)>(
      "derain::_rain_composite_backward");
  return op.call(g, clean, rain, clamp);
}

class MinComposite : public torch::autograd::Function<MinComposite> {
 public:
  static at::Tensor forward(AutogradContext* ctx, const at::Tensor& x, const at::Tensor& y) {
    at::AutoDispatchBelowADInplaceOrView below;
    ctx->save_for_backward({x, y});
    return min_composite_op(x, y);
  }

  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    const auto saved = ctx->get_saved_variables();
    const at::Tensor &x = saved[0], &y = saved[1];
    auto [gx, gy] = min_composite_backward_op(grads[0], x, y);
    return {ctx->needs_input_grad(0) ? sum_to_shape(gx, x) : at::Tensor(),
            ctx->needs_input_grad(1) ? sum_to_shape(gy, y) : at::Tensor()};
  }
};

class RainComposite : public torch::autograd::Function<RainComposite> {
 public:
  static at::Tensor forward(AutogradContext* ctx, const at::Tensor& clean, const at::Tensor& rain, bool clamp) {
    at::AutoDispatchBelowADInplaceOrView below;
    ctx->save_for_backward({clean, rain});
    ctx->saved_data["clamp"] = clamp;
    return rain_composite_op(clean, rain, clamp);
  }

  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    const auto saved = ctx->get_saved_variables();
    const at::Tensor &clean = saved[0], &rain = saved[1];
    const at::Tensor g = rain_composite_backward_op(grads[0], clean, rain, ctx->saved_data["clamp"].toBool());
    return {ctx->needs_input_grad(0) ? sum_to_shape(g, clean) : at::Tensor(),
            ctx->needs_input_grad(1) ? sum_to_shape(g, rain) : at::Tensor(), at::Tensor()};
  }
};

at::Tensor min_composite_autograd(const at::Tensor& x, const at::Tensor& y) {
  if (!needs_graph({&x, &y})) {  // nothing to record: straight to the device kernel
    at::AutoDispatchBelowADInplaceOrView below;
    return min_composite_op(x, y);
  }
  return MinComposite::apply(x, y);
}

at::Tensor rain_composite_autograd(const at::Tensor& clean, const at::Tensor& rain, bool clamp) {
  if (!needs_graph({&clean, &rain})) {
    at::AutoDispatchBelowADInplaceOrView below;
    return rain_composite_op(clean, rain, clamp);
  }
  return RainComposite::apply(clean, rain, clamp);
}

}  // namespace

TORCH_LIBRARY_IMPL(derain, Autograd, m) {
  m.impl("min_composite", &min_composite_autograd);
  m.impl("rain_composite", &rain_composite_autograd);
}

}  // namespace derain
