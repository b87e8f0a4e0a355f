// CPU kernels of SSIM: one fused forward pass and one fused backward pass.
//
// Forward, per (plane, band of output rows): the horizontal Gaussian pass of the
// five products x, y, x², y², xy over the band's padded rows (band + halo), then
// the vertical pass, the SSIM map and (when gradients are needed) the five
// derivative maps dS/d(mu_x, mu_y, E[x²], E[y²], E[xy]) for the band's rows.
// Nothing full-size is written except the map (reduction "map") and the
// derivative maps (only when the backward needs them); "mean"/"none" only keep
// per-band partial sums.
//
// Backward, per (plane, band of input rows): the transposed blur of the five
// derivative maps (vertical taps from a per-row table, horizontal by a plain
// convolution in the interior and the per-column table at the borders), which
// folds every padding mode in exactly: zero padding, "valid" (scatter) and
// reflect (the reflected taps add onto their source rows/columns), then
//   grad_x = T(D_mx) + 2x T(D_xx) + y T(D_xy),  grad_y = T(D_my) + 2y T(D_yy) + x T(D_xy).
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

#include "../elementwise.h"

namespace derain {
namespace {

enum class Pad { Zeros, Valid, Reflect };

Pad parse_padding(c10::string_view p) {
  if (p == "zeros") return Pad::Zeros;
  if (p == "valid") return Pad::Valid;
  if (p == "reflect") return Pad::Reflect;
  TORCH_CHECK(false, "derain.ssim: padding must be 'zeros', 'valid' or 'reflect', got '", std::string(p), "'");
}

enum class Red { Mean, None, Map };

Red parse_reduction(c10::string_view r) {
  if (r == "mean") return Red::Mean;
  if (r == "none") return Red::None;
  if (r == "map") return Red::Map;
  TORCH_CHECK(false, "derain.ssim: reduction must be 'mean', 'none' or 'map', got '", std::string(r), "'");
}

// Geometry of one axis: n input samples, no outputs, np padded samples.
struct Axis {
  int64_t n, no, np, r;
  Pad pad;
  Axis(int64_t n_, int64_t k, Pad pad_) : n(n_), r(k / 2), pad(pad_) {
    if (pad == Pad::Valid) {
      no = n - k + 1;
      np = n;
    } else {
      no = n;
      np = n + 2 * r;
    }
  }
  // Input index feeding padded index p; -1 for zero padding. Reflect is torch's
  // (no edge repeat), a single reflection (r < n is checked by the caller).
  int64_t source(int64_t p) const {
    if (pad == Pad::Valid) return p;
    int64_t s = p - r;
    if (s >= 0 && s < n) return s;
    if (pad == Pad::Zeros) return -1;
    return s < 0 ? -s : 2 * (n - 1) - s;
  }
  // Output o reads padded indices o .. o + 2r. Input s is read by outputs
  // s - R .. s - R + 2r (R = r, or 2r for "valid"), reflected taps included.
  int64_t R() const { return pad == Pad::Valid ? 2 * r : r; }
};

std::vector<double> gaussian_window(int64_t k, double sigma) {
  std::vector<double> w(k);
  const int64_t r = k / 2;
  double sum = 0;
  for (int64_t i = 0; i < k; ++i) {
    w[i] = std::exp(-double((i - r) * (i - r)) / (2.0 * sigma * sigma));
    sum += w[i];
  }
  for (auto& v : w) v /= sum;
  return w;
}

// The transposed blur along one axis as a table: input s gets
// sum_t table[s*K + t] * d[s - R + t]. `plain[s]` says the row is the window
// itself with every output in range (the interior, done as a plain convolution).
template <typename T>
struct TransposedAxis {
  std::vector<T> table;
  std::vector<char> plain;
  int64_t plain_begin = 0, plain_end = 0;  // one run of plain inputs
};

template <typename T>
TransposedAxis<T> transposed_axis(const Axis& a, const std::vector<double>& w) {
  const int64_t K = static_cast<int64_t>(w.size()), R = a.R();
  std::vector<double> acc(a.n * K, 0.0);
  for (int64_t o = 0; o < a.no; ++o) {
    for (int64_t k = 0; k < K; ++k) {
      const int64_t s = a.source(o + k);
      if (s < 0) continue;
      const int64_t t = o - (s - R);
      TORCH_CHECK(t >= 0 && t < K, "derain.ssim: internal error in the transposed window table");
      acc[s * K + t] += w[k];
    }
  }
  TransposedAxis<T> ta;
  ta.table.resize(a.n * K);
  ta.plain.assign(a.n, 0);
  for (int64_t s = 0; s < a.n; ++s) {
    bool plain = s - R >= 0 && s - R + K - 1 < a.no;
    for (int64_t t = 0; t < K; ++t) {
      ta.table[s * K + t] = static_cast<T>(acc[s * K + t]);
      plain = plain && acc[s * K + t] == w[t];
    }
    ta.plain[s] = plain;
  }
  int64_t b = 0;
  while (b < a.n && !ta.plain[b]) ++b;
  int64_t e = b;
  while (e < a.n && ta.plain[e]) ++e;
  ta.plain_begin = b;
  ta.plain_end = e;
  return ta;
}

// out[o] = sum_k w[k] a[o + k], o < n_out.
template <typename T>
inline void conv_valid(const T* __restrict a, T* __restrict out, int64_t n_out, const T* __restrict w, int64_t K) {
  if (K == 11) {
    const T w0 = w[0], w1 = w[1], w2 = w[2], w3 = w[3], w4 = w[4], w5 = w[5];
DERAIN_SIMD
    for (int64_t o = 0; o < n_out; ++o) {
      // symmetric window: pair the taps
      out[o] = w0 * (a[o] + a[o + 10]) + w1 * (a[o + 1] + a[o + 9]) + w2 * (a[o + 2] + a[o + 8]) +
               w3 * (a[o + 3] + a[o + 7]) + w4 * (a[o + 4] + a[o + 6]) + w5 * a[o + 5];
    }
    return;
  }
DERAIN_SIMD
  for (int64_t o = 0; o < n_out; ++o) {
    T acc = 0;
    for (int64_t k = 0; k < K; ++k) acc += w[k] * a[o + k];
    out[o] = acc;
  }
}

template <typename T>
struct Params {
  Axis ax_h, ax_w;  // rows, columns
  int64_t K;
  std::vector<T> w;
  T c1, c2;
};

// Forward of one band [i0, i1) of output rows of one plane.
template <typename T>
void forward_band(const Params<T>& P, const T* x, const T* y, int64_t i0, int64_t i1, T* map_out, double* sum_out,
                  T* dmaps, int64_t dmaps_row0, int64_t plane_stride_d, std::vector<T>& scratch) {
  const Axis &ah = P.ax_h, &aw = P.ax_w;
  const int64_t K = P.K, r = ah.r, W = aw.n, Wp = aw.np, Wo = aw.no;
  const int64_t nrows = i1 - i0 + K - 1;
  const T* w = P.w.data();
  scratch.resize(5 * Wp + 5 * nrows * Wo + 5 * Wo);
  T* px = scratch.data();
  T* py = px + Wp;
  T* pxx = py + Wp;
  T* pyy = pxx + Wp;
  T* pxy = pyy + Wp;
  T* hb = pxy + Wp;  // 5 x nrows x Wo
  T* st = hb + 5 * nrows * Wo;
  const int64_t cstride = nrows * Wo;

  // horizontal pass over the padded rows i0 .. i1 + K - 2
  for (int64_t j = 0; j < nrows; ++j) {
    const int64_t s = ah.source(i0 + j);
    if (s < 0) {
      for (int c = 0; c < 5; ++c) std::fill_n(hb + c * cstride + j * Wo, Wo, T(0));
      continue;
    }
    const T* xr = x + s * W;
    const T* yr = y + s * W;
    if (aw.pad == Pad::Valid) {
      std::memcpy(px, xr, W * sizeof(T));
      std::memcpy(py, yr, W * sizeof(T));
    } else {
      std::memcpy(px + r, xr, W * sizeof(T));
      std::memcpy(py + r, yr, W * sizeof(T));
      for (int64_t q = 0; q < r; ++q) {
        const int64_t sl = aw.source(q), sr = aw.source(Wp - 1 - q);
        px[q] = sl < 0 ? T(0) : xr[sl];
        py[q] = sl < 0 ? T(0) : yr[sl];
        px[Wp - 1 - q] = sr < 0 ? T(0) : xr[sr];
        py[Wp - 1 - q] = sr < 0 ? T(0) : yr[sr];
      }
    }
DERAIN_SIMD
    for (int64_t q = 0; q < Wp; ++q) {
      pxx[q] = px[q] * px[q];
      pyy[q] = py[q] * py[q];
      pxy[q] = px[q] * py[q];
    }
    conv_valid(px, hb + 0 * cstride + j * Wo, Wo, w, K);
    conv_valid(py, hb + 1 * cstride + j * Wo, Wo, w, K);
    conv_valid(pxx, hb + 2 * cstride + j * Wo, Wo, w, K);
    conv_valid(pyy, hb + 3 * cstride + j * Wo, Wo, w, K);
    conv_valid(pxy, hb + 4 * cstride + j * Wo, Wo, w, K);
  }

  const T c1 = P.c1, c2 = P.c2;
  double band_sum = 0;
  for (int64_t i = i0; i < i1; ++i) {
    // vertical pass: the five statistics of output row i
    for (int c = 0; c < 5; ++c) {
      const T* col = hb + c * cstride + (i - i0) * Wo;
      T* dst = st + c * Wo;
      if (K == 11) {
        const T w0 = w[0], w1 = w[1], w2 = w[2], w3 = w[3], w4 = w[4], w5 = w[5];
        const T *r0 = col, *r1 = col + Wo, *r2 = col + 2 * Wo, *r3 = col + 3 * Wo, *r4 = col + 4 * Wo,
                *r5 = col + 5 * Wo, *r6 = col + 6 * Wo, *r7 = col + 7 * Wo, *r8 = col + 8 * Wo,
                *r9 = col + 9 * Wo, *r10 = col + 10 * Wo;
DERAIN_SIMD
        for (int64_t o = 0; o < Wo; ++o)
          dst[o] = w0 * (r0[o] + r10[o]) + w1 * (r1[o] + r9[o]) + w2 * (r2[o] + r8[o]) + w3 * (r3[o] + r7[o]) +
                   w4 * (r4[o] + r6[o]) + w5 * r5[o];
      } else {
        std::fill_n(dst, Wo, T(0));
        for (int64_t k = 0; k < K; ++k) {
          const T wk = w[k];
          const T* src = col + k * Wo;
DERAIN_SIMD
          for (int64_t o = 0; o < Wo; ++o) dst[o] += wk * src[o];
        }
      }
    }
    const T* mx = st;
    const T* my = st + Wo;
    const T* exx = st + 2 * Wo;
    const T* eyy = st + 3 * Wo;
    const T* exy = st + 4 * Wo;
    T* mrow = map_out ? map_out + i * Wo : nullptr;
    T row_sum = 0;
    if (dmaps) {
      T* d0 = dmaps + (i - dmaps_row0) * Wo;
      T* d1 = d0 + plane_stride_d;
      T* d2 = d1 + plane_stride_d;
      T* d3 = d2 + plane_stride_d;
      T* d4 = d3 + plane_stride_d;
      // (the backward needs no sum: no reduction, which keeps this loop vectorised)
DERAIN_SIMD
      for (int64_t o = 0; o < Wo; ++o) {
        const T ux = mx[o], uy = my[o];
        const T vx = exx[o] - ux * ux, vy = eyy[o] - uy * uy, cxy = exy[o] - ux * uy;
        // (selects on the comparisons themselves: bool temporaries keep GCC from vectorising)
        const T sx = vx < T(0) ? T(0) : vx, sy = vy < T(0) ? T(0) : vy;
        const T sxy = vx < T(0) ? T(0) : (vy < T(0) ? T(0) : cxy);
        const T a1 = T(2) * (ux * uy) + c1;
        const T du = ux - uy;
        const T b1 = a1 + du * du;
        const T a2 = T(2) * sxy + c2;
        const T b2 = sx + sy + c2;
        const T den = b1 * b2;
        const T inv = T(1) / den;
        const T s = (a1 * a2) * inv;
        const T t1 = a2 * inv;  // dS/da1
        const T t2 = s / b1;    // -dS/db1
        const T t3 = a1 * inv;  // dS/da2
        const T t4 = s / b2;    // -dS/db2
        const T ax = vx < T(0) ? T(0) : -t4;
        const T ay = vy < T(0) ? T(0) : -t4;
        const T bxy = vx < T(0) ? T(0) : (vy < T(0) ? T(0) : T(2) * t3);
        d0[o] = T(2) * (uy * t1 - ux * t2) - T(2) * ux * ax - uy * bxy;
        d1[o] = T(2) * (ux * t1 - uy * t2) - T(2) * uy * ay - ux * bxy;
        d2[o] = ax;
        d3[o] = ay;
        d4[o] = bxy;
      }
    } else if (mrow) {
      // (separate loops: a conditional store keeps the vectoriser off)
      _Pragma("omp simd reduction(+ : row_sum)")
      for (int64_t o = 0; o < Wo; ++o) {
        const T ux = mx[o], uy = my[o];
        const T vx = exx[o] - ux * ux, vy = eyy[o] - uy * uy, cxy = exy[o] - ux * uy;
        const T sx = vx < T(0) ? T(0) : vx, sy = vy < T(0) ? T(0) : vy;
        const T sxy = vx < T(0) ? T(0) : (vy < T(0) ? T(0) : cxy);
        const T a1 = T(2) * (ux * uy) + c1;
        const T du = ux - uy;
        const T b1 = a1 + du * du;
        const T a2 = T(2) * sxy + c2;
        const T b2 = sx + sy + c2;
        const T s = (a1 * a2) / (b1 * b2);
        row_sum += s;
        mrow[o] = s;
      }
    } else {
      _Pragma("omp simd reduction(+ : row_sum)")
      for (int64_t o = 0; o < Wo; ++o) {
        const T ux = mx[o], uy = my[o];
        const T vx = exx[o] - ux * ux, vy = eyy[o] - uy * uy, cxy = exy[o] - ux * uy;
        const T sx = vx < T(0) ? T(0) : vx, sy = vy < T(0) ? T(0) : vy;
        const T sxy = vx < T(0) ? T(0) : (vy < T(0) ? T(0) : cxy);
        const T a1 = T(2) * (ux * uy) + c1;
        const T du = ux - uy;
        const T b1 = a1 + du * du;
        const T a2 = T(2) * sxy + c2;
        const T b2 = sx + sy + c2;
        const T s = (a1 * a2) / (b1 * b2);
        row_sum += s;
      }
    }
    band_sum += static_cast<double>(row_sum);
  }
  *sum_out = band_sum;
}

int64_t forward_band_rows(int64_t Wo, int64_t planes, int64_t no) {
  int64_t tb = std::max<int64_t>(16, std::min<int64_t>(64, 16384 / std::max<int64_t>(Wo, 1)));
  // enough bands to keep every thread busy on few large planes
  const int64_t threads = at::get_num_threads();
  while (tb > 8 && planes * ((no + tb - 1) / tb) < 4 * threads) tb /= 2;
  return tb;
}

// Backward of the input rows [s0, s1) of one plane.
template <typename T, bool MAP_GRAD>
void backward_band(const Params<T>& P, const TransposedAxis<T>& tv, const TransposedAxis<T>& th, const T* x,
                   const T* y, const T* dm, int64_t dm_row0, int64_t plane_stride_d, const T* gmap, T gscale,
                   int64_t s0, int64_t s1,
                   T* gx, T* gy, std::vector<T>& scratch) {
  const Axis &ah = P.ax_h, &aw = P.ax_w;
  const int64_t K = P.K, W = aw.n, Wo = aw.no, Ho = ah.no;
  const int64_t Rv = ah.R(), Rh = aw.R();
  const T* w = P.w.data();
  scratch.resize(5 * (Wo + 2 * (K - 1)) + 5 * W);
  const int64_t vlen = Wo + 2 * (K - 1);  // V with K-1 zeros on each side
  T* V = scratch.data();
  T* Tm = V + 5 * vlen;
  std::fill_n(V, 5 * vlen, T(0));
  for (int64_t s = s0; s < s1; ++s) {
    // vertical transposed taps
    for (int c = 0; c < 5; ++c) std::fill_n(V + c * vlen + (K - 1), Wo, T(0));
    const T* trow = tv.table.data() + s * K;
    if (!MAP_GRAD && K == 11 && tv.plain[s]) {
      // interior row: the 11 taps are the window itself, all outputs in range
      const T w0 = w[0], w1 = w[1], w2 = w[2], w3 = w[3], w4 = w[4], w5 = w[5];
      for (int c = 0; c < 5; ++c) {
        const T* d = dm + c * plane_stride_d + (s - Rv - dm_row0) * Wo;
        const T *r0 = d, *r1 = d + Wo, *r2 = d + 2 * Wo, *r3 = d + 3 * Wo, *r4 = d + 4 * Wo, *r5 = d + 5 * Wo,
                *r6 = d + 6 * Wo, *r7 = d + 7 * Wo, *r8 = d + 8 * Wo, *r9 = d + 9 * Wo, *r10 = d + 10 * Wo;
        T* v = V + c * vlen + (K - 1);
DERAIN_SIMD
        for (int64_t o = 0; o < Wo; ++o)
          v[o] = w0 * (r0[o] + r10[o]) + w1 * (r1[o] + r9[o]) + w2 * (r2[o] + r8[o]) + w3 * (r3[o] + r7[o]) +
                 w4 * (r4[o] + r6[o]) + w5 * r5[o];
      }
    } else
    for (int64_t t = 0; t < K; ++t) {
      const int64_t i = s - Rv + t;
      const T wt = trow[t];
      if (i < 0 || i >= Ho || wt == T(0)) continue;
      const T* g = MAP_GRAD ? gmap + i * Wo : nullptr;
      for (int c = 0; c < 5; ++c) {
        const T* d = dm + c * plane_stride_d + (i - dm_row0) * Wo;
        T* v = V + c * vlen + (K - 1);
        if (MAP_GRAD) {
DERAIN_SIMD
          for (int64_t o = 0; o < Wo; ++o) v[o] += wt * (g[o] * d[o]);
        } else {
DERAIN_SIMD
          for (int64_t o = 0; o < Wo; ++o) v[o] += wt * d[o];
        }
      }
    }
    // horizontal transposed taps: input column q gets sum_t table[q][t] V[q - Rh + t]
    for (int c = 0; c < 5; ++c) {
      const T* v = V + c * vlen + (K - 1);  // v[o], o may run K-1 outside [0, Wo): zeros
      T* tm = Tm + c * W;
      const int64_t pb = th.plain_begin, pe = th.plain_end;
      if (pe > pb) conv_valid(v + pb - Rh, tm + pb, pe - pb, w, K);
      for (int64_t q = 0; q < W; ++q) {
        if (q >= pb && q < pe) continue;
        const T* hrow = th.table.data() + q * K;
        T acc = 0;
        for (int64_t t = 0; t < K; ++t) acc += hrow[t] * v[q - Rh + t];
        tm[q] = acc;
      }
    }
    const T* xr = x + s * W;
    const T* yr = y + s * W;
    T* gxr = gx + s * W;
    T* gyr = gy + s * W;
    const T *t0 = Tm, *t1 = Tm + W, *t2 = Tm + 2 * W, *t3 = Tm + 3 * W, *t4 = Tm + 4 * W;
DERAIN_SIMD
    for (int64_t q = 0; q < W; ++q) {
      gxr[q] = gscale * (t0[q] + T(2) * xr[q] * t2[q] + yr[q] * t4[q]);
      gyr[q] = gscale * (t1[q] + T(2) * yr[q] * t3[q] + xr[q] * t4[q]);
    }
  }
}

struct Checked {
  Pad pad;
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
  Checked c{parse_padding(padding), parse_reduction(reduction), x.size(-2), x.size(-1), 0};
  const int64_t r = window_size / 2;
  TORCH_CHECK(c.H > 0 && c.W > 0, "derain.ssim: empty images");
  TORCH_CHECK(c.pad != Pad::Valid || (c.H >= window_size && c.W >= window_size),
              "derain.ssim: window_size larger than the images with padding='valid'");
  TORCH_CHECK(c.pad != Pad::Reflect || (c.H > r && c.W > r),
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

  const int64_t tb = forward_band_rows(Wo, planes, Ho);
  const int64_t nb = (Ho + tb - 1) / tb;
  std::vector<double> partial(planes * nb, 0.0);
  const auto wd = gaussian_window(window_size, sigma);

  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "ssim_cpu", [&] {
    using T = scalar_t;
    const Params<T> P = make_params<T>(ah, aw, window_size, wd, k1, k2, data_range);
    const T* xp = x.data_ptr<T>();
    const T* yp = y.data_ptr<T>();
    T* mp = map_out.defined() ? map_out.data_ptr<T>() : nullptr;
    at::parallel_for(0, planes * nb, 1, [&](int64_t begin, int64_t end) {
      std::vector<T> scratch;
      for (int64_t u = begin; u < end; ++u) {
        const int64_t p = u / nb, b = u % nb;
        const int64_t i0 = b * tb, i1 = std::min(Ho, i0 + tb);
        forward_band<T>(P, xp + p * H * W, yp + p * H * W, i0, i1, mp ? mp + p * Ho * Wo : nullptr, &partial[u],
                        nullptr, 0, 0, scratch);
      }
    });
  });

