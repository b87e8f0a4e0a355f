// Autograd kernel of median_filter, registered from C++ (common.h says why and how). The backward
// routes each output gradient to the selected element (derain::_median_filter_backward).
#include <torch/library.h>

#include "common.h"

namespace derain {
namespace {

using namespace autograd;

at::Tensor median_op(const at::Tensor& x, c10::IntArrayRef k, c10::string_view padding) {
  static const auto op =
      op_handle<at::Tensor(const at::Tensor&, c10::IntArrayRef, c10::string_view)>("derain::median_filter");
  return op.call(x, k, padding);
}

at::Tensor median_backward_op(const at::Tensor& g, const at::Tensor& x, c10::IntArrayRef k,
                              c10::string_view padding) {
  static const auto op = op_handle<at::Tensor(const at::Tensor&, const at::Tensor&, c10::IntArrayRef,
                                              c10::string_view)>("derain::_median_filter_backward");
  return op.call(g, x, k, padding);
}

class MedianFilter : public torch::autograd::Function<MedianFilter> {
 public:
  static at::Tensor forward(AutogradContext* ctx, const at::Tensor& x, c10::IntArrayRef k,
                            c10::string_view padding) {
    at::AutoDispatchBelowADInplaceOrView below;
    ctx->save_for_backward({x});
    ctx->saved_data["k"] = k.vec();
    ctx->saved_data["padding"] = std::string(padding);
    return median_op(x, k, padding);
  }

  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    const at::Tensor x = ctx->get_saved_variables()[0];
    const auto k = ctx->saved_data["k"].toIntVector();
    const auto padding = ctx->saved_data["padding"].toStringRef();
    return {median_backward_op(grads[0], x, k, padding), at::Tensor(), at::Tensor()};
  }
};

at::Tensor median_filter_autograd(const at::Tensor& x, c10::IntArrayRef k, c10::string_view padding) {
  if (!needs_graph({&x})) {
    at::AutoDispatchBelowADInplaceOrView below;
    return median_op(x, k, padding);
  }
  return MedianFilter::apply(x, k, padding);
}

}  // namespace

TORCH_LIBRARY_IMPL(derain, Autograd, m) { m.impl("median_filter", &median_filter_autograd); }

}  // namespace derain
