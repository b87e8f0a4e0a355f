// SSIM value and gradients for a launch policy (launch.h), by one of two equal paths:
//  - tiles (ssim_tiled.h, the default): two thread-block kernels with the operands in shared
//    memory, the map and the derivative maps from the first, the gradients from the second;
//  - per element (config gpu_tiles off, or windows too large for a tile's shared memory):
//    separable Gaussian blurs as one functor per output element (horizontal, then vertical),
//    the SSIM terms and their derivatives per pixel, and the transposed blurs of the backward
//    as gathers over the (output, tap) pairs that read each input pixel.
// Both compute every value as the same sum in the same order: bit-identical results.
// Same definitions, padding conventions, clamping rule and gradient
// conventions as the CPU kernel (cpu/ssim_kernel.cpp, docs/ops/ssim.md).
// Accumulation in the input dtype; the means of the reductions in float64.
#pragma once

#include <ATen/ATen.h>
#include <ATen/Dispatch.h>

#include <algorithm>
#include <cmath>
#include <string>

#include "../../config.h"
#include "host_device.h"

namespace derain {
namespace logic {

// Normalised 1-D Gaussian of K taps, computed in float64 (one call writes all taps).
template <typename T>
struct GaussianWindowFn {
  T* w;
  int64_t K;
  double sigma;
  DERAIN_HOST_DEVICE void operator()(int64_t) const {
    const int64_t r = K / 2;
    double sum = 0;
    for (int64_t k = 0; k < K; ++k) sum += exp(-double((k - r) * (k - r)) / (2.0 * sigma * sigma));
    for (int64_t k = 0; k < K; ++k) w[k] = T(exp(-double((k - r) * (k - r)) / (2.0 * sigma * sigma)) / sum);
  }
};

// Source position of tap k of output o along a side of n (nout outputs), or -1 (a zero pad).
DERAIN_HOST_DEVICE inline int64_t ssim_tap_source(int64_t o, int64_t k, int64_t K, int64_t n, int pad) {
  if (pad == kValid) return o + k;
  const int64_t t = o + k - K / 2;
  if (t >= 0 && t < n) return t;
  if (pad == kZeros) return -1;
  return t < 0 ? -t : 2 * (n - 1) - t;  // torch "reflect" (one reflection: n > K / 2)
}

// The 5 statistics read by SSIM: x, y, x², y², xy.
template <typename T>
DERAIN_HOST_DEVICE inline T ssim_stat(int s, T a, T b) {
  switch (s) {
    case 0: return a;
    case 1: return b;
    case 2: return a * a;
    case 3: return b * b;
    default: return a * b;
  }
}

// Horizontal blur of the 5 statistics: in (P, H, W) -> out (5, P, H, Wo).
template <typename T>
struct SsimBlurRowsFn {
  const T* x;
  const T* y;
  const T* w;
  T* out;
  int64_t P, H, W, Wo, K;
  int pad;
  DERAIN_HOST_DEVICE void operator()(int64_t i) const {
    const int64_t per = P * H * Wo, s = i / per, j = i % per, xo = j % Wo, row = j / Wo;
    const T* xr = x + row * W;
    const T* yr = y + row * W;
    T acc = T(0);
    for (int64_t k = 0; k < K; ++k) {
      const int64_t src = ssim_tap_source(xo, k, K, W, pad);
      if (src >= 0) acc += w[k] * ssim_stat(int(s), xr[src], yr[src]);
    }
    out[i] = acc;
  }
};

// Vertical blur: in (S, P, H, Wo) -> out (S, P, Ho, Wo).
template <typename T>
struct SsimBlurColsFn {
  const T* in;
  const T* w;
  T* out;
  int64_t H, Ho, Wo, K;
  int pad;
  DERAIN_HOST_DEVICE void operator()(int64_t i) const {
    const int64_t xo = i % Wo, yo = (i / Wo) % Ho, plane = i / (Wo * Ho);
    const T* col = in + plane * H * Wo + xo;
    T acc = T(0);
    for (int64_t k = 0; k < K; ++k) {
      const int64_t src = ssim_tap_source(yo, k, K, H, pad);
      if (src >= 0) acc += w[k] * col[src * Wo];
    }
    out[i] = acc;
  }
};

// Transposed blur along one side, at source position s of a side of n with nout outputs:
// sum of w[k] * g(o) over the (o, k) whose tap k of output o reads s.
template <typename T, typename G>
DERAIN_HOST_DEVICE inline T ssim_transposed_taps(int64_t s, int64_t n, int64_t nout, int64_t K, int pad,
                                                 const T* w, const G& g) {
  const int64_t r = K / 2;
  T acc = T(0);
  for (int64_t k = 0; k < K; ++k) {
    if (pad == kValid) {
      const int64_t o = s - k;
      if (o >= 0 && o < nout) acc += w[k] * g(o);
      continue;
    }
    // padded positions t = o + k - r whose source is s: s itself, and for "reflect"
    // its mirror images -s (left) and 2(n - 1) - s (right)
    int64_t ts[3] = {s, -1, -1};
    int nt = 1;
    if (pad == kReflect) {
      if (s >= 1) ts[nt++] = -s;
      if (s < n - 1) ts[nt++] = 2 * (n - 1) - s;
    }
    for (int q = 0; q < nt; ++q) {
      const int64_t o = ts[q] - k + r;
      if (o >= 0 && o < nout) acc += w[k] * g(o);
    }
  }
  return acc;
}

// SSIM at a pixel from the blurred statistics, and its derivatives with respect to them.
template <typename T>
struct SsimTerms {
  T s, d_mx, d_my, d_xx, d_yy, d_xy;
};

template <typename T>
DERAIN_HOST_DEVICE inline SsimTerms<T> ssim_terms(T mx, T my, T exx, T eyy, T exy, T c1, T c2) {
  const T vx = exx - mx * mx, vy = eyy - my * my, cxy = exy - mx * my;
  const bool okx = !(vx < T(0)), oky = !(vy < T(0));  // clamp at 0; NaN passes as in torch.clamp
  const T sx = okx ? vx : T(0), sy = oky ? vy : T(0);
  const T sxy = (okx && oky) ? cxy : T(0);
  const T a1 = T(2) * (mx * my) + c1;
  const T b1 = a1 + (mx - my) * (mx - my);
  const T a2 = T(2) * sxy + c2;
  const T b2 = sx + sy + c2;
  const T den = b1 * b2;
  SsimTerms<T> t;
  t.s = (a1 * a2) / den;
  const T d_a1 = a2 / den, d_b1 = -t.s / b1, d_a2 = a1 / den, d_b2 = -t.s / b2;
  const T g_vx = okx ? d_b2 : T(0), g_vy = oky ? d_b2 : T(0);
  const T g_cxy = (okx && oky) ? T(2) * d_a2 : T(0);
  t.d_xx = g_vx;
  t.d_yy = g_vy;
  t.d_xy = g_cxy;
  t.d_mx = d_a1 * (T(2) * my) + d_b1 * (T(2) * mx) - g_vx * (T(2) * mx) - g_cxy * my;
  t.d_my = d_a1 * (T(2) * mx) + d_b1 * (T(2) * my) - g_vy * (T(2) * my) - g_cxy * mx;
  return t;
}

// Map pixel i of n: the SSIM value into map, and the derivatives times the incoming gradient's
// weight gweight[i / per_weight] * scale into d (5, n); either may be null.
template <typename T>
DERAIN_HOST_DEVICE inline void ssim_store(const SsimTerms<T>& t, int64_t i, int64_t n, T* map, T* d,
                                          const T* gweight, int64_t per_weight, T scale) {
  if (map) map[i] = t.s;
  if (d) {
    const T g = gweight[i / per_weight] * scale;
    d[i] = t.d_mx * g;
    d[n + i] = t.d_my * g;
    d[2 * n + i] = t.d_xx * g;
    d[3 * n + i] = t.d_yy * g;
    d[4 * n + i] = t.d_xy * g;
  }
}

// Per map pixel: the SSIM value, and (when d is set) the derivatives times the
// incoming gradient weight: d (5, n) = (D_mx, D_my, D_xx, D_yy, D_xy) * weight.
// weight: gmap[i] (reduction "map"), or gvec[i / per_weight] * scale.
template <typename T>
struct SsimMapFn {
  const T* stats;  // (5, n)
  T* map;          // may be null
  T* d;            // may be null
  const T* gweight;
  int64_t n, per_weight;
  T scale, c1, c2;
  DERAIN_HOST_DEVICE void operator()(int64_t i) const {
    ssim_store(ssim_terms(stats[i], stats[n + i], stats[2 * n + i], stats[3 * n + i], stats[4 * n + i], c1, c2), i,
               n, map, d, gweight, per_weight, scale);
  }
};

// Transposed vertical blur of the derivative maps: (S, P, Ho, Wo) -> (S, P, H, Wo).
template <typename T>
struct SsimTransposeColsFn {
  const T* d;
  const T* w;
  T* out;
  int64_t H, Ho, Wo, K;
  int pad;
  DERAIN_HOST_DEVICE void operator()(int64_t i) const {
    const int64_t xo = i % Wo, ys = (i / Wo) % H, plane = i / (Wo * H);
    const T* col = d + plane * Ho * Wo + xo;
    out[i] = ssim_transposed_taps(ys, H, Ho, K, pad, w, [&](int64_t o) { return col[o * Wo]; });
  }
};

// Transposed horizontal blur and the chain rule to the inputs at pixel i of (P, H, W):
//   gx = Gᵀ D_mx + 2x Gᵀ D_xx + y Gᵀ D_xy,  gy = Gᵀ D_my + 2y Gᵀ D_yy + x Gᵀ D_xy.
// t: the column-transposed maps (5, P, H, Wo); gx / gy may be null.
template <typename T>
struct SsimGradFn {
  const T* t;
  const T* x;
  const T* y;
  const T* w;
  T* gx;
  T* gy;
  int64_t P, H, W, Wo, K;
  int pad;
  DERAIN_HOST_DEVICE T tr(int s, int64_t row, int64_t xs) const {
    const T* r = t + (int64_t(s) * P * H + row) * Wo;
    return ssim_transposed_taps(xs, W, Wo, K, pad, w, [&](int64_t o) { return r[o]; });
  }
  DERAIN_HOST_DEVICE void operator()(int64_t i) const {
    const int64_t xs = i % W, row = i / W;
    const T tmxy = tr(4, row, xs);
    if (gx) gx[i] = tr(0, row, xs) + T(2) * x[i] * tr(2, row, xs) + y[i] * tmxy;
    if (gy) gy[i] = tr(1, row, xs) + T(2) * y[i] * tr(3, row, xs) + x[i] * tmxy;
  }
};

}  // namespace logic
}  // namespace derain

