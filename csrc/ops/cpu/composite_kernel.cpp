// CPU kernels of min_composite and rain_composite (forward and backward).
//
// All four are single passes over a TensorIterator: any broadcastable shapes,
// any strides (channels-last, non-contiguous), both cores, and a tight
// vectorisable loop when a line is contiguous. Argument checking with clear
// messages happens in Python (derain_kernels/ops/composite.py); the TORCH_CHECKs
// here only guard direct torch.ops calls.
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <torch/library.h>

#include "../elementwise.h"

namespace derain {
namespace {

void check_pair(const at::Tensor& a, const char* an, const at::Tensor& b, const char* bn) {
  TORCH_CHECK(a.scalar_type() == b.scalar_type(), "derain: ", an, " and ", bn,
              " must have the same dtype, got ", a.scalar_type(), " and ", b.scalar_type());
  TORCH_CHECK(at::isFloatingType(a.scalar_type()), "derain: ", an,
              " must be a floating-point tensor, got ", a.scalar_type());
}

// Ties go to x, and a NaN in either input is what is returned (and gets the
// gradient): x when x is NaN, y when only y is NaN.
template <typename T>
inline bool selects_x(T x, T y) {
  if (x != x) return true;
  if (y != y) return false;
  return x <= y;
}

at::Tensor min_composite_cpu(const at::Tensor& x, const at::Tensor& y) {
  check_pair(x, "x", y, "y");
  auto shape = at::infer_size(x.sizes(), y.sizes());
  at::Tensor out = empty_elementwise(x, shape);
  auto iter = at::TensorIteratorConfig()
                  .add_output(out)
                  .add_const_input(x)
                  .add_const_input(y)
                  .check_all_same_dtype(true)
                  .build();
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, x.scalar_type(), "min_composite", [&] {
    for_each_line(iter, [](char** d, const int64_t* s, int64_t n) {
      if (line_is_contiguous(s, 3, sizeof(scalar_t))) {
        auto* o = reinterpret_cast<scalar_t*>(d[0]);
        auto* a = reinterpret_cast<const scalar_t*>(d[1]);
        auto* b = reinterpret_cast<const scalar_t*>(d[2]);
DERAIN_SIMD
        for (int64_t i = 0; i < n; ++i) o[i] = selects_x(a[i], b[i]) ? a[i] : b[i];
      } else {
        for (int64_t i = 0; i < n; ++i) {
          scalar_t a = *reinterpret_cast<const scalar_t*>(d[1] + i * s[1]);
          scalar_t b = *reinterpret_cast<const scalar_t*>(d[2] + i * s[2]);
          *reinterpret_cast<scalar_t*>(d[0] + i * s[0]) = selects_x(a, b) ? a : b;
        }
      }
    });
  });
  return out;
}

// Returns the gradients at the broadcast shape; reduction to the input shapes
// (for broadcast inputs) happens in the Python autograd rule.
std::tuple<at::Tensor, at::Tensor> min_composite_backward_cpu(const at::Tensor& grad,
                                                               const at::Tensor& x,
                                                               const at::Tensor& y) {
  check_pair(x, "x", y, "y");
  check_pair(grad, "grad", x, "x");
  auto shape = at::infer_size(x.sizes(), y.sizes());
  at::Tensor gx = empty_elementwise(grad, shape);
  at::Tensor gy = empty_elementwise(grad, shape);
  auto iter = at::TensorIteratorConfig()
                  .add_output(gx)
                  .add_output(gy)
                  .add_const_input(grad)
                  .add_const_input(x)
                  .add_const_input(y)
                  .check_all_same_dtype(true)
                  .build();
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, x.scalar_type(), "min_composite_backward", [&] {
    for_each_line(iter, [](char** d, const int64_t* s, int64_t n) {
      const scalar_t zero(0);
      for (int64_t i = 0; i < n; ++i) {
        scalar_t g = *reinterpret_cast<const scalar_t*>(d[2] + i * s[2]);
        scalar_t a = *reinterpret_cast<const scalar_t*>(d[3] + i * s[3]);
        scalar_t b = *reinterpret_cast<const scalar_t*>(d[4] + i * s[4]);
        bool sx = selects_x(a, b);
        *reinterpret_cast<scalar_t*>(d[0] + i * s[0]) = sx ? g : zero;
        *reinterpret_cast<scalar_t*>(d[1] + i * s[1]) = sx ? zero : g;
      }
    });
  });
  return {gx, gy};
}

