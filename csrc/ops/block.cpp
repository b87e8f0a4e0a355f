// Schemas of the fused self-correcting dilated block (docs/method.md#self-correcting-block, docs/ops/block.md) and of the
// fused inference of the whole network G. Kernels: cpu/block_kernel.cpp,
// cpu/network_kernel.cpp (C++), derain_kernels/triton/block.py (CUDA);
// autograd and fake tensors are registered in derain_kernels/ops/block.py and
// derain_kernels/ops/network.py.
#include <torch/library.h>

TORCH_LIBRARY_FRAGMENT(derain, m) {
  m.def("self_correcting_block(Tensor x, Tensor w1, Tensor b1, Tensor w3, Tensor b3, int dilation=3) -> Tensor");
  m.def(
      "_self_correcting_block_backward(Tensor grad, Tensor x, Tensor out, Tensor w1, Tensor b1, Tensor w3, "
      "Tensor b3, int dilation=3) -> (Tensor, Tensor, Tensor, Tensor, Tensor)");
  // training pair: the forward also returns la = relu(conv3x3(x; w1, b1)) with the mask of the
  // final ReLU (out > 0) in its sign bit, which the backward reads instead of recomputing la and
  // reading out
  m.def("_self_correcting_block_train(Tensor x, Tensor w1, Tensor b1, Tensor w3, Tensor b3, int dilation=3) -> (Tensor, Tensor)");
  m.def(
      "_self_correcting_block_backward_la(Tensor grad, Tensor x, Tensor la, Tensor w1, Tensor w3, "
      "int dilation=3) -> (Tensor, Tensor, Tensor, Tensor, Tensor)");
  m.def("_rain_oer_me_derain(Tensor x, Tensor[] params, int dilation=3) -> Tensor");
}