  if (a.red == Red::Map) return map_out;
  std::vector<double> plane_sum(planes, 0.0);
  for (int64_t p = 0; p < planes; ++p)
    for (int64_t b = 0; b < nb; ++b) plane_sum[p] += partial[p * nb + b];
  const double per_plane = static_cast<double>(Ho * Wo);
  if (a.red == Red::Mean || x_in.dim() == 2) {
    double total = 0;
    for (double v : plane_sum) total += v;
    return at::scalar_tensor(total / (per_plane * static_cast<double>(planes)), x.options());
  }
  const int64_t B = x_in.size(0);
  at::Tensor out = at::empty({B}, x.options().dtype(at::kDouble));
  auto acc = out.accessor<double, 1>();
  const int64_t per_b = B > 0 ? planes / B : 0;
  for (int64_t b = 0; b < B; ++b) {
    double s = 0;
    for (int64_t p = b * per_b; p < (b + 1) * per_b; ++p) s += plane_sum[p];
    acc[b] = s / (per_plane * static_cast<double>(per_b));
  }
  return out.to(x.scalar_type());
}

// The backward recomputes what it needs: per (plane, band of input rows), the
// forward statistics and the five derivative maps of the output rows that the
// band's transposed window reaches (band + halo, in per-thread scratch), then
// the transposed blur. No full-size intermediate is saved or allocated.
std::tuple<at::Tensor, at::Tensor> ssim_backward_cpu(const at::Tensor& grad, const at::Tensor& x_in,
                                                     const at::Tensor& y_in, int64_t window_size, double sigma,
                                                     double data_range, c10::string_view padding,
                                                     c10::string_view reduction, double k1, double k2) {
  const Checked a = check_args(x_in, y_in, window_size, padding, reduction);
  TORCH_CHECK(grad.scalar_type() == x_in.scalar_type(), "derain.ssim_backward: grad must have x's dtype");
  const int64_t H = a.H, W = a.W, planes = a.planes;
  const Axis ah(H, window_size, a.pad), aw(W, window_size, a.pad);
  const int64_t Ho = ah.no, Wo = aw.no;
  at::Tensor x = x_in.contiguous(), y = y_in.contiguous();
  at::Tensor gx = at::empty(x_in.sizes(), x.options());
  at::Tensor gy = at::empty(x_in.sizes(), x.options());
  if (planes == 0) return {gx, gy};

  // per-plane scale of the incoming gradient ("mean"/"none"), or the map itself ("map")
  std::vector<double> gscale(planes, 1.0);
  at::Tensor gmap;
  const double per_plane = static_cast<double>(Ho * Wo);
  if (a.red == Red::Map) {
    TORCH_CHECK(grad.numel() == planes * Ho * Wo, "derain.ssim_backward: grad must have the map's shape");
    gmap = grad.contiguous();
  } else if (a.red == Red::Mean || x_in.dim() == 2) {
    TORCH_CHECK(grad.numel() == 1, "derain.ssim_backward: grad must be a scalar for reduction 'mean'");
    const double v = grad.item<double>() / (per_plane * static_cast<double>(planes));
    std::fill(gscale.begin(), gscale.end(), v);
  } else {
    const int64_t B = x_in.size(0), per_b = planes / B;
    TORCH_CHECK(grad.numel() == B, "derain.ssim_backward: grad must have shape (B,) for reduction 'none'");
    at::Tensor g = grad.to(at::kDouble).contiguous().reshape({-1});
    auto acc = g.accessor<double, 1>();
    for (int64_t p = 0; p < planes; ++p) gscale[p] = acc[p / per_b] / (per_plane * static_cast<double>(per_b));
  }

  // band of input rows: forward scratch (band + 4r rows) and derivative maps
  // (band + 2r rows) of about 1 MiB (L2), and enough units for every thread
  const int64_t r = window_size / 2;
  const int64_t row_bytes = 10 * Wo * static_cast<int64_t>(x.element_size());
  int64_t band = std::max<int64_t>(16, (int64_t(1) << 20) / std::max<int64_t>(row_bytes, 1) - 4 * r);
  band = std::min(band, H);
  while (band > 16 && planes * ((H + band - 1) / band) < 2 * at::get_num_threads()) band = (band + 1) / 2;
  const int64_t nb = (H + band - 1) / band;
  const auto wd = gaussian_window(window_size, sigma);

  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "ssim_backward_cpu", [&] {
    using T = scalar_t;
    const Params<T> P = make_params<T>(ah, aw, window_size, wd, k1, k2, data_range);
    const auto tv = transposed_axis<T>(ah, wd);
    const auto th = transposed_axis<T>(aw, wd);
    const int64_t Rv = ah.R();
    const T* xp = x.data_ptr<T>();
    const T* yp = y.data_ptr<T>();
    const T* gp = gmap.defined() ? gmap.data_ptr<T>() : nullptr;
    T* gxp = gx.data_ptr<T>();
    T* gyp = gy.data_ptr<T>();
    at::parallel_for(0, planes * nb, 1, [&](int64_t begin, int64_t end) {
      std::vector<T> fwd_scratch, bwd_scratch, dscratch;
      for (int64_t u = begin; u < end; ++u) {
        const int64_t p = u / nb, b = u % nb;
        const int64_t s0 = b * band, s1 = std::min(H, s0 + band);
        const int64_t off = p * H * W;
        // output rows read by input rows s0 .. s1-1
        const int64_t i0 = std::max<int64_t>(0, s0 - Rv), i1 = std::min<int64_t>(Ho, s1 - Rv + window_size - 1);
        const int64_t nrows = std::max<int64_t>(0, i1 - i0);
        dscratch.resize(std::max<int64_t>(1, 5 * nrows * Wo));
        double unused_sum;
        if (nrows > 0)
          forward_band<T>(P, xp + off, yp + off, i0, i1, nullptr, &unused_sum, dscratch.data(), i0, nrows * Wo,
                          fwd_scratch);
        if (gp) {
          backward_band<T, true>(P, tv, th, xp + off, yp + off, dscratch.data(), i0, nrows * Wo,
                                 gp + p * Ho * Wo, T(1), s0, s1, gxp + off, gyp + off, bwd_scratch);
        } else {
          backward_band<T, false>(P, tv, th, xp + off, yp + off, dscratch.data(), i0, nrows * Wo, nullptr,
                                  static_cast<T>(gscale[p]), s0, s1, gxp + off, gyp + off, bwd_scratch);
        }
      }
    });
  });
  return {gx, gy};
}

}  // namespace

TORCH_LIBRARY_IMPL(derain, CPU, m) {
  m.impl("ssim", &ssim_cpu);
  m.impl("ssim_backward", &ssim_backward_cpu);
}

}  // namespace derain
