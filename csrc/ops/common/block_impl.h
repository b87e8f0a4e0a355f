// The self-correcting dilated block (forward, training forward, backwards) and
// the fused inference of G, for any device, from ATen: the convolutions are
// at::conv2d / at::convolution_backward (cuDNN on CUDA), the epilogues ATen
// element-wise ops. Same contract as the CPU kernels (cpu/block_kernel.cpp,
// cpu/network_kernel.cpp, docs/ops/block.md):
//   la = relu(conv3x3(x; w1, b1)); e = x - la; out = relu(conv3x3_d(e; w3, b3) + la)
//   gq = grad * [out > 0]; ge = conv_dᵀ(gq); gp = (gq - ge) * [la > 0];
//   gx = ge + convᵀ(gp); gw3 = e ⋆ gq; gw1 = x ⋆ gp; gb = sums.
// self_correcting_block_train returns la with the mask of the final ReLU in its
// sign bit (set where out is not > 0), which self_correcting_block_backward_la reads.
// Outputs: channels-last for channels-last x, contiguous otherwise.
#pragma once

#include <ATen/ATen.h>

#include <vector>

namespace derain {
namespace block_impl {

inline at::MemoryFormat out_format(const at::Tensor& x) {
  return x.dim() == 4 && !x.is_contiguous() && x.is_contiguous(at::MemoryFormat::ChannelsLast)
             ? at::MemoryFormat::ChannelsLast
             : at::MemoryFormat::Contiguous;
}

inline at::Tensor in_format(const at::Tensor& t, const at::Tensor& x) { return t.contiguous(out_format(x)); }

inline void check_args(const at::Tensor& x, const at::Tensor& w1, const at::Tensor& b1, const at::Tensor& w3,
                       const at::Tensor& b3, int64_t dilation) {
  TORCH_CHECK(x.dim() == 4, "derain: x must be (N, C, H, W), got ", x.sizes());
  const int64_t C = x.size(1);
  for (const at::Tensor* w : {&w1, &w3})
    TORCH_CHECK(w->dim() == 4 && w->size(0) == C && w->size(1) == C && w->size(2) == 3 && w->size(3) == 3,
                "derain: block weights must be (C, C, 3, 3) with C = ", C, ", got ", w->sizes());
  for (const at::Tensor* b : {&b1, &b3})
    TORCH_CHECK(b->dim() == 1 && b->size(0) == C, "derain: block biases must be (C,), got ", b->sizes());
  for (const at::Tensor* t : {&w1, &b1, &w3, &b3}) {
    TORCH_CHECK(t->scalar_type() == x.scalar_type(), "derain: parameters must have x's dtype");
    TORCH_CHECK(t->device() == x.device(), "derain: parameters must be on x's device");
  }
  TORCH_CHECK(x.scalar_type() == at::kFloat || x.scalar_type() == at::kDouble,
              "derain: x must be float32 or float64, got ", x.scalar_type());
  TORCH_CHECK(dilation >= 1, "derain: dilation must be >= 1, got ", dilation);
}

inline at::Tensor conv(const at::Tensor& t, const at::Tensor& w, const at::Tensor& b, int64_t d) {
  return at::conv2d(t, w, b, /*stride=*/{1, 1}, /*padding=*/{d, d}, /*dilation=*/{d, d});
}

// (out, la)
// How a convolution and its epilogue run: a convolution (with bias) then ATen's element-wise
// ReLU / add; the CUDA kernels pass their own policy (cuda/block.cu: cuDNN's fused convolution +
// bias + ReLU (+ add) for float32).
struct AtenConv {
  static at::Tensor conv_relu(const at::Tensor& t, const at::Tensor& w, const at::Tensor& b, int64_t d) {
    return at::relu(conv(t, w, b, d));
  }
  // relu(conv(t, w) + b + z)
  static at::Tensor conv_add_relu(const at::Tensor& t, const at::Tensor& w, const at::Tensor& z,
                                  const at::Tensor& b, int64_t d) {
    return at::relu(conv(t, w, b, d).add_(z));
  }
};

template <typename C>
std::tuple<at::Tensor, at::Tensor> forward_parts(const at::Tensor& x, const at::Tensor& w1, const at::Tensor& b1,
                                                 const at::Tensor& w3, const at::Tensor& b3, int64_t d) {
  at::Tensor la = C::conv_relu(x, w1, b1, 1);
  at::Tensor out = C::conv_add_relu(x - la, w3, la, b3, d);
  return {out, la};
}

template <typename C = AtenConv>
at::Tensor self_correcting_block(const at::Tensor& x, const at::Tensor& w1, const at::Tensor& b1,
                                        const at::Tensor& w3, const at::Tensor& b3, int64_t dilation) {
  check_args(x, w1, b1, w3, b3, dilation);
  if (x.numel() == 0) return at::empty(x.sizes(), x.options().memory_format(out_format(x)));
  return in_format(std::get<0>(forward_parts<C>(x, w1, b1, w3, b3, dilation)), x);
}

template <typename C = AtenConv>
std::tuple<at::Tensor, at::Tensor> self_correcting_block_train(const at::Tensor& x, const at::Tensor& w1,
                                                                      const at::Tensor& b1, const at::Tensor& w3,
                                                                      const at::Tensor& b3, int64_t dilation) {
  check_args(x, w1, b1, w3, b3, dilation);
  if (x.numel() == 0) {
    auto o = x.options().memory_format(out_format(x));
    return {at::empty(x.sizes(), o), at::empty(x.sizes(), o)};
  }
  auto [out, la] = forward_parts<C>(x, w1, b1, w3, b3, dilation);
  // la >= 0; its sign bit carries "out is not > 0" (-0.0 where la is 0)
  at::Tensor signed_la = at::where(out.gt(0), la, la.neg());
  return {in_format(out, x), in_format(signed_la, x)};
}

// gradients from the final ReLU's mask and la (>= 0)
inline std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor> backward_from(
    const at::Tensor& grad, const at::Tensor& x, const at::Tensor& mask_out, const at::Tensor& la,
    const at::Tensor& w1, const at::Tensor& w3, int64_t d) {
  const int64_t C = x.size(1);
  const at::Tensor gq = at::where(mask_out, grad, at::zeros({}, grad.options()));
  const at::Tensor e = x - la;
  auto [ge, gw3, gb3] = at::convolution_backward(gq, e, w3, at::OptionalIntArrayRef({C}), {1, 1}, {d, d}, {d, d},
                                                 false, {0, 0}, 1, {true, true, true});
  const at::Tensor gp = at::where(la.gt(0), gq - ge, at::zeros({}, grad.options()));
  auto [gx1, gw1, gb1] = at::convolution_backward(gp, x, w1, at::OptionalIntArrayRef({C}), {1, 1}, {1, 1}, {1, 1},
                                                  false, {0, 0}, 1, {true, true, true});
  return {in_format(ge + gx1, x), gw1.contiguous(), gb1.contiguous(), gw3.contiguous(), gb3.contiguous()};
}

inline std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor> empty_grads(
    const at::Tensor& x, const at::Tensor& w1, const at::Tensor& w3) {
  return {at::empty(x.sizes(), x.options().memory_format(out_format(x))), at::zeros(w1.sizes(), w1.options()),
          at::zeros({x.size(1)}, x.options()), at::zeros(w3.sizes(), w3.options()),
          at::zeros({x.size(1)}, x.options())};
}

inline std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor> self_correcting_block_backward(
    const at::Tensor& grad, const at::Tensor& x, const at::Tensor& out, const at::Tensor& w1, const at::Tensor& b1,
    const at::Tensor& w3, const at::Tensor& b3, int64_t dilation) {
  check_args(x, w1, b1, w3, b3, dilation);
  TORCH_CHECK(grad.sizes() == x.sizes() && out.sizes() == x.sizes(), "derain: grad and out must have x's shape");
  TORCH_CHECK(grad.scalar_type() == x.scalar_type() && out.scalar_type() == x.scalar_type(),
              "derain: grad and out must have x's dtype");
  if (x.numel() == 0) return empty_grads(x, w1, w3);
  const at::Tensor la = at::relu(conv(x, w1, b1, 1));
  return backward_from(grad, x, out.gt(0), la, w1, w3, dilation);
}

inline std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor> self_correcting_block_backward_la(
    const at::Tensor& grad, const at::Tensor& x, const at::Tensor& la, const at::Tensor& w1, const at::Tensor& w3,
    int64_t dilation) {
  TORCH_CHECK(w1.dim() == 4 && x.dim() == 4, "derain: x must be (N, C, H, W) and w1 (C, C, 3, 3)");
  const at::Tensor b = at::empty({x.size(1)}, x.options());  // shapes only: biases are not needed
  check_args(x, w1, b, w3, b, dilation);
  TORCH_CHECK(grad.sizes() == x.sizes() && la.sizes() == x.sizes(), "derain: grad and la must have x's shape");
  TORCH_CHECK(grad.scalar_type() == x.scalar_type() && la.scalar_type() == x.scalar_type(),
              "derain: grad and la must have x's dtype");
  if (x.numel() == 0) return empty_grads(x, w1, w3);
  return backward_from(grad, x, at::signbit(la).logical_not(), la.abs(), w1, w3, dilation);
}

// Ŷ = X − tanh(G(X)); params: weight and bias of the 19 convolutions of G in the order of
// derain_kernels/ops/network.py (CONV_KEYS).
template <typename C = AtenConv>
at::Tensor rain_oer_me_derain(const at::Tensor& x, at::TensorList params, int64_t dilation) {
  TORCH_CHECK(x.dim() == 4, "derain: x must be (B, C, H, W), got ", x.sizes());
  TORCH_CHECK(x.scalar_type() == at::kFloat || x.scalar_type() == at::kDouble,
              "derain: x must be float32 or float64, got ", x.scalar_type());
  TORCH_CHECK(params.size() == 38, "derain: params must hold 38 tensors, got ", params.size());
  TORCH_CHECK(dilation >= 1, "derain: dilation must be >= 1, got ", dilation);
  for (const at::Tensor& p : params)
    TORCH_CHECK(p.scalar_type() == x.scalar_type() && p.device() == x.device(),
                "derain: params must have x's dtype and device");
  if (x.numel() == 0) return at::empty(x.sizes(), x.options().memory_format(out_format(x)));
  size_t next = 0;
  auto conv_relu = [&](const at::Tensor& t) {
    const at::Tensor& w = params[next];
    const at::Tensor& b = params[next + 1];
    next += 2;
    return C::conv_relu(t, w, b, 1);
  };
  auto block = [&](const at::Tensor& t) {
    const at::Tensor &w1 = params[next], &b1 = params[next + 1], &w3 = params[next + 2], &b3 = params[next + 3];
    next += 4;
    return std::get<0>(forward_parts<C>(t, w1, b1, w3, b3, dilation));
  };
  auto tree = [&](const at::Tensor& t) {
    at::Tensor a1 = block(t);
    at::Tensor a2 = block(a1);
    return conv_relu(at::cat({a1, a2}, 1));
  };
  at::NoGradGuard no_grad;
  const at::Tensor fi = conv_relu(x);
  const at::Tensor f0 = tree(fi);
  const at::Tensor f1 = tree(f0);
  const at::Tensor f01 = conv_relu(at::cat({f0, f1}, 1));
  const at::Tensor f3 = tree(f01);
  const at::Tensor f33 = conv_relu(at::cat({f01, f3}, 1));
  const at::Tensor r = at::tanh(conv(f33, params[next], params[next + 1], 1));
  return in_format(x - r, x);
}

}  // namespace block_impl
}  // namespace derain
