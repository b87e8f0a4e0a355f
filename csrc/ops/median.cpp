// Schemas of the median filter (docs/ops/median.md). Kernels: cpu/median_kernel.cpp,
// cuda/median.cu (or derain_kernels/triton/median.py); autograd: autograd/median_autograd.cpp;
// fake tensors: derain_kernels/ops/median.py.
#include <torch/library.h>

#include "common/median_impl.h"

TORCH_LIBRARY_FRAGMENT(derain, m) {
  m.def("median_filter(Tensor x, int[2] kernel_size, str padding=\"reflect\") -> Tensor");
  // The gradient of median_filter: grad scattered (summed) onto the selected elements of x.
  m.def("_median_filter_backward(Tensor grad, Tensor x, int[2] kernel_size, str padding=\"reflect\") -> Tensor");
  // The output and each output's selected source h * W + w in its plane (int32; -1: a zero pad or a NaN
  // window): what the autograd kernel keeps for the backward instead of recomputing the selection.
  m.def("_median_filter_with_index(Tensor x, int[2] kernel_size, str padding=\"reflect\") -> (Tensor, Tensor)");
  // grad summed onto the selected elements; ATen ops, so any device and double backward.
  m.def("_median_filter_backward_index(Tensor grad, Tensor index) -> Tensor");
}

namespace derain {
namespace {
at::Tensor median_filter_backward_index(const at::Tensor& grad, const at::Tensor& index) {
  return median_impl::scatter_to_selected(grad, index, grad);
}
}  // namespace

TORCH_LIBRARY_IMPL(derain, CompositeImplicitAutograd, m) {
  m.impl("_median_filter_backward_index", &median_filter_backward_index);
}
}  // namespace derain
