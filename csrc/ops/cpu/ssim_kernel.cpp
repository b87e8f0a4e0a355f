// CPU kernels of SSIM: one sweep per strip of rows that does the forward and,
// when asked, the whole backward in the same pass.
//
// Per (plane, strip of rows), rolling windows of rows kept in per-thread
// scratch (L1/L2): each padded input row gets the horizontal Gaussian pass of
// the five products x, y, x², y², xy once (a ring of K rows), each output row
// the vertical pass, the SSIM value and, for gradients, the derivative maps
// dS/d(mu_x, mu_y, E[x²], E[y²], E[xy]) (another ring of K rows, times the
// incoming gradient map for reduction "map"). As soon as the K output rows that
// read an input row are done, that input row gets the transposed blur of the
// derivative maps (vertical taps from a per-row table, horizontal by a plain
// convolution over zero-extended rows, per-column tables at reflect borders),
// which folds every padding mode in exactly: zero padding, "valid" (scatter) and
// reflect (the reflected taps add onto their source rows/columns), then
//   grad_x = g·(T(D_mx) + 2x T(D_xx) + y T(D_xy)),  grad_y = g·(T(D_my) + 2y T(D_yy) + x T(D_xy)).
// Nothing full-size is written but the results; strips overlap by the K-1
// output rows of the window (recomputed), and there are only as many strips
// as the threads need.
//
// Ops: ssim (value), ssim_backward / ssim_backward_x (gradients from the
// incoming gradient, statistics recomputed), ssim_with_grad (value and the
// gradients of the value for reductions "mean"/"none" in one sweep: the
// autograd path of ssim_loss, whose backward is then one multiply).
//
// Vectorised with `omp simd` (AVX-512 / AVX2 / SSE / NEON, whatever the build
// targets), both cores via at::parallel_for. Argument checks with clear
// messages happen in Python (derain_kernels/ops/ssim.py); TORCH_CHECKs here
// only guard direct torch.ops calls.
#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <vector>

#include "common/padding.h"
#include "ssim/sweep.h"
#include "ssim/window.h"

