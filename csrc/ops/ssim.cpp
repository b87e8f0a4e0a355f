// Schemas of SSIM (docs/ops/ssim.md). Kernels: cpu/ssim_kernel.cpp (C++),
// derain_kernels/triton/ssim.py (CUDA); autograd and fake tensors are
// registered in derain_kernels/ops/ssim.py.
//
// ssim returns the map (..., Ho, Wo) for reduction "map", the per-image means
// (B,) for "none" or the mean () for "mean". ssim_backward takes the gradient
// of that result and returns (grad_x, grad_y); it recomputes the statistics it
// needs tile by tile, so the forward saves nothing but x and y.
// ssim_backward_x returns grad_x alone (about 2/5 less transposed-blur work);
// SSIM is symmetric in (x, y), so grad_y alone is ssim_backward_x(grad, y, x).
// ssim_with_grad (reductions "mean"/"none") returns (value, d value/dx,
// d value/dy) from one sweep — the forward of the autograd path, whose backward
// is then a multiply; d value/dy is empty (0,) when need_y is false.
#include <torch/library.h>

TORCH_LIBRARY_FRAGMENT(derain, m) {
  m.def("ssim(Tensor x, Tensor y, int window_size, float sigma, float data_range, str padding, "
        "str reduction, float k1, float k2) -> Tensor");
  m.def("_ssim_backward(Tensor grad, Tensor x, Tensor y, int window_size, float sigma, float data_range, "
        "str padding, str reduction, float k1, float k2) -> (Tensor, Tensor)");
  m.def("_ssim_backward_x(Tensor grad, Tensor x, Tensor y, int window_size, float sigma, float data_range, "
        "str padding, str reduction, float k1, float k2) -> Tensor");
  m.def("_ssim_with_grad(Tensor x, Tensor y, int window_size, float sigma, float data_range, str padding, "
        "str reduction, float k1, float k2, bool need_y) -> (Tensor, Tensor, Tensor)");
}
