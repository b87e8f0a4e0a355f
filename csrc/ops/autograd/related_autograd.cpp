// Autograd kernels of the related methods' ops (dark channel, TV sums, rain-direction sums),
// registered from C++ (common.h says why and how).
#include <torch/library.h>

#include "common.h"

namespace derain {
namespace {

using namespace autograd;

// ---- dark channel: (values, index); the gradient goes to the element `index` names ----
std::tuple<at::Tensor, at::Tensor> dark_channel_op(const at::Tensor& x, int64_t patch) {
  static const auto op =
      op_handle<std::tuple<at::Tensor, at::Tensor>(const at::Tensor&, int64_t)>("derain::_dark_channel");
  return op.call(x, patch);
}

at::Tensor dark_channel_backward_op(const at::Tensor& g, const at::Tensor& index, int64_t channels) {
  static const auto op = op_handle<at::Tensor(const at::Tensor&, const at::Tensor&, int64_t)>(
      "derain::_dark_channel_backward");
  return op.call(g, index, channels);
}

class DarkChannel : public torch::autograd::Function<DarkChannel> {
 public:
  static variable_list forward(AutogradContext* ctx, const at::Tensor& x, int64_t patch) {
    at::AutoDispatchBelowADInplaceOrView below;
    auto [values, index] = dark_channel_op(x, patch);
    ctx->mark_non_differentiable({index});
    ctx->save_for_backward({index});
    ctx->saved_data["channels"] = x.size(1);
    return {values, index};
  }

  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    const at::Tensor index = ctx->get_saved_variables()[0];
    return {dark_channel_backward_op(grads[0], index, ctx->saved_data["channels"].toInt()), at::Tensor()};
  }
};

std::tuple<at::Tensor, at::Tensor> dark_channel_autograd(const at::Tensor& x, int64_t patch) {
  if (!needs_graph({&x})) {
    at::AutoDispatchBelowADInplaceOrView below;
    return dark_channel_op(x, patch);
  }
  auto out = DarkChannel::apply(x, patch);
  return {out[0], out[1]};
}

// ---- TV sums: (N, 2) per-image sums of |d|^p ----
at::Tensor tv_sums_op(const at::Tensor& x, int64_t p, c10::string_view padding) {
  static const auto op =
      op_handle<at::Tensor(const at::Tensor&, int64_t, c10::string_view)>("derain::_tv_sums");
  return op.call(x, p, padding);
}

at::Tensor tv_sums_backward_op(const at::Tensor& g, const at::Tensor& x, int64_t p, c10::string_view padding) {
  static const auto op = op_handle<at::Tensor(const at::Tensor&, const at::Tensor&, int64_t, c10::string_view)>(
      "derain::_tv_sums_backward");
  return op.call(g, x, p, padding);
}

class TvSums : public torch::autograd::Function<TvSums> {
 public:
  static at::Tensor forward(AutogradContext* ctx, const at::Tensor& x, int64_t p, c10::string_view padding) {
    at::AutoDispatchBelowADInplaceOrView below;
    ctx->save_for_backward({x});
    ctx->saved_data["p"] = p;
    ctx->saved_data["padding"] = std::string(padding);
    return tv_sums_op(x, p, padding);
  }

  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    const at::Tensor x = ctx->get_saved_variables()[0];
    return {tv_sums_backward_op(grads[0], x, ctx->saved_data["p"].toInt(), ctx->saved_data["padding"].toStringRef()),
            at::Tensor(), at::Tensor()};
  }
};

at::Tensor tv_sums_autograd(const at::Tensor& x, int64_t p, c10::string_view padding) {
  if (!needs_graph({&x})) {
    at::AutoDispatchBelowADInplaceOrView below;
    return tv_sums_op(x, p, padding);
  }
  return TvSums::apply(x, p, padding);
}

// ---- rain-direction sums: (B, M); the gradient of z_gt is minus that of z, none to the kernels ----
at::Tensor rain_direction_op(const at::Tensor& z, const at::Tensor& z_gt, const at::Tensor& k) {
  static const auto op = op_handle<at::Tensor(const at::Tensor&, const at::Tensor&, const at::Tensor&)>(
      "derain::_rain_direction_sums");
  return op.call(z, z_gt, k);
}

at::Tensor rain_direction_backward_op(const at::Tensor& g, const at::Tensor& z, const at::Tensor& z_gt,
                                      const at::Tensor& k) {
  static const auto op =
      op_handle<at::Tensor(const at::Tensor&, const at::Tensor&, const at::Tensor&, const at::Tensor&)>(
          "derain::_rain_direction_sums_backward");
  return op.call(g, z, z_gt, k);
}

class RainDirectionSums : public torch::autograd::Function<RainDirectionSums> {
 public:
  static at::Tensor forward(AutogradContext* ctx, const at::Tensor& z, const at::Tensor& z_gt, const at::Tensor& k) {
    at::AutoDispatchBelowADInplaceOrView below;
    ctx->save_for_backward({z, z_gt, k});
    return rain_direction_op(z, z_gt, k);
  }

  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    const auto saved = ctx->get_saved_variables();
    const at::Tensor gz = rain_direction_backward_op(grads[0], saved[0], saved[1], saved[2]);
    return {ctx->needs_input_grad(0) ? gz : at::Tensor(), ctx->needs_input_grad(1) ? -gz : at::Tensor(),
            at::Tensor()};
  }
};

at::Tensor rain_direction_autograd(const at::Tensor& z, const at::Tensor& z_gt, const at::Tensor& k) {
  if (!needs_graph({&z, &z_gt, &k})) {
    at::AutoDispatchBelowADInplaceOrView below;
    return rain_direction_op(z, z_gt, k);
  }
  return RainDirectionSums::apply(z, z_gt, k);
}

}  // namespace

TORCH_LIBRARY_IMPL(derain, Autograd, m) {
  m.impl("_dark_channel", &dark_channel_autograd);
  m.impl("_tv_sums", &tv_sums_autograd);
  m.impl("_rain_direction_sums", &rain_direction_autograd);
}

}  // namespace derain
