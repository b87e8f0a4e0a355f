// Dark channel, total variation and rain-direction sums (forward and backward)
// for a launch policy (launch.h). Each kernel is one functor per output
// element; sums over an image are taken by ATen (at::sum) over per-element
// terms, and gradients that several outputs route to one input element are
// summed by ATen's index_add_. Contracts: those of the CPU kernels
// (cpu/dark_channel_kernel.cpp, cpu/tv_kernel.cpp, cpu/rain_direction_kernel.cpp)
// and docs/ops/related.md.
#pragma once

#include <ATen/ATen.h>
#include <ATen/Dispatch.h>

#include "host_device.h"

namespace derain {
namespace logic {

// ---- dark channel ----
// Order of the window elements: NaN before every number, then by value (-0.0 == +0.0),
// then by code = c * H * W + row * W + col (the smallest code wins ties).
template <typename T>
DERAIN_HOST_DEVICE inline bool dark_before(T a, int64_t ca, T b, int64_t cb) {
  const bool na = a != a, nb = b != b;
  if (na || nb) return na && nb ? ca < cb : na;
  if (a < b) return true;
  if (b < a) return false;
  return ca < cb;
}

// Per output pixel i of (B, 1, H, W): the minimum over channels and the centred
// patch x patch window (periodic mirror at the borders) and its code.
template <typename T>
struct DarkChannelFn {
  const T* x;  // (B, C, H, W) contiguous
  T* out;
  int64_t* index;
  int64_t C, H, W, patch;
  DERAIN_HOST_DEVICE void operator()(int64_t i) const {
    const int64_t HW = H * W, b = i / HW, yx = i % HW, y = yx / W, xx = yx % W, r = patch / 2;
    const T* img = x + b * C * HW;
    T best = T(0);
    int64_t best_code = -1;
    for (int64_t dy = -r; dy <= r; ++dy) {
      const int64_t row = reflect_periodic(y + dy, H);
      for (int64_t dx = -r; dx <= r; ++dx) {
        const int64_t col = reflect_periodic(xx + dx, W);
        for (int64_t c = 0; c < C; ++c) {
          const int64_t code = c * HW + row * W + col;
          const T v = img[code];
          if (best_code < 0 || dark_before(v, code, best, best_code)) best = v, best_code = code;
        }
      }
    }
    out[i] = best;
    index[i] = best_code;
  }
};

// Flat index into (B, C, H, W) of the element selected for output i (for index_add_).
struct DarkChannelScatterIndexFn {
  const int64_t* index;
  int64_t* flat;
  int64_t CHW, HW;
  DERAIN_HOST_DEVICE void operator()(int64_t i) const { flat[i] = (i / HW) * CHW + index[i]; }
};

// ---- total variation ----
template <typename T>
DERAIN_HOST_DEVICE inline T tv_phi(T d, int64_t p) {
  return p == 2 ? d * d : (d < T(0) ? -d : d);
}

// d phi / d d: sign(d) (sign(0) = 0, NaN stays NaN) for p = 1, 2 d for p = 2.
template <typename T>
DERAIN_HOST_DEVICE inline T tv_dphi(T d, int64_t p) {
  if (p == 2) return T(2) * d;
  return d > T(0) ? T(1) : (d < T(0) ? T(-1) : d);
}

// Per element of x (N, C, H, W): |x[y+1] - x[y]|^p and |x[x+1] - x[x]|^p (0 at the last row / column);
// with the zero border (padding "zeros") the first row and column also count |x|^p, their difference
// to the zero row above and the zero column to the left.
template <typename T>
struct TvTermsFn {
  const T* x;
  T* vert;
  T* horiz;
  int64_t H, W, p;
  bool zero_border;
  DERAIN_HOST_DEVICE void operator()(int64_t i) const {
    const int64_t yx = i % (H * W), y = yx / W, xx = yx % W;
    vert[i] = (y + 1 < H ? tv_phi(x[i + W] - x[i], p) : T(0)) + (zero_border && y == 0 ? tv_phi(x[i], p) : T(0));
    horiz[i] = (xx + 1 < W ? tv_phi(x[i + 1] - x[i], p) : T(0)) + (zero_border && xx == 0 ? tv_phi(x[i], p) : T(0));
  }
};

// Gradient at element i of x from grad (N, 2) = (g_vertical, g_horizontal) per image.
template <typename T>
struct TvGradFn {
  const T* x;
  const T* grad;
  T* gx;
  int64_t CHW, H, W, p;
  bool zero_border;
  DERAIN_HOST_DEVICE void operator()(int64_t i) const {
    const int64_t n = i / CHW, yx = i % (H * W), y = yx / W, xx = yx % W;
    const T gv = grad[2 * n], gh = grad[2 * n + 1];
    T dv = T(0), dh = T(0);
    if (y >= 1) dv += tv_dphi(x[i] - x[i - W], p);
    else if (zero_border) dv += tv_dphi(x[i], p);
    if (y + 1 < H) dv -= tv_dphi(x[i + W] - x[i], p);
    if (xx >= 1) dh += tv_dphi(x[i] - x[i - 1], p);
    else if (zero_border) dh += tv_dphi(x[i], p);
    if (xx + 1 < W) dh -= tv_dphi(x[i + 1] - x[i], p);
    gx[i] = gv * dv + gh * dh;
  }
};

// ---- rain direction ----
// R_m(y, x) = sum_{i,j} k_m[i, j] d(y + i - r, x + j - r), d = z - z_gt, zero padding.
template <typename T>
DERAIN_HOST_DEVICE inline T rd_response(const T* z, const T* zg, const T* k, int64_t H, int64_t W, int64_t K,
                                        int64_t y, int64_t x) {
  const int64_t r = K / 2;
  T acc = T(0);
  for (int64_t i = 0; i < K; ++i) {
    const int64_t yy = y + i - r;
    if (yy < 0 || yy >= H) continue;
    for (int64_t j = 0; j < K; ++j) {
      const int64_t xx = x + j - r;
      if (xx < 0 || xx >= W) continue;
      acc += k[i * K + j] * (z[yy * W + xx] - zg[yy * W + xx]);
    }
  }
  return acc;
}

// Per (b, m, c, y, x): |R_m| of channel c of image b (summed by ATen to (B, M)).
template <typename T>
struct RainDirectionTermsFn {
  const T* z;
  const T* zg;
  const T* k;  // (B, M, K, K)
  T* terms;    // (B, M, C, H, W)
  int64_t M, C, H, W, K;
  DERAIN_HOST_DEVICE void operator()(int64_t i) const {
    const int64_t HW = H * W, yx = i % HW, c = (i / HW) % C, m = (i / (HW * C)) % M, b = i / (HW * C * M);
    const int64_t plane = (b * C + c) * HW;
    const T v = rd_response(z + plane, zg + plane, k + (b * M + m) * K * K, H, W, K, yx / W, yx % W);
    terms[i] = v < T(0) ? -v : v;
  }
};

// Per (b, m, c, y, x): g[b, m] * sign(R_m) (sign(0) = 0, NaN stays NaN).
template <typename T>
struct RainDirectionSignFn {
  const T* z;
  const T* zg;
  const T* k;
  const T* grad;  // (B, M)
  T* s;           // (B, M, C, H, W)
  int64_t M, C, H, W, K;
  DERAIN_HOST_DEVICE void operator()(int64_t i) const {
    const int64_t HW = H * W, yx = i % HW, c = (i / HW) % C, m = (i / (HW * C)) % M, b = i / (HW * C * M);
    const int64_t plane = (b * C + c) * HW;
    const T v = rd_response(z + plane, zg + plane, k + (b * M + m) * K * K, H, W, K, yx / W, yx % W);
    s[i] = grad[b * M + m] * tv_dphi(v, 1);
  }
};

// Per element (b, c, y, x) of z: sum_m sum_{i,j} k_m[i, j] s_m(y - i + r, x - j + r).
template <typename T>
struct RainDirectionGradFn {
  const T* s;  // (B, M, C, H, W)
  const T* k;  // (B, M, K, K)
  T* gz;       // (B, C, H, W)
  int64_t M, C, H, W, K;
  DERAIN_HOST_DEVICE void operator()(int64_t i) const {
    const int64_t HW = H * W, yx = i % HW, y = yx / W, x = yx % W, c = (i / HW) % C, b = i / (HW * C);
    const int64_t r = K / 2;
    T acc = T(0);
    for (int64_t m = 0; m < M; ++m) {
      const T* sp = s + ((b * M + m) * C + c) * HW;
      const T* km = k + (b * M + m) * K * K;
      for (int64_t ii = 0; ii < K; ++ii) {
        const int64_t yy = y - ii + r;
        if (yy < 0 || yy >= H) continue;
        for (int64_t jj = 0; jj < K; ++jj) {
          const int64_t xx = x - jj + r;
          if (xx < 0 || xx >= W) continue;
          acc += km[ii * K + jj] * sp[yy * W + xx];
        }
      }
    }
    gz[i] = acc;
  }
};

}  // namespace logic

namespace related_impl {

// channels-last in, channels-last out; contiguous otherwise (the CPU kernels' rule).
inline at::Tensor empty_layout_of(const at::Tensor& x) {
  const bool cl = x.dim() == 4 && !x.is_contiguous() && x.is_contiguous(at::MemoryFormat::ChannelsLast);
  return at::empty(x.sizes(), x.options().memory_format(cl ? at::MemoryFormat::ChannelsLast
                                                            : at::MemoryFormat::Contiguous));
}

inline at::Tensor in_layout_of(const at::Tensor& x, const at::Tensor& contiguous_result) {
  at::Tensor out = empty_layout_of(x);
  if (out.is_contiguous()) return contiguous_result;
  return out.copy_(contiguous_result);
}

inline void check_real(const at::Tensor& t, const char* op, const char* name) {
  TORCH_CHECK(t.scalar_type() == at::kFloat || t.scalar_type() == at::kDouble, "derain::", op, ": ", name,
              " must be float32 or float64, got ", t.scalar_type());
}

template <typename L>
std::tuple<at::Tensor, at::Tensor> dark_channel(const at::Tensor& x, int64_t patch) {
  TORCH_CHECK(x.dim() == 4, "derain::_dark_channel: x must be (B, C, H, W), got ", x.sizes());
  check_real(x, "_dark_channel", "x");
  TORCH_CHECK(patch >= 1 && patch % 2 == 1, "derain::_dark_channel: patch must be odd and >= 1, got ", patch);
  const int64_t B = x.size(0), C = x.size(1), H = x.size(2), W = x.size(3);
  TORCH_CHECK(C >= 1, "derain::_dark_channel: x must have at least one channel");
  at::Tensor out = at::empty({B, 1, H, W}, x.options());
  at::Tensor index = at::empty({B, 1, H, W}, x.options().dtype(at::kLong));
  if (out.numel() == 0) return {out, index};
  const at::Tensor xc = x.contiguous();
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "dark_channel", [&] {
    L::grid(B * H * W, logic::DarkChannelFn<scalar_t>{xc.data_ptr<scalar_t>(), out.data_ptr<scalar_t>(),
                                                       index.data_ptr<int64_t>(), C, H, W, patch});
  });
  return {out, index};
}

template <typename L>
at::Tensor dark_channel_backward(const at::Tensor& grad, const at::Tensor& index, int64_t channels) {
  TORCH_CHECK(grad.dim() == 4 && grad.size(1) == 1, "derain::_dark_channel_backward: grad must be (B, 1, H, W)");
  TORCH_CHECK(index.sizes().equals(grad.sizes()) && index.scalar_type() == at::kLong,
              "derain::_dark_channel_backward: index must be int64 of grad's shape");
  TORCH_CHECK(channels >= 1, "derain::_dark_channel_backward: channels must be >= 1");
  const int64_t B = grad.size(0), H = grad.size(2), W = grad.size(3);
  at::Tensor gx = at::zeros({B, channels, H, W}, grad.options());
  if (grad.numel() == 0) return gx;
  const at::Tensor ic = index.contiguous();
  at::Tensor flat = at::empty({B * H * W}, index.options());
  L::grid(B * H * W, logic::DarkChannelScatterIndexFn{ic.data_ptr<int64_t>(), flat.data_ptr<int64_t>(),
                                                       channels * H * W, H * W});
  gx.view({-1}).index_add_(0, flat, grad.contiguous().view({-1}));
  return gx;
}

// padding "valid" (no border) or "zeros" (the first row and column against a zero border)
inline bool tv_zero_border(c10::string_view padding, const char* op) {
  if (padding == "zeros") return true;
  TORCH_CHECK(padding == "valid", "derain::", op, ": padding must be 'valid' or 'zeros', got '",
              std::string(padding), "'");
  return false;
}

template <typename L>
at::Tensor tv_sums(const at::Tensor& x, int64_t p, c10::string_view padding) {
  const bool zb = tv_zero_border(padding, "_tv_sums");
  TORCH_CHECK(x.dim() == 4, "derain::_tv_sums: x must be (N, C, H, W), got ", x.sizes());
  check_real(x, "_tv_sums", "x");
  TORCH_CHECK(p == 1 || p == 2, "derain::_tv_sums: p must be 1 or 2, got ", p);
  const int64_t N = x.size(0), H = x.size(2), W = x.size(3);
  if (x.numel() == 0) return at::zeros({N, 2}, x.options());
  const at::Tensor xc = x.contiguous();
  at::Tensor terms = at::empty({2, N, xc.numel() / std::max<int64_t>(N, 1)}, x.options());
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "tv_sums", [&] {
    scalar_t* t = terms.data_ptr<scalar_t>();
    L::grid(xc.numel(), logic::TvTermsFn<scalar_t>{xc.data_ptr<scalar_t>(), t, t + xc.numel(), H, W, p, zb});
  });
  return terms.sum(2).t().contiguous();
}