namespace derain {
namespace {

using ssim::Axis;
using ssim::gaussian_window;
using ssim::Params;
using ssim::PlaneJob;
using ssim::sweep;
using ssim::transposed_axis;

Padding parse_ssim_padding(c10::string_view p) {
  return parse_padding(p, {Padding::Zeros, Padding::Valid, Padding::Reflect},
                       "derain.ssim: padding must be 'zeros', 'valid' or 'reflect'");
}

enum class Red { Mean, None, Map };

Red parse_reduction(c10::string_view r) {
  if (r == "mean") return Red::Mean;
  if (r == "none") return Red::None;
  if (r == "map") return Red::Map;
  TORCH_CHECK(false, "derain.ssim: reduction must be 'mean', 'none' or 'map', got '", std::string(r), "'");
}

// Strips per plane for `threads` threads: (plane, strip) units that split
// evenly over the threads (or are plenty), strips of at least 2K rows.
int64_t strips_per_plane(int64_t planes, int64_t rows, int64_t K) {
  const int64_t threads = std::max<int64_t>(1, at::get_num_threads());
  int64_t n = 1;
  while (!((planes * n) % threads == 0 || planes * n >= 4 * threads) && rows / (n + 1) >= 2 * K) ++n;
  return n;
}

struct Checked {
  Padding pad;
  Red red;
  int64_t H, W, planes;
};

Checked check_args(const at::Tensor& x, const at::Tensor& y, int64_t window_size, c10::string_view padding,
                   c10::string_view reduction) {
  TORCH_CHECK(x.scalar_type() == y.scalar_type(), "derain.ssim: x and y must have the same dtype");
  TORCH_CHECK(x.scalar_type() == at::kFloat || x.scalar_type() == at::kDouble,
              "derain.ssim: the kernel takes float32 or float64, got ", x.scalar_type());
  TORCH_CHECK(x.sizes().equals(y.sizes()), "derain.ssim: x and y must have the same shape");
  TORCH_CHECK(x.dim() >= 2, "derain.ssim: x must have at least 2 dimensions (..., H, W)");
  TORCH_CHECK(window_size >= 1 && window_size % 2 == 1, "derain.ssim: window_size must be odd and >= 1");
  Checked c{parse_ssim_padding(padding), parse_reduction(reduction), x.size(-2), x.size(-1), 0};
  const int64_t r = window_size / 2;
  TORCH_CHECK(c.H > 0 && c.W > 0, "derain.ssim: empty images");
  TORCH_CHECK(c.pad != Padding::Valid || (c.H >= window_size && c.W >= window_size),
              "derain.ssim: window_size larger than the images with padding='valid'");
  TORCH_CHECK(c.pad != Padding::Reflect || (c.H > r && c.W > r),
              "derain.ssim: padding='reflect' needs images larger than window_size // 2");
  c.planes = x.numel() / (c.H * c.W);
  return c;
}

template <typename T>
Params<T> make_params(const Axis& ah, const Axis& aw, int64_t K, const std::vector<double>& w, double k1, double k2,
                      double data_range) {
  Params<T> P{ah, aw, K, {}, static_cast<T>((k1 * data_range) * (k1 * data_range)),
              static_cast<T>((k2 * data_range) * (k2 * data_range))};
  for (double v : w) P.w.push_back(static_cast<T>(v));
  return P;
}

// Planes averaged into one value: all of them ("mean", or 2-D input), or one image's ("none").
int64_t planes_per_value(const Checked& a, const at::Tensor& x) {
  return (a.red == Red::Mean || x.dim() == 2) ? a.planes : (x.size(0) > 0 ? a.planes / x.size(0) : 0);
}

// The reduced value ("mean": (), "none": (B,)) from the per-(plane, strip) sums.
at::Tensor reduce_value(const Checked& a, const at::Tensor& x, const std::vector<double>& partial, int64_t n,
                        int64_t Ho, int64_t Wo) {
  std::vector<double> plane_sum(a.planes, 0.0);
  for (int64_t p = 0; p < a.planes; ++p)
    for (int64_t b = 0; b < n; ++b) plane_sum[p] += partial[p * n + b];
  const double per_plane = static_cast<double>(Ho * Wo);
  if (a.red == Red::Mean || x.dim() == 2) {
    double total = 0;
    for (double v : plane_sum) total += v;
    return at::scalar_tensor(total / (per_plane * static_cast<double>(a.planes)), x.options());
  }
  const int64_t B = x.size(0);
  at::Tensor out = at::empty({B}, x.options().dtype(at::kDouble));
  auto acc = out.accessor<double, 1>();
  const int64_t per_b = planes_per_value(a, x);
  for (int64_t b = 0; b < B; ++b) {
    double s = 0;
    for (int64_t p = b * per_b; p < (b + 1) * per_b; ++p) s += plane_sum[p];
    acc[b] = s / (per_plane * static_cast<double>(per_b));
  }
  return out.to(x.scalar_type());
}

at::Tensor ssim_cpu(const at::Tensor& x_in, const at::Tensor& y_in, int64_t window_size, double sigma,
                    double data_range, c10::string_view padding, c10::string_view reduction, double k1, double k2) {
  const Checked a = check_args(x_in, y_in, window_size, padding, reduction);
  const int64_t H = a.H, W = a.W, planes = a.planes;
  at::Tensor x = x_in.contiguous(), y = y_in.contiguous();
  const Axis ah(H, window_size, a.pad), aw(W, window_size, a.pad);
  const int64_t Ho = ah.no, Wo = aw.no;

  std::vector<int64_t> map_shape(x_in.sizes().begin(), x_in.sizes().end() - 2);
  map_shape.push_back(Ho);
  map_shape.push_back(Wo);
  at::Tensor map_out = a.red == Red::Map ? at::empty(map_shape, x.options()) : at::Tensor();

  const int64_t n = strips_per_plane(planes, Ho, window_size), strip = (Ho + n - 1) / n;
  std::vector<double> partial(planes * n, 0.0);
  const auto wd = gaussian_window(window_size, sigma);

  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "ssim_cpu", [&] {
    using T = scalar_t;
    const Params<T> P = make_params<T>(ah, aw, window_size, wd, k1, k2, data_range);
    const T* xp = x.data_ptr<T>();
    const T* yp = y.data_ptr<T>();
    T* mp = map_out.defined() ? map_out.data_ptr<T>() : nullptr;
    at::parallel_for(0, planes * n, 1, [&](int64_t begin, int64_t end) {
      std::vector<T> scratch;
      for (int64_t u = begin; u < end; ++u) {
        const int64_t p = u / n, b = u % n;
        const int64_t i0 = std::min(Ho, b * strip), i1 = std::min(Ho, i0 + strip);
        if (i1 <= i0) continue;
        PlaneJob<T> J;
        J.x = xp + p * H * W;
        J.y = yp + p * H * W;
        J.map = mp ? mp + p * Ho * Wo : nullptr;
        partial[u] = sweep<T, false>(P, nullptr, nullptr, J, i0, i1, true, scratch);
      }
    });
  });
  if (a.red == Red::Map) return map_out;
  return reduce_value(a, x_in, partial, n, Ho, Wo);
}

// Gradients of the reduced value (and the value itself when value_out): one GRAD
// sweep per (plane, strip of input rows). grad undefined: the gradients of the
// value itself ("mean"/"none" only), i.e. an incoming gradient of ones.
// need_y false: grad_x alone (3 of the 5 transposed blurs); gy stays undefined.
std::tuple<at::Tensor, at::Tensor> ssim_gradients(const at::Tensor& grad, const at::Tensor& x_in,
                                                  const at::Tensor& y_in, int64_t window_size, double sigma,
                                                  double data_range, c10::string_view padding,
                                                  c10::string_view reduction, double k1, double k2, bool need_y,
                                                  at::Tensor* value_out) {
  const Checked a = check_args(x_in, y_in, window_size, padding, reduction);
  const int64_t H = a.H, W = a.W, planes = a.planes;
  const Axis ah(H, window_size, a.pad), aw(W, window_size, a.pad);
  const int64_t Ho = ah.no, Wo = aw.no;
  at::Tensor x = x_in.contiguous(), y = y_in.contiguous();
  at::Tensor gx = at::empty(x_in.sizes(), x.options());
  at::Tensor gy = need_y ? at::empty(x_in.sizes(), x.options()) : at::Tensor();

  // per-plane incoming gradient of the value ("mean"/"none"), or the map ("map")
  std::vector<double> gplane(planes, 1.0);
  at::Tensor gmap;
  const int64_t per_value = planes_per_value(a, x_in);
  if (grad.defined()) {
    TORCH_CHECK(grad.scalar_type() == x_in.scalar_type(), "derain.ssim_backward: grad must have x's dtype");
    if (a.red == Red::Map) {
      TORCH_CHECK(grad.numel() == planes * Ho * Wo, "derain.ssim_backward: grad must have the map's shape");
      gmap = grad.contiguous();
    } else if (a.red == Red::Mean || x_in.dim() == 2) {
      TORCH_CHECK(grad.numel() == 1, "derain.ssim_backward: grad must be a scalar for reduction 'mean'");
      std::fill(gplane.begin(), gplane.end(), grad.item<double>());
    } else {
      TORCH_CHECK(grad.numel() == x_in.size(0), "derain.ssim_backward: grad must have shape (B,) for reduction 'none'");
      at::Tensor g = grad.to(at::kDouble).contiguous().reshape({-1});
      auto acc = g.accessor<double, 1>();
      for (int64_t p = 0; p < planes; ++p) gplane[p] = acc[p / per_value];
    }
  } else {
    TORCH_CHECK(a.red != Red::Map, "derain.ssim_with_grad: reduction must be 'mean' or 'none'");
  }
  const double gscale = a.red == Red::Map ? 1.0 : 1.0 / (static_cast<double>(Ho * Wo) * std::max<int64_t>(per_value, 1));

  // strips of output rows as in ssim_cpu (the same sums, so the same value); the
  // last strip also takes the input rows below the output rows ("valid")
  const int64_t n = strips_per_plane(planes, Ho, window_size), strip = (Ho + n - 1) / n;
  std::vector<double> partial(planes * n, 0.0);
  const auto wd = gaussian_window(window_size, sigma);
  if (planes > 0) {
    AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "ssim_gradients_cpu", [&] {
      using T = scalar_t;
      const Params<T> P = make_params<T>(ah, aw, window_size, wd, k1, k2, data_range);
      const auto tv = transposed_axis<T>(ah, wd);
      const auto th = transposed_axis<T>(aw, wd);
      const T* xp = x.data_ptr<T>();
      const T* yp = y.data_ptr<T>();
      const T* gp = gmap.defined() ? gmap.data_ptr<T>() : nullptr;
      T* gxp = gx.data_ptr<T>();
      T* gyp = need_y ? gy.data_ptr<T>() : nullptr;
      at::parallel_for(0, planes * n, 1, [&](int64_t begin, int64_t end) {
        std::vector<T> scratch;
        for (int64_t u = begin; u < end; ++u) {
          const int64_t p = u / n, b = u % n;
          const int64_t s0 = std::min(Ho, b * strip), s1 = b == n - 1 ? H : std::min(Ho, s0 + strip);
          if (s1 <= s0) continue;
          const int64_t off = p * H * W;
          PlaneJob<T> J;
          J.x = xp + off;
          J.y = yp + off;
          J.gmap = gp ? gp + p * Ho * Wo : nullptr;
          J.gscale = static_cast<T>(gscale);
          J.gplane = static_cast<T>(gplane[p]);
          J.gx = gxp + off;
          J.gy = gyp ? gyp + off : nullptr;
          partial[u] = sweep<T, true>(P, &tv, &th, J, s0, s1, value_out != nullptr, scratch);
        }
      });
    });
  }
  if (value_out) *value_out = reduce_value(a, x_in, partial, n, Ho, Wo);
  return {gx, gy};
}

