// Median filter (forward and backward) for a launch policy (launch.h): one
// exact selection per output pixel, realising the documented order (value,
// then source flat index h * W + w; a zero pad is value 0 with index -1;
// padded copies counted once each; -0.0 == +0.0) by a radix selection over
// the order-preserving key of the value and then over the index. A window
// holding a NaN returns NaN and passes no gradient. The backward recomputes
// the selection and sums the gradients onto the selected elements with
// index_add_. Contract: docs/ops/median.md, cpu/median_kernel.cpp.
#pragma once

#include <ATen/ATen.h>
#include <ATen/Dispatch.h>

#include <cstring>
#include <string>
#include <type_traits>

#include "host_device.h"

namespace derain {
namespace logic {

// Order-preserving unsigned key of a value (-0.0 and +0.0 map to the same key).
DERAIN_HOST_DEVICE inline uint32_t median_key(float v) {
  if (v == 0.0f) v = 0.0f;
  uint32_t b;
  memcpy(&b, &v, sizeof b);
  return (b & 0x80000000u) ? ~b : (b | 0x80000000u);
}
DERAIN_HOST_DEVICE inline uint64_t median_key(double v) {
  if (v == 0.0) v = 0.0;
  uint64_t b;
  memcpy(&b, &v, sizeof b);
  return (b & 0x8000000000000000ull) ? ~b : (b | 0x8000000000000000ull);
}
DERAIN_HOST_DEVICE inline uint32_t median_key(uint8_t v) { return v; }

template <typename T>
struct MedianKeyOf {  // float16 / bfloat16: the key of the exact float value
  using type = uint32_t;
  static constexpr int bits = 32;
  DERAIN_HOST_DEVICE static uint32_t key(T v) { return median_key(static_cast<float>(v)); }
};
template <>
struct MedianKeyOf<float> {
  using type = uint32_t;
  static constexpr int bits = 32;
  DERAIN_HOST_DEVICE static uint32_t key(float v) { return median_key(v); }
};
template <>
struct MedianKeyOf<double> {
  using type = uint64_t;
  static constexpr int bits = 64;
  DERAIN_HOST_DEVICE static uint64_t key(double v) { return median_key(v); }
};
template <>
struct MedianKeyOf<uint8_t> {
  using type = uint32_t;
  static constexpr int bits = 8;
  DERAIN_HOST_DEVICE static uint32_t key(uint8_t v) { return v; }
};

template <typename T>
DERAIN_HOST_DEVICE inline bool median_is_nan(T v) {
  if constexpr (std::is_same<T, uint8_t>::value) {
    return false;
  } else {
    const float f = static_cast<float>(v);
    return f != f;
  }
}

struct MedianSelection {
  int64_t index;  // source flat index in the plane, -1 for a zero pad
  bool nan;       // the window holds a NaN
};

// The selected element of the kh x kw window around (y, x) of an H x W plane.
template <typename T>
DERAIN_HOST_DEVICE inline MedianSelection median_select(const T* plane, int64_t H, int64_t W, int64_t y, int64_t x,
                                                        int64_t kh, int64_t kw, int pad) {
  using KT = MedianKeyOf<T>;
  using K = typename KT::type;
  const int64_t rh = kh / 2, rw = kw / 2;
  const int64_t mid = (kh * kw - 1) / 2;
  const K zero_key = KT::key(T(0));
  // each window element: (key, index); visit(f) calls f(key, index) for all kh * kw of them
  auto visit = [&](auto&& f) {
    for (int64_t dy = -rh; dy <= rh; ++dy) {
      const int64_t row = source_index(y + dy, H, pad);
      for (int64_t dx = -rw; dx <= rw; ++dx) {
        const int64_t col = source_index(x + dx, W, pad);
        if (row < 0 || col < 0) {
          f(zero_key, int64_t(-1), false);
        } else {
          const T v = plane[row * W + col];
          f(KT::key(v), row * W + col, median_is_nan(v));
        }
      }
    }
  };
  bool nan = false;
  visit([&](K, int64_t, bool is_nan) { nan = nan || is_nan; });
  if (nan) return {-1, true};
  // radix selection of the mid-th smallest key (k: rank of the target among the keys with the prefix)
  K prefix = 0;
  int64_t k = mid;
  for (int b = KT::bits - 1; b >= 0; --b) {
    const K high = b + 1 >= int(sizeof(K) * 8) ? K(0) : (~K(0) << (b + 1));
    int64_t cnt = 0;
    visit([&](K key, int64_t, bool) { cnt += ((key & high) == prefix && !((key >> b) & 1)); });
    if (k >= cnt) {
      k -= cnt;
      prefix |= K(1) << b;
    }
  }
  // among the elements with that key, the k-th smallest index + 1 (zero pad: 0)
  int ibits = 0;
  while ((int64_t(1) << ibits) <= H * W) ++ibits;
  uint64_t iprefix = 0;
  for (int b = ibits - 1; b >= 0; --b) {
    const uint64_t high = ~uint64_t(0) << (b + 1);
    int64_t cnt = 0;
    visit([&](K key, int64_t idx, bool) {
      const uint64_t u = uint64_t(idx + 1);
      cnt += (key == prefix && (u & high) == iprefix && !((u >> b) & 1));
    });
    if (k >= cnt) {
      k -= cnt;
      iprefix |= uint64_t(1) << b;
    }
  }
  return {int64_t(iprefix) - 1, false};
}

// Forward: out[i] (planes (P, H, W) contiguous) = the selected value (NaN for a NaN window).
template <typename T>
struct MedianForwardFn {
  const T* x;
  T* out;
  int64_t H, W, kh, kw;
  int pad;
  DERAIN_HOST_DEVICE void operator()(int64_t i) const {
    const int64_t HW = H * W, p = i / HW, yx = i % HW;
    const T* plane = x + p * HW;
    const MedianSelection s = median_select(plane, H, W, yx / W, yx % W, kh, kw, pad);
    if (s.nan) {
      out[i] = static_cast<T>(NAN);
    } else {
      out[i] = s.index >= 0 ? plane[s.index] : T(0);
    }
  }
};

// Backward: the flat index into x of the element output i routes its gradient to,
// or `sink` (one past the end) for a zero pad or a NaN window.
template <typename T>
struct MedianRouteFn {
  const T* x;
  int64_t* route;
  int64_t H, W, kh, kw, sink;
  int pad;
  DERAIN_HOST_DEVICE void operator()(int64_t i) const {
    const int64_t HW = H * W, p = i / HW, yx = i % HW;
    const MedianSelection s = median_select(x + p * HW, H, W, yx / W, yx % W, kh, kw, pad);
    route[i] = (s.nan || s.index < 0) ? sink : p * HW + s.index;
  }
};

}  // namespace logic

namespace median_impl {

inline int parse_padding(c10::string_view p) {
  if (p == "reflect") return logic::kReflect;
  if (p == "replicate") return logic::kReplicate;
  if (p == "zeros") return logic::kZeros;
  TORCH_CHECK(false, "derain: padding must be one of 'reflect', 'replicate', 'zeros', got '", std::string(p), "'");
}

inline std::pair<int64_t, int64_t> check(const at::Tensor& x, at::IntArrayRef kernel_size) {
  TORCH_CHECK(x.dim() >= 2, "derain: x must have at least 2 dimensions (..., H, W), got ", x.dim());
  TORCH_CHECK(kernel_size.size() == 2, "derain: kernel_size must have 2 elements");
  for (int64_t k : kernel_size) TORCH_CHECK(k >= 1 && k % 2 == 1, "derain: kernel_size must be odd and >= 1, got ", k);
  TORCH_CHECK(kernel_size[0] * kernel_size[1] < (int64_t(1) << 31), "derain: kernel_size too large");
  return {kernel_size[0], kernel_size[1]};
}

#define DERAIN_MEDIAN_DISPATCH(TYPE, NAME, ...)                                                        \
  AT_DISPATCH_SWITCH(TYPE, NAME, AT_DISPATCH_CASE_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, __VA_ARGS__) \
                                     AT_DISPATCH_CASE(at::kByte, __VA_ARGS__))

template <typename T>
using median_storage_t = std::conditional_t<std::is_same<T, c10::Half>::value || std::is_same<T, c10::BFloat16>::value ||
                                                std::is_floating_point<T>::value, T, uint8_t>;

template <typename L>
at::Tensor median_filter(const at::Tensor& x, at::IntArrayRef kernel_size, c10::string_view padding) {
  const auto [kh, kw] = check(x, kernel_size);
  const int pad = parse_padding(padding);
  at::Tensor out = at::empty_like(x, at::MemoryFormat::Preserve);
  if (x.numel() == 0) return out;
  const int64_t H = x.size(-2), W = x.size(-1);
  const at::Tensor xc = x.contiguous();
  at::Tensor oc = out.is_contiguous() ? out : at::empty(x.sizes(), x.options());
  DERAIN_MEDIAN_DISPATCH(x.scalar_type(), "median_filter", [&] {
    using T = median_storage_t<scalar_t>;
    L::grid(xc.numel(), logic::MedianForwardFn<T>{reinterpret_cast<const T*>(xc.data_ptr()),
                                                  reinterpret_cast<T*>(oc.data_ptr()), H, W, kh, kw, pad});
  });
  if (!oc.is_same(out)) out.copy_(oc);
  return out;
}

template <typename L>
at::Tensor median_filter_backward(const at::Tensor& grad, const at::Tensor& x, at::IntArrayRef kernel_size,
                                  c10::string_view padding) {
  const auto [kh, kw] = check(x, kernel_size);
  const int pad = parse_padding(padding);
  TORCH_CHECK(grad.sizes().equals(x.sizes()), "derain: grad must have the shape of x, got ", grad.sizes(), " and ",
              x.sizes());
  TORCH_CHECK(grad.scalar_type() == x.scalar_type() && at::isFloatingType(x.scalar_type()),
              "derain: grad and x must have the same floating dtype");
  at::Tensor out = at::empty_like(x, at::MemoryFormat::Preserve);
  if (x.numel() == 0) return out;
  const int64_t H = x.size(-2), W = x.size(-1), n = x.numel();
  const at::Tensor xc = x.contiguous();
  at::Tensor route = at::empty({n}, x.options().dtype(at::kLong));
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, x.scalar_type(), "median_filter_backward", [&] {
    L::grid(n, logic::MedianRouteFn<scalar_t>{xc.data_ptr<scalar_t>(), route.data_ptr<int64_t>(), H, W, kh, kw, n,
                                              pad});
  });
  at::Tensor acc = at::zeros({n + 1}, x.options());
  acc.index_add_(0, route, grad.contiguous().view({-1}));
  out.copy_(acc.narrow(0, 0, n).view(x.sizes()));
  return out;
}

}  // namespace median_impl
}  // namespace derain