template <typename L>
at::Tensor tv_sums_backward(const at::Tensor& grad, const at::Tensor& x, int64_t p, c10::string_view padding) {
  const bool zb = tv_zero_border(padding, "_tv_sums_backward");
  TORCH_CHECK(x.dim() == 4, "derain::_tv_sums_backward: x must be (N, C, H, W), got ", x.sizes());
  check_real(x, "_tv_sums_backward", "x");
  TORCH_CHECK(p == 1 || p == 2, "derain::_tv_sums_backward: p must be 1 or 2, got ", p);
  TORCH_CHECK(grad.dim() == 2 && grad.size(0) == x.size(0) && grad.size(1) == 2,
              "derain::_tv_sums_backward: grad must be (N, 2)");
  TORCH_CHECK(grad.scalar_type() == x.scalar_type(), "derain::_tv_sums_backward: grad and x dtypes differ");
  if (x.numel() == 0) return empty_layout_of(x);
  const at::Tensor xc = x.contiguous(), gc = grad.contiguous();
  at::Tensor gx = at::empty(x.sizes(), x.options());
  const int64_t H = x.size(2), W = x.size(3);
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "tv_sums_backward", [&] {
    L::grid(xc.numel(), logic::TvGradFn<scalar_t>{xc.data_ptr<scalar_t>(), gc.data_ptr<scalar_t>(),
                                                  gx.data_ptr<scalar_t>(), x.size(1) * H * W, H, W, p, zb});
  });
  return in_layout_of(x, gx);
}

