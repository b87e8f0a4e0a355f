// min_composite and rain_composite (forward and backward) for a launch policy
// (launch.h): one TensorIterator pass each (two for min_composite_backward),
// with the per-element rules below. Same contract as the CPU kernels
// (cpu/composite_kernel.cpp, docs in derain_kernels/ops/composite.py): ties
// and a NaN in x select x, a NaN in y alone selects y; rain_composite sums in
// the op-math type and clamps to [0, 1] (NaN passes), its gradient passes
// where 0 <= clean + rain <= 1.
#pragma once

#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>

#include "../elementwise.h"
#include "host_device.h"

namespace derain {
namespace logic {

template <typename T>
DERAIN_HOST_DEVICE inline bool min_selects_x(T x_, T y_) {
  using acc = at::opmath_type<T>;
  const acc x = static_cast<acc>(x_), y = static_cast<acc>(y_);
  if (x != x) return true;
  if (y != y) return false;
  return x <= y;
}

template <typename T>
DERAIN_HOST_DEVICE inline T clamp01(T v) {
  return v < T(0) ? T(0) : (v > T(1) ? T(1) : v);  // NaN passes unchanged
}

template <typename T>
struct MinCompositeFn {
  static constexpr int arity = 2;
  using result_type = T;
  DERAIN_HOST_DEVICE T operator()(T x, T y) const { return min_selects_x(x, y) ? x : y; }
};

// Gradient to x (to_x) or to y of min_composite: grad where that input is selected, else 0.
template <typename T>
struct MinCompositeGradFn {
  static constexpr int arity = 3;
  using result_type = T;
  bool to_x;
  DERAIN_HOST_DEVICE T operator()(T g, T x, T y) const { return min_selects_x(x, y) == to_x ? g : T(0); }
};

template <typename T>
struct RainCompositeFn {
  static constexpr int arity = 2;
  using result_type = T;
  bool clamp;
  DERAIN_HOST_DEVICE T operator()(T a, T b) const {
    using acc = at::opmath_type<T>;
    const acc v = static_cast<acc>(a) + static_cast<acc>(b);
    return static_cast<T>(clamp ? clamp01(v) : v);
  }
};

template <typename T>
struct RainCompositeGradFn {
  static constexpr int arity = 3;
  using result_type = T;
  bool clamp;
  DERAIN_HOST_DEVICE T operator()(T g, T a, T b) const {
    using acc = at::opmath_type<T>;
    const acc v = static_cast<acc>(a) + static_cast<acc>(b);
    const bool pass = !clamp || (v >= acc(0) && v <= acc(1));
    return pass ? g : T(0);
  }
};

}  // namespace logic

namespace composite_impl {

inline void check_pair(const at::Tensor& a, const char* an, const at::Tensor& b, const char* bn) {
  TORCH_CHECK(a.scalar_type() == b.scalar_type(), "derain: ", an, " and ", bn,
              " must have the same dtype, got ", a.scalar_type(), " and ", b.scalar_type());
  TORCH_CHECK(at::isFloatingType(a.scalar_type()), "derain: ", an,
              " must be a floating-point tensor, got ", a.scalar_type());
  TORCH_CHECK(a.device() == b.device(), "derain: ", an, " and ", bn, " must be on the same device");
}

template <typename L>
at::Tensor min_composite(const at::Tensor& x, const at::Tensor& y) {
  check_pair(x, "x", y, "y");
  at::Tensor out = empty_elementwise(x, at::infer_size(x.sizes(), y.sizes()));
  auto iter = at::TensorIteratorConfig().add_output(out).add_const_input(x).add_const_input(y)
                  .check_all_same_dtype(true).build();
  if (iter.numel() == 0) return out;
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, x.scalar_type(), "min_composite", [&] {
    L::template elementwise<scalar_t>(iter, logic::MinCompositeFn<scalar_t>{});
  });
  return out;
}

template <typename L>
std::tuple<at::Tensor, at::Tensor> min_composite_backward(const at::Tensor& grad, const at::Tensor& x,
                                                          const at::Tensor& y) {
  check_pair(x, "x", y, "y");
  check_pair(grad, "grad", x, "x");
  auto shape = at::infer_size(x.sizes(), y.sizes());
  at::Tensor gx = empty_elementwise(grad, shape);
  at::Tensor gy = empty_elementwise(grad, shape);
  for (int k = 0; k < 2; ++k) {
    at::Tensor& o = k == 0 ? gx : gy;
    auto iter = at::TensorIteratorConfig().add_output(o).add_const_input(grad).add_const_input(x)
                    .add_const_input(y).check_all_same_dtype(true).build();
    if (iter.numel() == 0) continue;
    AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, x.scalar_type(), "min_composite_backward", [&] {
      L::template elementwise<scalar_t>(iter, logic::MinCompositeGradFn<scalar_t>{k == 0});
    });
  }
  return {gx, gy};
}

template <typename L>
at::Tensor rain_composite(const at::Tensor& clean, const at::Tensor& rain, bool clamp) {
  check_pair(clean, "clean", rain, "rain");
  at::Tensor out = empty_elementwise(clean, at::infer_size(clean.sizes(), rain.sizes()));
  auto iter = at::TensorIteratorConfig().add_output(out).add_const_input(clean).add_const_input(rain)
                  .check_all_same_dtype(true).build();
  if (iter.numel() == 0) return out;
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, clean.scalar_type(), "rain_composite", [&] {
    L::template elementwise<scalar_t>(iter, logic::RainCompositeFn<scalar_t>{clamp});
  });
  return out;
}

template <typename L>
at::Tensor rain_composite_backward(const at::Tensor& grad, const at::Tensor& clean, const at::Tensor& rain,
                                   bool clamp) {
  check_pair(clean, "clean", rain, "rain");
  check_pair(grad, "grad", clean, "clean");
  at::Tensor g_out = empty_elementwise(grad, at::infer_size(clean.sizes(), rain.sizes()));
  auto iter = at::TensorIteratorConfig().add_output(g_out).add_const_input(grad).add_const_input(clean)
                  .add_const_input(rain).check_all_same_dtype(true).build();
  if (iter.numel() == 0) return g_out;
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, clean.scalar_type(), "rain_composite_backward", [&] {
    L::template elementwise<scalar_t>(iter, logic::RainCompositeGradFn<scalar_t>{clamp});
  });
  return g_out;
}

}  // namespace composite_impl
}  // namespace derain
