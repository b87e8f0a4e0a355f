// Schemas of SSIM (SPEC §3). Kernels: cpu/ssim_kernel.cpp (C++),
// derain_kernels/triton/ssim.py (CUDA); autograd and fake tensors are
// registered in derain_kernels/ops/ssim.py.
//
// ssim returns the map (..., Ho, Wo) for reduction "map", the per-image means
// (B,) for "none" or the mean () for "mean". ssim_backward takes the gradient
// of that result and returns (grad_x, grad_y); it recomputes the statistics it
// needs tile by tile, so the forward saves nothing but x and y.
#include <torch/library.h>

TORCH_LIBRARY_FRAGMENT(derain, m) {
  m.def("ssim(Tensor x, Tensor y, int window_size, float sigma, float data_range, str padding, "
        "str reduction, float k1, float k2) -> Tensor");
  m.def("ssim_backward(Tensor grad, Tensor x, Tensor y, int window_size, float sigma, float data_range, "
        "str padding, str reduction, float k1, float k2) -> (Tensor, Tensor)");
}