inline void check_rain_direction(const at::Tensor& z, const at::Tensor& zg, const at::Tensor& k, const char* op) {
  TORCH_CHECK(z.dim() == 4, "derain::", op, ": z must be (B, C, H, W), got ", z.sizes());
  TORCH_CHECK(zg.sizes().equals(z.sizes()), "derain::", op, ": z_gt must have z's shape");
  check_real(z, op, "z");
  TORCH_CHECK(zg.scalar_type() == z.scalar_type() && k.scalar_type() == z.scalar_type(), "derain::", op,
              ": z, z_gt and kernels must have the same dtype");
  TORCH_CHECK(k.dim() == 4 && k.size(0) == z.size(0) && k.size(2) == k.size(3) && k.size(2) % 2 == 1,
              "derain::", op, ": kernels must be (B, M, K, K) with odd K, got ", k.sizes());
}

template <typename L>
at::Tensor rain_direction_sums(const at::Tensor& z, const at::Tensor& z_gt, const at::Tensor& kernels) {
  check_rain_direction(z, z_gt, kernels, "_rain_direction_sums");
  const int64_t B = z.size(0), C = z.size(1), H = z.size(2), W = z.size(3), M = kernels.size(1),
                K = kernels.size(2);
  if (B * M == 0 || C * H * W == 0) return at::zeros({B, M}, z.options());
  const at::Tensor zc = z.contiguous(), gc = z_gt.contiguous(), kc = kernels.contiguous();
  at::Tensor terms = at::empty({B, M, C * H * W}, z.options());
  AT_DISPATCH_FLOATING_TYPES(z.scalar_type(), "rain_direction_sums", [&] {
    L::grid(terms.numel(), logic::RainDirectionTermsFn<scalar_t>{zc.data_ptr<scalar_t>(), gc.data_ptr<scalar_t>(),
                                                                 kc.data_ptr<scalar_t>(), terms.data_ptr<scalar_t>(),
                                                                 M, C, H, W, K});
  });
  return terms.sum(2);
}

