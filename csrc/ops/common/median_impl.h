// Median filter (forward, selected index, backward) for a launch policy (launch.h). The
// selection realises the documented order (value, then source flat index h * W + w; a zero pad is
// value 0 with index -1; padded copies counted once each; -0.0 == +0.0; a window holding a NaN
// returns NaN and selects nothing) by one of two algorithms:
//  - the tiled selection (median_tiled.h): a thread block ranks a tile's padded region and
//    slides rank histograms; float32/16, bfloat16 and uint8, windows up to about 83 x 83;
//  - elsewhere (float64, larger windows), a per-pixel radix selection over the order-preserving
//    key of the value and then over the index (median_select below).
// The backward scatters the gradients onto the selected elements (scatter_add; the autograd
// kernel keeps the forward's index, median_autograd.cpp). Contract: docs/ops/median.md.
#pragma once

#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>

#include <cstring>
#include <string>
#include <type_traits>

#include "../../config.h"
#include "host_device.h"
#include "median_keys.h"
#include "median_tiled.h"

namespace derain {
namespace logic {

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

// Per-pixel fallback of the tiled selection: out[i] = the selected value (NaN for a NaN window),
// index[i] = its source h * W + w (-1: a zero pad or a NaN window); either may be null.
template <typename T>
struct MedianPixelFn {
  const T* x;
  T* out;
  int32_t* index;
  int64_t H, W, kh, kw;
  int pad;
  DERAIN_HOST_DEVICE void operator()(int64_t i) const {
    const int64_t HW = H * W, p = i / HW, yx = i % HW;
    const T* plane = x + p * HW;
    const MedianSelection s = median_select(plane, H, W, yx / W, yx % W, kh, kw, pad);
    if (out) out[i] = s.nan ? median_nan<T>() : (s.index >= 0 ? plane[s.index] : T(0));
    if (index) index[i] = int32_t(s.index);
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

// The tiled selection (median_tiled.h) where it applies: not float64 (its sort keys hold a 32-bit
// value key), planes under 2**32 - 1 elements, and a window whose tile region fits in shared memory
// (square windows up to 83 x 83), unless config gpu_tiles is off. Returns false, having done nothing,
// elsewhere.
template <typename L, typename T>
bool run_tiled(const T* x, T* out, int32_t* index, int64_t P, int64_t H, int64_t W, int64_t kh, int64_t kw,
               int pad) {
  if constexpr (std::is_same<T, double>::value) {
    return false;
  } else {
    logic::MedianTileShape s;
    if (!config::gpu_tiles() || H * W >= int64_t(0xFFFFFFFF) || !logic::median_tile_shape(kh, kw, &s))
      return false;
    const int64_t ty = (H + s.th - 1) / s.th, tx = (W + s.tw - 1) / s.tw;
    L::blocks(P * ty * tx, logic::kMedianTileThreads, s.smem,
              logic::MedianTileFn<T>{x, out, index, H, W, int(kh), int(kw), pad, ty, tx, s});
    return true;
  }
}

// The selection of every output: the value into `out` and/or the source index into `index`
// (int32, x's shape, contiguous), either undefined to skip it.
template <typename L>
void select(const at::Tensor& x, int64_t kh, int64_t kw, int pad, at::Tensor* out, at::Tensor* index) {
  const int64_t H = x.size(-2), W = x.size(-1), P = x.numel() / (H * W);
  const at::Tensor xc = x.contiguous();
  at::Tensor oc;
  if (out) oc = out->is_contiguous() ? *out : at::empty(x.sizes(), x.options());
  DERAIN_MEDIAN_DISPATCH(x.scalar_type(), "median_filter", [&] {
    using T = median_storage_t<scalar_t>;
    const T* xd = reinterpret_cast<const T*>(xc.data_ptr());
    T* od = out ? reinterpret_cast<T*>(oc.data_ptr()) : nullptr;
    int32_t* id = index ? index->data_ptr<int32_t>() : nullptr;
    if (!run_tiled<L, T>(xd, od, id, P, H, W, kh, kw, pad))
      L::grid(x.numel(), logic::MedianPixelFn<T>{xd, od, id, H, W, kh, kw, pad});
  });
  if (out && !oc.is_same(*out)) out->copy_(oc);
}

template <typename L>
at::Tensor median_filter(const at::Tensor& x, at::IntArrayRef kernel_size, c10::string_view padding) {
  const auto [kh, kw] = check(x, kernel_size);
  const int pad = parse_padding(padding);
  at::Tensor out = at::empty_like(x, at::MemoryFormat::Preserve);
  if (x.numel() > 0) select<L>(x, kh, kw, pad, &out, nullptr);
  return out;
}

inline at::Tensor empty_index(const at::Tensor& x) {
  TORCH_CHECK(x.numel() == 0 || x.size(-2) * x.size(-1) < (int64_t(1) << 31),
              "derain: median_filter's selected index needs H * W < 2**31, got ", x.size(-2), " x ", x.size(-1));
  return at::empty(x.sizes(), x.options().dtype(at::kInt));
}

// The output and, for the backward, each output's selected source h * W + w in its plane (-1 for a
// zero pad or a NaN window).
template <typename L>
std::tuple<at::Tensor, at::Tensor> median_filter_with_index(const at::Tensor& x, at::IntArrayRef kernel_size,
                                                           c10::string_view padding) {
  const auto [kh, kw] = check(x, kernel_size);
  const int pad = parse_padding(padding);
  at::Tensor out = at::empty_like(x, at::MemoryFormat::Preserve);
  at::Tensor index = empty_index(x);
  if (x.numel() > 0) select<L>(x, kh, kw, pad, &out, &index);
  return {out, index};
}

// grad summed onto the selected elements (index as median_filter_with_index gives it), accumulated
// in float for float16/bfloat16; `like`'s layout. ATen ops on symbolic sizes only: any device,
// torch.compile with dynamic shapes, and differentiable in grad (double backward).
inline at::Tensor scatter_to_selected(const at::Tensor& grad, const at::Tensor& index, const at::Tensor& like) {
  TORCH_CHECK(grad.dim() >= 2 && at::isFloatingType(grad.scalar_type()),
              "derain: grad must be a floating tensor (..., H, W)");
  TORCH_CHECK(index.sym_sizes() == grad.sym_sizes() && index.scalar_type() == at::kInt,
              "derain: index must be int32 of grad's shape, got ", index.scalar_type(), " ", index.sym_sizes());
  const at::Tensor none = index.flatten(-2) < 0;  // a zero pad or a NaN window: no element
  const at::Tensor g = grad.flatten(-2).to(at::toOpMathType(grad.scalar_type())).masked_fill(none, 0);
  const at::Tensor to = index.flatten(-2).clamp_min(0).to(at::kLong);  // (those add 0 to element 0)
  const at::Tensor acc = at::zeros_like(g).scatter_add(-1, to, g);
  at::Tensor gx = at::empty_like(like, at::MemoryFormat::Preserve);
  gx.copy_(acc.view_symint(grad.sym_sizes()));
  return gx;
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
  at::Tensor index = empty_index(x);
  if (x.numel() > 0) select<L>(x, kh, kw, pad, nullptr, &index);
  return scatter_to_selected(grad, index, x);
}

}  // namespace median_impl
}  // namespace derain