#include "ssim_tiled.h"

namespace derain {
namespace ssim_impl {

enum class Red { Mean, None, Map };

inline int parse_padding(c10::string_view p) {
  if (p == "zeros") return logic::kZeros;
  if (p == "valid") return logic::kValid;
  if (p == "reflect") return logic::kReflect;
  TORCH_CHECK(false, "derain.ssim: padding must be 'zeros', 'valid' or 'reflect', got '", std::string(p), "'");
}

inline Red parse_reduction(c10::string_view r) {
  if (r == "mean") return Red::Mean;
  if (r == "none") return Red::None;
  if (r == "map") return Red::Map;
  TORCH_CHECK(false, "derain.ssim: reduction must be 'mean', 'none' or 'map', got '", std::string(r), "'");
}

struct Args {
  int64_t P, H, W, Ho, Wo, K, B;  // B: images of reduction "none" (leading dim, or 1 for 2-D inputs)
  int pad;
  Red red;
  double sigma, c1, c2;
};

inline Args check(const at::Tensor& x, const at::Tensor& y, int64_t window_size, double sigma, double data_range,
                  c10::string_view padding, c10::string_view reduction, double k1, double k2) {
  TORCH_CHECK(x.scalar_type() == y.scalar_type(), "derain.ssim: x and y must have the same dtype");
  TORCH_CHECK(x.scalar_type() == at::kFloat || x.scalar_type() == at::kDouble,
              "derain.ssim: x must be float32 or float64, got ", x.scalar_type());
  TORCH_CHECK(x.sizes().equals(y.sizes()), "derain.ssim: x and y must have the same shape");
  TORCH_CHECK(x.device() == y.device(), "derain.ssim: x and y must be on the same device");
  TORCH_CHECK(x.dim() >= 2, "derain.ssim: x must have at least 2 dimensions (..., H, W)");
  TORCH_CHECK(window_size >= 1 && window_size % 2 == 1, "derain.ssim: window_size must be odd and >= 1");
  Args a;
  a.pad = parse_padding(padding);
  a.red = parse_reduction(reduction);
  a.H = x.size(-2), a.W = x.size(-1), a.K = window_size;
  TORCH_CHECK(a.H > 0 && a.W > 0, "derain.ssim: empty images");
  const int64_t r = window_size / 2;
  TORCH_CHECK(a.pad != logic::kValid || (a.H >= window_size && a.W >= window_size),
              "derain.ssim: padding 'valid' needs images of at least window_size");
  TORCH_CHECK(a.pad != logic::kReflect || (a.H > r && a.W > r),
              "derain.ssim: padding 'reflect' needs images larger than window_size // 2");
  a.P = x.numel() / (a.H * a.W);
  a.Ho = a.pad == logic::kValid ? a.H - a.K + 1 : a.H;
  a.Wo = a.pad == logic::kValid ? a.W - a.K + 1 : a.W;
  a.B = x.dim() >= 3 ? x.size(0) : 1;
  a.sigma = sigma;
  a.c1 = (k1 * data_range) * (k1 * data_range);
  a.c2 = (k2 * data_range) * (k2 * data_range);
  return a;
}

// Blurred statistics (5, P, Ho, Wo) and the window.
template <typename L, typename T>
std::tuple<at::Tensor, at::Tensor> stats(const Args& a, const at::Tensor& xc, const at::Tensor& yc) {
  at::Tensor w = at::empty({a.K}, xc.options());
  L::grid(1, logic::GaussianWindowFn<T>{w.data_ptr<T>(), a.K, a.sigma});
  at::Tensor rows = at::empty({5, a.P, a.H, a.Wo}, xc.options());
  L::grid(rows.numel(), logic::SsimBlurRowsFn<T>{xc.data_ptr<T>(), yc.data_ptr<T>(), w.data_ptr<T>(),
                                                 rows.data_ptr<T>(), a.P, a.H, a.W, a.Wo, a.K, a.pad});
  at::Tensor st = at::empty({5, a.P, a.Ho, a.Wo}, xc.options());
  L::grid(st.numel(), logic::SsimBlurColsFn<T>{rows.data_ptr<T>(), w.data_ptr<T>(), st.data_ptr<T>(), a.H, a.Ho,
                                               a.Wo, a.K, a.pad});
  return {st, w};
}

inline std::vector<int64_t> map_shape(const at::Tensor& x, const Args& a) {
  std::vector<int64_t> s(x.sizes().begin(), x.sizes().end() - 2);
  s.push_back(a.Ho);
  s.push_back(a.Wo);
  return s;
}

inline at::Tensor reduce(const at::Tensor& map, const at::Tensor& x, const Args& a) {
  if (a.red == Red::Map) return map.view(map_shape(x, a));
  if (a.red == Red::None && x.dim() >= 3)
    return map.view({a.B, -1}).sum(1, false, at::kDouble).div_(double(map.numel() / a.B)).to(x.scalar_type());
  return map.sum(at::kDouble).div_(double(map.numel())).to(x.scalar_type());
}

// The incoming gradient of the reduced value as a weight per map pixel: gw[i / per_weight] * scale.
struct Weight {
  at::Tensor gw;
  int64_t per_weight;
  double scale;
};

inline Weight weight_of(const Args& a, const at::Tensor& xc, const at::Tensor& grad) {
  const int64_t n = a.P * a.Ho * a.Wo;
  Weight wt{grad.contiguous(), 1, 1.0};
  if (a.red == Red::Map) {
    TORCH_CHECK(wt.gw.numel() == n, "derain.ssim_backward: grad must have the map's shape");
  } else if (a.red == Red::None && xc.dim() >= 3) {
    TORCH_CHECK(wt.gw.numel() == a.B, "derain.ssim_backward: grad must have shape (B,) for reduction 'none'");
    wt.per_weight = n / a.B;
    wt.scale = 1.0 / double(wt.per_weight);
  } else {
    TORCH_CHECK(wt.gw.numel() == 1, "derain.ssim_backward: grad must be a scalar for reduction 'mean'");
    wt.per_weight = n;
    wt.scale = 1.0 / double(n);
  }
  return wt;
}

// Per-element path: gradients of the reduced SSIM with respect to x (need_x) and y (need_y), given
// the statistics and the incoming gradient `grad` of the reduced value.
template <typename L, typename T>
std::tuple<at::Tensor, at::Tensor> grads(const Args& a, const at::Tensor& xc, const at::Tensor& yc,
                                         const at::Tensor& st, const at::Tensor& w, const at::Tensor& grad,
                                         at::Tensor* map_out, bool need_x, bool need_y) {
  const int64_t n = a.P * a.Ho * a.Wo;
  const Weight wt = weight_of(a, xc, grad);
  at::Tensor d = at::empty({5, a.P, a.Ho, a.Wo}, xc.options());
  T* map_ptr = nullptr;
  if (map_out) {
    *map_out = at::empty({a.P, a.Ho, a.Wo}, xc.options());
    map_ptr = map_out->data_ptr<T>();
  }
  L::grid(n, logic::SsimMapFn<T>{st.data_ptr<T>(), map_ptr, d.data_ptr<T>(), wt.gw.data_ptr<T>(), n,
                                 wt.per_weight, T(wt.scale), T(a.c1), T(a.c2)});
  at::Tensor t = at::empty({5, a.P, a.H, a.Wo}, xc.options());
  L::grid(t.numel(), logic::SsimTransposeColsFn<T>{d.data_ptr<T>(), w.data_ptr<T>(), t.data_ptr<T>(), a.H, a.Ho,
                                                   a.Wo, a.K, a.pad});
  at::Tensor gx = need_x ? at::empty(xc.sizes(), xc.options()) : at::Tensor();
  at::Tensor gy = need_y ? at::empty(xc.sizes(), xc.options()) : at::Tensor();
  L::grid(xc.numel(), logic::SsimGradFn<T>{t.data_ptr<T>(), xc.data_ptr<T>(), yc.data_ptr<T>(), w.data_ptr<T>(),
                                           need_x ? gx.data_ptr<T>() : nullptr,
                                           need_y ? gy.data_ptr<T>() : nullptr, a.P, a.H, a.W, a.Wo, a.K, a.pad});
  return {gx, gy};
}

// ---- the tiled path ----

inline logic::SsimTileGeom tile_geom(const Args& a, bool over_input) {
  const int64_t h = over_input ? a.H : a.Ho, w = over_input ? a.W : a.Wo;
  return {a.P, a.H, a.W, a.Ho, a.Wo, a.K, a.pad, (h + logic::kSsimTileH - 1) / logic::kSsimTileH,
          (w + logic::kSsimTileW - 1) / logic::kSsimTileW};
}

// Tiles unless config gpu_tiles is off or a block would need over 96 KiB of shared memory
// (windows over about 60 taps in float32, 40 in float64).
template <typename T>
bool use_tiles(const Args& a) {
  const logic::SsimTileGeom g = tile_geom(a, true);
  const int64_t elems = std::max(logic::ssim_stats_tile_elems(g), logic::ssim_grad_tile_elems(g));
  return config::gpu_tiles() && elems * int64_t(sizeof(T)) <= 96 * 1024;
}

// Kernel A: the map (map_out) and/or the weighted derivative maps (wt set), (5, P, Ho, Wo).
template <typename L, typename T>
at::Tensor tiled_stats(const Args& a, const at::Tensor& xc, const at::Tensor& yc, const Weight* wt,
                       at::Tensor* map_out) {
  const logic::SsimTileGeom g = tile_geom(a, false);
  at::Tensor d = wt ? at::empty({5, a.P, a.Ho, a.Wo}, xc.options()) : at::Tensor();
  if (map_out) *map_out = at::empty({a.P, a.Ho, a.Wo}, xc.options());
  L::blocks(a.P * g.tiles_y * g.tiles_x, logic::kSsimThreads, logic::ssim_stats_tile_elems(g) * int64_t(sizeof(T)),
            logic::SsimStatsTileFn<T>{xc.data_ptr<T>(), yc.data_ptr<T>(), map_out ? map_out->data_ptr<T>() : nullptr,
                                      wt ? d.data_ptr<T>() : nullptr, wt ? wt->gw.data_ptr<T>() : nullptr,
                                      wt ? wt->per_weight : 1, T(wt ? wt->scale : 1.0), T(a.c1), T(a.c2), a.sigma,
                                      g});
  return d;
}

// The map (map_out, if set) and the gradients: tiled (kernels A and B) or per element.
template <typename L, typename T>
std::tuple<at::Tensor, at::Tensor> map_and_grads(const Args& a, const at::Tensor& xc, const at::Tensor& yc,
                                                 const at::Tensor& grad, at::Tensor* map_out, bool need_x,
                                                 bool need_y) {
  if (!use_tiles<T>(a)) {
    auto [st, w] = stats<L, T>(a, xc, yc);
    return grads<L, T>(a, xc, yc, st, w, grad, map_out, need_x, need_y);
  }
  const Weight wt = weight_of(a, xc, grad);
  const at::Tensor d = tiled_stats<L, T>(a, xc, yc, &wt, map_out);
  at::Tensor gx = need_x ? at::empty(xc.sizes(), xc.options()) : at::Tensor();
  at::Tensor gy = need_y ? at::empty(xc.sizes(), xc.options()) : at::Tensor();
  const logic::SsimTileGeom g = tile_geom(a, true);
  L::blocks(a.P * g.tiles_y * g.tiles_x, logic::kSsimThreads, logic::ssim_grad_tile_elems(g) * int64_t(sizeof(T)),
            logic::SsimGradTileFn<T>{d.data_ptr<T>(), xc.data_ptr<T>(), yc.data_ptr<T>(),
                                     need_x ? gx.data_ptr<T>() : nullptr, need_y ? gy.data_ptr<T>() : nullptr,
                                     a.sigma, g});
  return {gx, gy};
}

template <typename L>
at::Tensor ssim(const at::Tensor& x, const at::Tensor& y, int64_t window_size, double sigma, double data_range,
                c10::string_view padding, c10::string_view reduction, double k1, double k2) {
  const Args a = check(x, y, window_size, sigma, data_range, padding, reduction, k1, k2);
  const at::Tensor xc = x.contiguous(), yc = y.contiguous();
  at::Tensor map = at::empty({a.P, a.Ho, a.Wo}, x.options());
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "ssim", [&] {
    if (use_tiles<scalar_t>(a)) {
      tiled_stats<L, scalar_t>(a, xc, yc, nullptr, &map);
      return;
    }
    auto [st, w] = stats<L, scalar_t>(a, xc, yc);
    const int64_t n = map.numel();
    L::grid(n, logic::SsimMapFn<scalar_t>{st.template data_ptr<scalar_t>(), map.data_ptr<scalar_t>(), nullptr,
                                          nullptr, n, 1, scalar_t(1), scalar_t(a.c1), scalar_t(a.c2)});
  });
  return reduce(map, x, a);
}

template <typename L>
std::tuple<at::Tensor, at::Tensor> ssim_backward(const at::Tensor& grad, const at::Tensor& x, const at::Tensor& y,
                                                 int64_t window_size, double sigma, double data_range,
                                                 c10::string_view padding, c10::string_view reduction, double k1,
                                                 double k2) {
  const Args a = check(x, y, window_size, sigma, data_range, padding, reduction, k1, k2);
  TORCH_CHECK(grad.scalar_type() == x.scalar_type(), "derain.ssim_backward: grad must have x's dtype");
  const at::Tensor xc = x.contiguous(), yc = y.contiguous();
  std::tuple<at::Tensor, at::Tensor> g;
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "ssim_backward", [&] {
    g = map_and_grads<L, scalar_t>(a, xc, yc, grad, nullptr, true, true);
  });
  return {std::get<0>(g).view(x.sizes()), std::get<1>(g).view(x.sizes())};
}

