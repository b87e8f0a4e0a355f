// Schemas of SSIM (SPEC §3). Kernels: cpu/ssim_kernel.cpp (C++),
// derain_kernels/triton/ssim.py (CUDA); autograd and fake tensors are
// registered in derain_kernels/ops/ssim.py.
//
// ssim returns (result, dmaps): result is the map (P.., Ho, Wo), the per-image
// means (B,) or the mean (); dmaps holds the five derivative maps
// dS/d(mu_x, mu_y, E[x^2], E[y^2], E[xy]) as a (5, P, Ho, Wo) tensor when
// save_for_backward is true (an empty (0,) tensor otherwise). ssim_backward
// applies the transposed blur to them and returns (grad_x, grad_y).
#include <torch/library.h>

TORCH_LIBRARY_FRAGMENT(derain, m) {
  m.def("ssim(Tensor x, Tensor y, int window_size, float sigma, float data_range, str padding, "
        "str reduction, float k1, float k2, bool save_for_backward) -> (Tensor, Tensor)");
  m.def("ssim_backward(Tensor grad, Tensor x, Tensor y, Tensor dmaps, int window_size, float sigma, "
        "str padding, str reduction) -> (Tensor, Tensor)");
}