template <typename T>
inline T clamp01(T v) {
  // NaN compares false both ways and passes through unchanged.
  return v < T(0) ? T(0) : (v > T(1) ? T(1) : v);
}

at::Tensor rain_composite_cpu(const at::Tensor& clean, const at::Tensor& rain, bool clamp) {
  check_pair(clean, "clean", rain, "rain");
  auto shape = at::infer_size(clean.sizes(), rain.sizes());
  at::Tensor out = empty_elementwise(clean, shape);
  auto iter = at::TensorIteratorConfig()
                  .add_output(out)
                  .add_const_input(clean)
                  .add_const_input(rain)
                  .check_all_same_dtype(true)
                  .build();
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, clean.scalar_type(), "rain_composite", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    for_each_line(iter, [clamp](char** d, const int64_t* s, int64_t n) {
      if (line_is_contiguous(s, 3, sizeof(scalar_t))) {
        auto* o = reinterpret_cast<scalar_t*>(d[0]);
        auto* a = reinterpret_cast<const scalar_t*>(d[1]);
        auto* b = reinterpret_cast<const scalar_t*>(d[2]);
        if (clamp) {
DERAIN_SIMD
          for (int64_t i = 0; i < n; ++i) o[i] = clamp01(acc_t(a[i]) + acc_t(b[i]));
        } else {
DERAIN_SIMD
          for (int64_t i = 0; i < n; ++i) o[i] = acc_t(a[i]) + acc_t(b[i]);
        }
      } else {
        for (int64_t i = 0; i < n; ++i) {
          acc_t v = acc_t(*reinterpret_cast<const scalar_t*>(d[1] + i * s[1])) +
                    acc_t(*reinterpret_cast<const scalar_t*>(d[2] + i * s[2]));
          *reinterpret_cast<scalar_t*>(d[0] + i * s[0]) = clamp ? clamp01(v) : v;
        }
      }
    });
  });
  return out;
}

// d out / d clean = d out / d rain = 1 where 0 <= clean + rain <= 1 (the
// convention of torch.clamp), 0 outside; 1 everywhere without clamping. One
// tensor is returned because both gradients are equal before broadcasting.
at::Tensor rain_composite_backward_cpu(const at::Tensor& grad, const at::Tensor& clean,
                                       const at::Tensor& rain, bool clamp) {
  check_pair(clean, "clean", rain, "rain");
  check_pair(grad, "grad", clean, "clean");
  auto shape = at::infer_size(clean.sizes(), rain.sizes());
  at::Tensor g_out = empty_elementwise(grad, shape);
  auto iter = at::TensorIteratorConfig()
                  .add_output(g_out)
                  .add_const_input(grad)
                  .add_const_input(clean)
                  .add_const_input(rain)
                  .check_all_same_dtype(true)
                  .build();
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, clean.scalar_type(), "rain_composite_backward", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    for_each_line(iter, [clamp](char** d, const int64_t* s, int64_t n) {
      for (int64_t i = 0; i < n; ++i) {
        scalar_t g = *reinterpret_cast<const scalar_t*>(d[1] + i * s[1]);
        acc_t v = acc_t(*reinterpret_cast<const scalar_t*>(d[2] + i * s[2])) +
                  acc_t(*reinterpret_cast<const scalar_t*>(d[3] + i * s[3]));
        bool pass = !clamp || (v >= acc_t(0) && v <= acc_t(1));
        *reinterpret_cast<scalar_t*>(d[0] + i * s[0]) = pass ? g : scalar_t(0);
      }
    });
  });
  return g_out;
}

}  // namespace

TORCH_LIBRARY_IMPL(derain, CPU, m) {
  m.impl("min_composite", &min_composite_cpu);
  m.impl("_min_composite_backward", &min_composite_backward_cpu);
  m.impl("rain_composite", &rain_composite_cpu);
  m.impl("_rain_composite_backward", &rain_composite_backward_cpu);
}

}  // namespace derain