template <typename L>
at::Tensor ssim_backward_x(const at::Tensor& grad, const at::Tensor& x, const at::Tensor& y, int64_t window_size,
                           double sigma, double data_range, c10::string_view padding, c10::string_view reduction,
                           double k1, double k2) {
  const Args a = check(x, y, window_size, sigma, data_range, padding, reduction, k1, k2);
  TORCH_CHECK(grad.scalar_type() == x.scalar_type(), "derain.ssim_backward: grad must have x's dtype");
  const at::Tensor xc = x.contiguous(), yc = y.contiguous();
  at::Tensor gx;
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "ssim_backward_x", [&] {
    gx = std::get<0>(map_and_grads<L, scalar_t>(a, xc, yc, grad, nullptr, true, false));
  });
  return gx.view(x.sizes());
}

template <typename L>
std::tuple<at::Tensor, at::Tensor, at::Tensor> ssim_with_grad(const at::Tensor& x, const at::Tensor& y,
                                                              int64_t window_size, double sigma, double data_range,
                                                              c10::string_view padding, c10::string_view reduction,
                                                              double k1, double k2, bool need_y) {
  const Args a = check(x, y, window_size, sigma, data_range, padding, reduction, k1, k2);
  TORCH_CHECK(a.red != Red::Map, "derain.ssim_with_grad: reduction must be 'mean' or 'none'");
  const at::Tensor xc = x.contiguous(), yc = y.contiguous();
  const bool per_image = a.red == Red::None && x.dim() >= 3;
  const at::Tensor ones = at::ones({per_image ? a.B : int64_t(1)}, x.options());
  at::Tensor map, gx, gy;
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "ssim_with_grad", [&] {
    std::tie(gx, gy) = map_and_grads<L, scalar_t>(a, xc, yc, ones, &map, true, need_y);
  });
  return {reduce(map, x, a), gx.view(x.sizes()), need_y ? gy.view(x.sizes()) : at::empty({0}, x.options())};
}

}  // namespace ssim_impl
}  // namespace derain