template <typename L>
at::Tensor rain_direction_sums_backward(const at::Tensor& grad, const at::Tensor& z, const at::Tensor& z_gt,
                                        const at::Tensor& kernels) {
  check_rain_direction(z, z_gt, kernels, "_rain_direction_sums_backward");
  const int64_t B = z.size(0), C = z.size(1), H = z.size(2), W = z.size(3), M = kernels.size(1),
                K = kernels.size(2);
  TORCH_CHECK(grad.dim() == 2 && grad.size(0) == B && grad.size(1) == M,
              "derain::_rain_direction_sums_backward: grad must be (B, M)");
  TORCH_CHECK(grad.scalar_type() == z.scalar_type(), "derain::_rain_direction_sums_backward: grad dtype");
  if (z.numel() == 0) return empty_layout_of(z);
  if (M == 0) return in_layout_of(z, at::zeros(z.sizes(), z.options()));
  const at::Tensor zc = z.contiguous(), gc = z_gt.contiguous(), kc = kernels.contiguous(),
                   grc = grad.contiguous();
  at::Tensor s = at::empty({B, M, C, H, W}, z.options());
  at::Tensor gz = at::empty(z.sizes(), z.options());
  AT_DISPATCH_FLOATING_TYPES(z.scalar_type(), "rain_direction_sums_backward", [&] {
    L::grid(s.numel(), logic::RainDirectionSignFn<scalar_t>{zc.data_ptr<scalar_t>(), gc.data_ptr<scalar_t>(),
                                                            kc.data_ptr<scalar_t>(), grc.data_ptr<scalar_t>(),
                                                            s.data_ptr<scalar_t>(), M, C, H, W, K});
    L::grid(gz.numel(), logic::RainDirectionGradFn<scalar_t>{s.data_ptr<scalar_t>(), kc.data_ptr<scalar_t>(),
                                                             gz.data_ptr<scalar_t>(), M, C, H, W, K});
  });
  return in_layout_of(z, gz);
}

}  // namespace related_impl
}  // namespace derain
