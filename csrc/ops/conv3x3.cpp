// Schemas of conv3x3 (docs/ops/conv3x3.md): activation(conv3x3(x; weight) + bias) with the
// activation 'none', 'relu' or 'tanh' fused: e.g. a network's output layer, 16 -> 3 channels and
// tanh. Kernels: cpu/conv3x3_kernel.cpp; ATen ops (common/conv3x3_impl.h) on other devices;
// autograd: autograd/conv3x3_autograd.cpp; fake tensors: derain_kernels/ops/conv3x3.py.
#include <torch/library.h>

#include "common/conv3x3_impl.h"

TORCH_LIBRARY_FRAGMENT(derain, m) {
  m.def("conv3x3(Tensor x, Tensor weight, Tensor bias, str activation='none') -> Tensor");
  // (grad of x (empty when input_grad is False), of weight, of bias); out: the forward's output,
  // from which the activation's derivative is taken
  m.def("_conv3x3_backward(Tensor grad, Tensor out, Tensor x, Tensor weight, str activation, "
        "bool input_grad=True) -> (Tensor, Tensor, Tensor)");
}

namespace derain {
TORCH_LIBRARY_IMPL(derain, CompositeExplicitAutograd, m) {
  m.impl("conv3x3", &conv3x3_impl::forward);
  m.impl("_conv3x3_backward", &conv3x3_impl::backward);
}
}  // namespace derain
