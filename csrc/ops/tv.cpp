// Schema of the total-variation sums (SSID-KD, UDRDR; docs/ops/related.md). Kernels:
// cpu/tv_kernel.cpp, cuda/tv.cu; autograd and fake tensors in derain_kernels/ops/tv.py.
#include <torch/library.h>

TORCH_LIBRARY_FRAGMENT(derain, m) {
  // x (N, C, H, W) -> (N, 2): per image, sums of |dy|^p (vertical differences)
  // and |dx|^p (horizontal differences); p is 1 or 2. padding "valid": the
  // differences inside the image; "zeros": also the first row against a zero
  // row above it and the first column against a zero column to its left.
  m.def("_tv_sums(Tensor x, int p, str padding=\"valid\") -> Tensor");
  m.def("_tv_sums_backward(Tensor grad, Tensor x, int p, str padding=\"valid\") -> Tensor");
  // x (N, C, H, W) -> the loss of derain_kernels.tv_loss (sums and reduction in one call;
  // autograd/loss_reductions.cpp)
  m.def("_tv_loss(Tensor x, str reduction=\"mean\", int p=1, str padding=\"valid\") -> Tensor");
}
