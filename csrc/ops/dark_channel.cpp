// Schema of the dark channel (SSID-KD's dark-channel prior; docs/ops/related.md). Kernels:
// cpu/dark_channel_kernel.cpp, cuda/dark_channel.cu; autograd and fake tensors in
// derain_kernels/ops/dark_channel.py.
#include <torch/library.h>

TORCH_LIBRARY_FRAGMENT(derain, m) {
  // x (B, C, H, W) -> (values (B, 1, H, W), index int64 (B, 1, H, W)); index =
  // c * H * W + y * W + x, the flat (C, H, W) index of each window's selected element.
  m.def("_dark_channel(Tensor x, int patch) -> (Tensor, Tensor)");
  // grad (B, 1, H, W), index -> grad_x (B, channels, H, W), contiguous.
  m.def("_dark_channel_backward(Tensor grad, Tensor index, int channels) -> Tensor");
  // x (B, C, H, W) -> the loss of derain_kernels.dark_channel_loss (autograd/loss_reductions.cpp)
  m.def("_dark_channel_loss(Tensor x, int patch=15, str reduction=\"mean\") -> Tensor");
}
