// Schemas of conv3x3_relu (docs/ops/conv_relu.md): relu(conv3x3(cat(x, x2); weight) + bias), the
// layer the Rain O'er Me network repeats outside its blocks, without materialising the cat.
// Kernels: cpu/conv_relu_kernel.cpp, cuda/conv_relu.cu; ATen ops (common/conv_relu_impl.h) for
// other devices and the Triton build; autograd: autograd/conv_relu_autograd.cpp; fake tensors:
// derain_kernels/ops/conv_relu.py.
#include <torch/library.h>

#include "common/conv_relu_impl.h"

TORCH_LIBRARY_FRAGMENT(derain, m) {
  m.def("conv3x3_relu(Tensor x, Tensor weight, Tensor bias, Tensor? x2=None) -> Tensor");
  // (grad of x, of x2 (empty without x2), of weight, of bias); out: the forward's output (its mask);
  // input_grad=False: the inputs' gradients are not computed (both empty), e.g. for a network's input
  m.def("_conv3x3_relu_backward(Tensor grad, Tensor out, Tensor x, Tensor weight, Tensor? x2=None, "
        "bool input_grad=True) -> (Tensor, Tensor, Tensor, Tensor)");
}

namespace derain {
TORCH_LIBRARY_IMPL(derain, CompositeExplicitAutograd, m) {
  m.impl("conv3x3_relu", &conv_relu_impl::forward<>);
  m.impl("_conv3x3_relu_backward", &conv_relu_impl::backward);
}
}  // namespace derain
