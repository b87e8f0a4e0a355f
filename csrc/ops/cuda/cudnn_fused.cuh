// The convolution policy of the CUDA kernels of the block, the network and conv3x3_relu
// (common/block_impl.h's AtenConv is the plain one).
#pragma once

#include <ATen/ATen.h>
#include <ATen/Context.h>
#include <ATen/detail/CUDAHooksInterface.h>
#include <ATen/ops/cudnn_convolution_add_relu.h>
#include <ATen/ops/cudnn_convolution_relu.h>

#include "../../config.h"
#include "../common/block_impl.h"

namespace derain {

// cuDNN's fused convolution + bias + activation (+ add): one kernel where ATen runs a convolution
// and one or two element-wise passes. Same TF32 setting as at::conv2d (torch.backends.cudnn.allow_tf32).
struct CudnnFusedConv {
  static bool fused(const at::Tensor& t) {
    return config::fused_epilogues() && t.scalar_type() == at::kFloat && at::globalContext().userEnabledCuDNN() &&
           at::detail::getCUDAHooks().compiledWithCuDNN();
  }
  static at::Tensor conv_relu(const at::Tensor& t, const at::Tensor& w, const at::Tensor& b, int64_t d) {
    if (!fused(t)) return block_impl::AtenConv::conv_relu(t, w, b, d);
    return at::cudnn_convolution_relu(t, w, b, {1, 1}, {d, d}, {d, d}, 1);
  }
  static at::Tensor conv_add_relu(const at::Tensor& t, const at::Tensor& w, const at::Tensor& z,
                                  const at::Tensor& b, int64_t d) {
    if (!fused(t)) return block_impl::AtenConv::conv_add_relu(t, w, z, b, d);
    return at::cudnn_convolution_add_relu(t, w, z, /*alpha=*/1, b, {1, 1}, {d, d}, {d, d}, 1);
  }
};

}  // namespace derain
