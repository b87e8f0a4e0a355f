// Schemas of the compositing ops (README.md#api). Kernels: cpu/composite_kernel.cpp
// (C++), derain_kernels/triton/composite.py (CUDA); autograd and fake tensors
// are registered in derain_kernels/ops/composite.py.
#include <torch/library.h>

TORCH_LIBRARY_FRAGMENT(derain, m) {
  m.def("min_composite(Tensor x, Tensor y) -> Tensor");
  m.def("_min_composite_backward(Tensor grad, Tensor x, Tensor y) -> (Tensor, Tensor)");
  m.def("rain_composite(Tensor clean, Tensor rain, bool clamp=True) -> Tensor");
  m.def("_rain_composite_backward(Tensor grad, Tensor clean, Tensor rain, bool clamp=True) -> Tensor");
}
