// Schemas of the median filter (docs/ops/median.md). Kernels: cpu/median_kernel.cpp (C++),
// derain_kernels/triton/median.py (CUDA); autograd and fake tensors are
// registered in derain_kernels/ops/median.py.
#include <torch/library.h>

TORCH_LIBRARY_FRAGMENT(derain, m) {
  m.def("median_filter(Tensor x, int[2] kernel_size, str padding=\"reflect\") -> Tensor");
  // The gradient of median_filter: grad scattered (summed) onto the selected elements of x.
  m.def("_median_filter_backward(Tensor grad, Tensor x, int[2] kernel_size, str padding=\"reflect\") -> Tensor");
}
