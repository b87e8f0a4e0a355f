// Schema of the rain-direction regularizer's sums (UDRDR; docs/ops/related.md). Kernels:
// cpu/rain_direction_kernel.cpp, cuda/rain_direction.cu; autograd and fake tensors in
// derain_kernels/ops/rain_direction.py.
#include <torch/library.h>

TORCH_LIBRARY_FRAGMENT(derain, m) {
  // z, z_gt (B, C, H, W), kernels (B, M, K, K) -> (B, M): per image and kernel,
  // sum over (C, H, W) of |k ⋆ (z - z_gt)| (depthwise cross-correlation, zero
  // padding K // 2, "same" size).
  m.def("_rain_direction_sums(Tensor z, Tensor z_gt, Tensor kernels) -> Tensor");
  // -> gradient with respect to z (that of z_gt is its negative).
  m.def("_rain_direction_sums_backward(Tensor grad, Tensor z, Tensor z_gt, Tensor kernels) -> Tensor");
  // z, z_gt (B, C, H, W), kernels (B, M, K, K) -> the reduced loss of derain_kernels.rain_direction_loss
  // for these kernels (autograd/loss_reductions.cpp)
  m.def("_rain_direction_loss(Tensor z, Tensor z_gt, Tensor kernels, str reduction=\"mean\") -> Tensor");
}
