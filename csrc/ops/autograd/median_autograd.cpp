// Autograd kernel of median_filter, registered from C++ (common.h says why and how). The backward
// routes each output gradient to the selected element: the forward keeps each output's selected
// index (derain::_median_filter_with_index, 4 bytes per output) where the device has a kernel for
// it, and the backward scatters (derain::_median_filter_backward_index); elsewhere (the Triton
// build, planes of 2**31 elements or more) the backward recomputes the selection from x
// (derain::_median_filter_backward).
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

std::tuple<at::Tensor, at::Tensor> median_with_index_op(const at::Tensor& x, c10::IntArrayRef k,
                                                        c10::string_view padding) {
  static const auto op = op_handle<std::tuple<at::Tensor, at::Tensor>(const at::Tensor&, c10::IntArrayRef,
                                                                      c10::string_view)>(
      "derain::_median_filter_with_index");
  return op.call(x, k, padding);
}

at::Tensor median_backward_index_op(const at::Tensor& g, const at::Tensor& index) {
  static const auto op =
      op_handle<at::Tensor(const at::Tensor&, const at::Tensor&)>("derain::_median_filter_backward_index");
  return op.call(g, index);
}

bool keeps_index(const at::Tensor& x) {
  if (x.dim() < 2 || x.sym_size(-2) * x.sym_size(-1) >= (int64_t(1) << 31))
    return false;
  if (x.is_cpu()) return true;
  if (!x.is_cuda()) return false;
  static const bool cuda = c10::Dispatcher::singleton()
                               .findSchemaOrThrow("derain::_median_filter_with_index", "")
                               .hasKernelForDispatchKey(c10::DispatchKey::CUDA);
  return cuda;
}

class MedianFilter : public torch::autograd::Function<MedianFilter> {
 public:
  static at::Tensor forward(AutogradContext* ctx, const at::Tensor& x, c10::IntArrayRef k,
                            c10::string_view padding) {
    at::AutoDispatchBelowADInplaceOrView below;
    if (keeps_index(x)) {
      auto [out, index] = median_with_index_op(x, k, padding);
      ctx->save_for_backward({index});
      ctx->saved_data["keeps_index"] = true;
      return out;
    }
    ctx->save_for_backward({x});
    ctx->saved_data["keeps_index"] = false;
    ctx->saved_data["k"] = k.vec();
    ctx->saved_data["padding"] = std::string(padding);
    return median_op(x, k, padding);
  }

  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    const at::Tensor saved = ctx->get_saved_variables()[0];
    if (ctx->saved_data["keeps_index"].toBool())
      return {median_backward_index_op(grads[0], saved), at::Tensor(), at::Tensor()};
    const at::Tensor& x = saved;
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