std::tuple<at::Tensor, at::Tensor> ssim_backward_cpu(const at::Tensor& grad, const at::Tensor& x, const at::Tensor& y,
                                                     int64_t window_size, double sigma, double data_range,
                                                     c10::string_view padding, c10::string_view reduction, double k1,
                                                     double k2) {
  return ssim_gradients(grad, x, y, window_size, sigma, data_range, padding, reduction, k1, k2, true, nullptr);
}

at::Tensor ssim_backward_x_cpu(const at::Tensor& grad, const at::Tensor& x, const at::Tensor& y, int64_t window_size,
                               double sigma, double data_range, c10::string_view padding,
                               c10::string_view reduction, double k1, double k2) {
  return std::get<0>(
      ssim_gradients(grad, x, y, window_size, sigma, data_range, padding, reduction, k1, k2, false, nullptr));
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> ssim_with_grad_cpu(const at::Tensor& x, const at::Tensor& y,
                                                                  int64_t window_size, double sigma,
                                                                  double data_range, c10::string_view padding,
                                                                  c10::string_view reduction, double k1, double k2,
                                                                  bool need_y) {
  at::Tensor value;
  auto [gx, gy] = ssim_gradients(at::Tensor(), x, y, window_size, sigma, data_range, padding, reduction, k1, k2,
                                 need_y, &value);
  if (!need_y) gy = at::empty({0}, x.options());
  return {value, gx, gy};
}

}  // namespace

TORCH_LIBRARY_IMPL(derain, CPU, m) {
  m.impl("ssim", &ssim_cpu);
  m.impl("_ssim_backward", &ssim_backward_cpu);
  m.impl("_ssim_backward_x", &ssim_backward_x_cpu);
  m.impl("_ssim_with_grad", &ssim_with_grad_cpu);
}

}  // namespace derain


