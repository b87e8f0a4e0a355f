// Schemas of the ops of the related methods (docs/method.md#related-methods-that-use-the-same-ops, docs/ops/related.md): dark channel
// (SSID-KD), total variation (SSID-KD, UDRDR) and the rain-direction
// regularizer (UDRDR). Kernels: cpu/dark_channel_kernel.cpp, cpu/tv_kernel.cpp,
// cpu/rain_direction_kernel.cpp (C++), derain_kernels/triton/{dark_channel,tv,
// rain_direction}.py (CUDA); autograd and fake tensors in
// derain_kernels/ops/{dark_channel,tv,rain_direction}.py.
#include <torch/library.h>

TORCH_LIBRARY_FRAGMENT(derain, m) {
  // x (B, C, H, W) -> (values (B, 1, H, W), index int64 (B, 1, H, W)); index =
  // c * H * W + y * W + x, the flat (C, H, W) index of each window's selected element.
  m.def("dark_channel(Tensor x, int patch) -> (Tensor, Tensor)");
  // grad (B, 1, H, W), index -> grad_x (B, channels, H, W), contiguous.
  m.def("dark_channel_backward(Tensor grad, Tensor index, int channels) -> Tensor");
  // x (N, C, H, W) -> (N, 2): per image, sums of |dy|^p (vertical differences)
  // and |dx|^p (horizontal differences); p is 1 or 2. padding "valid": the
  // differences inside the image; "zeros": also the first row against a zero
  // row above it and the first column against a zero column to its left.
  m.def("tv_sums(Tensor x, int p, str padding=\"valid\") -> Tensor");
  m.def("tv_sums_backward(Tensor grad, Tensor x, int p, str padding=\"valid\") -> Tensor");
  // z, z_gt (B, C, H, W), kernels (B, M, K, K) -> (B, M): per image and kernel,
  // sum over (C, H, W) of |k ⋆ (z - z_gt)| (depthwise cross-correlation, zero
  // padding K // 2, "same" size).
  m.def("rain_direction_sums(Tensor z, Tensor z_gt, Tensor kernels) -> Tensor");
  // -> gradient with respect to z (that of z_gt is its negative).
  m.def("rain_direction_sums_backward(Tensor grad, Tensor z, Tensor z_gt, Tensor kernels) -> Tensor");
}
