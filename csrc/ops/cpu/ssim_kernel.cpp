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
// sum_t table[s*K + t] * d[s - R + t] (d zero outside [0, no)). `plain[s]` says
// the row is the window itself on zero-extended d: every in-range tap equals
// w[t] (the interior, and every row for zero padding and "valid"), done as a
// plain convolution.
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
    bool plain = true;
    for (int64_t t = 0; t < K; ++t) {
      ta.table[s * K + t] = static_cast<T>(acc[s * K + t]);
      const int64_t o = s - R + t;
      const bool in_range = o >= 0 && o < a.no;
      plain = plain && (in_range ? acc[s * K + t] == w[t] : acc[s * K + t] == 0.0);
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

// The 11-tap symmetric window on the pair sums p_k = a[k] + a[10 - k] and the
// centre c = a[5], with explicit fused multiply-adds (the build turns off
// implicit contraction, so every loop rounds the same way on every compiler).
template <typename T>
inline T tap11(T w0, T w1, T w2, T w3, T w4, T w5, T p0, T p1, T p2, T p3, T p4, T c) {
  return std::fma(w0, p0, std::fma(w1, p1, std::fma(w2, p2, std::fma(w3, p3, std::fma(w4, p4, w5 * c)))));
}

// out[o] = sum_k w[k] a[o + k], o < n_out.
template <typename T>
inline void conv_valid(const T* __restrict a, T* __restrict out, int64_t n_out, const T* __restrict w, int64_t K) {
  if (K == 11) {
    const T w0 = w[0], w1 = w[1], w2 = w[2], w3 = w[3], w4 = w[4], w5 = w[5];
DERAIN_SIMD
    for (int64_t o = 0; o < n_out; ++o) {
      // symmetric window: pair the taps
      out[o] = tap11(w0, w1, w2, w3, w4, w5, a[o] + a[o + 10], a[o + 1] + a[o + 9], a[o + 2] + a[o + 8],
                     a[o + 3] + a[o + 7], a[o + 4] + a[o + 6], a[o + 5]);
    }
    return;
  }
DERAIN_SIMD
  for (int64_t o = 0; o < n_out; ++o) {
    T acc = 0;
    for (int64_t k = 0; k < K; ++k) acc = std::fma(w[k], a[o + k], acc);
    out[o] = acc;
  }
}

// Sum of a row, in one fixed order (every sweep sums its values with it, so
// ssim() gives the same bits with and without gradients).
template <typename T>
inline T sum_row(const T* a, int64_t n) {
  T acc = 0;
  _Pragma("omp simd reduction(+ : acc)")
  for (int64_t o = 0; o < n; ++o) acc += a[o];
  return acc;
}

template <typename T>
struct Params {
  Axis ax_h, ax_w;  // rows, columns
  int64_t K;
  std::vector<T> w;
  T c1, c2;
};

// What one sweep reads and writes for one plane.
template <typename T>
struct PlaneJob {
  const T* x = nullptr;
  const T* y = nullptr;
  T* map = nullptr;         // (Ho, Wo) SSIM map, or null
  const T* gmap = nullptr;  // (Ho, Wo) incoming gradient of the map ("map"), or null
  T gscale = T(1);          // 1 / (values averaged) for "mean"/"none"
  T gplane = T(1);          // incoming gradient of the averaged value, applied last
  T* gx = nullptr;          // (H, W) gradients (GRAD sweeps); gy null: grad_x alone
  T* gy = nullptr;
};

// One sweep over the rows [r0, r1) of one plane: output rows when only values
// are wanted (GRAD false), input rows when gradients are (GRAD true: the output
// rows that read them are computed too, K-1 more at each inner strip edge).
// Returns the sum of the SSIM values of the output rows [r0, r1) when want_sum.
template <typename T, bool GRAD>
double sweep(const Params<T>& P, const TransposedAxis<T>* tv, const TransposedAxis<T>* th, const PlaneJob<T>& J,
             int64_t r0, int64_t r1, bool want_sum, std::vector<T>& scratch) {
  const Axis &ah = P.ax_h, &aw = P.ax_w;
  const int64_t K = P.K, rw = aw.r, W = aw.n, Wp = aw.np, Wo = aw.no, Ho = ah.no;
  const int64_t Rv = ah.R(), Rh = aw.R();
  const bool both = GRAD && J.gy != nullptr;
  const int nch = GRAD ? (both ? 5 : 3) : 0;
  const int64_t vlen = Wo + 2 * (K - 1);
  // rings of K + 1 rows: two rows at a time share their loads in the vertical passes
  const int64_t HS = K + 1, hring_stride = HS * Wo, dring_stride = HS * Wo;
  scratch.resize(5 * Wp + 5 * hring_stride + 12 * Wo + nch * (dring_stride + 2 * vlen + W));
  T* px = scratch.data();
  T* py = px + Wp;
  T* pxx = py + Wp;
  T* pyy = pxx + Wp;
  T* pxy = pyy + Wp;
  T* hring = pxy + Wp;  // 5 x (K+1) rows of the horizontal pass, padded row p in slot p % (K+1)
  T* st = hring + 5 * hring_stride;  // the five statistics of one output row
  T* st_next = st + 5 * Wo;          // ... and of the next one (pairs of rows share their loads)
  T* srow = st_next + 5 * Wo;        // SSIM values of one output row
  T* zero = srow + Wo;       // a row of zeros (taps outside the output rows)
  T* dring = zero + Wo;  // nch x (K+1) rows of derivative maps, output row i in slot i % (K+1)
  T* V = dring + nch * dring_stride;  // 2 x nch x vlen: vertical transposed pass of two input rows,
                                      // K-1 zeros on each side
  T* Tm = V + 2 * nch * vlen;         // nch x W: both transposed passes of one input row
  std::fill_n(zero, Wo, T(0));
  if (GRAD) std::fill_n(V, 2 * nch * vlen, T(0));
  const T* w = P.w.data();
  const T c1 = P.c1, c2 = P.c2;

  // horizontal pass of padded row p (p >= 0) into its ring slot
  auto hpass = [&](int64_t p) {
    T* dst = hring + (p % HS) * Wo;
    const int64_t s = ah.source(p);
    if (s < 0) {
      for (int c = 0; c < 5; ++c) std::fill_n(dst + c * hring_stride, Wo, T(0));
      return;
    }
    const T* xr = J.x + s * W;
    const T* yr = J.y + s * W;
    // the next rows come from L3 or memory: ask for them now (row by row the
    // hardware prefetcher alone leaves each copy waiting on its first lines)
    const int64_t sn = ah.source(p + 1);
    if (sn >= 0) {
      const char* xn = reinterpret_cast<const char*>(J.x + sn * W);
      const char* yn = reinterpret_cast<const char*>(J.y + sn * W);
      for (int64_t b = 0; b < W * static_cast<int64_t>(sizeof(T)); b += 64) {
        __builtin_prefetch(xn + b);
        __builtin_prefetch(yn + b);
      }
    }
    if (aw.pad == Pad::Valid) {
      std::memcpy(px, xr, W * sizeof(T));
      std::memcpy(py, yr, W * sizeof(T));
    } else {
      std::memcpy(px + rw, xr, W * sizeof(T));
      std::memcpy(py + rw, yr, W * sizeof(T));
      for (int64_t q = 0; q < rw; ++q) {
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
    conv_valid(px, dst, Wo, w, K);
    conv_valid(py, dst + hring_stride, Wo, w, K);
    conv_valid(pxx, dst + 2 * hring_stride, Wo, w, K);
    conv_valid(pyy, dst + 3 * hring_stride, Wo, w, K);
    conv_valid(pxy, dst + 4 * hring_stride, Wo, w, K);
  };

  // Transposed blur of the derivative maps into input row s, then its gradients.
  // Vertical taps: input row s reads output rows s - Rv .. s - Rv + K - 1 (zero
  // rows outside [0, Ho)); "plain" rows (the window itself) two at a time.
  auto dmap_row = [&](const T* dc, int64_t i) -> const T* {
    return (i >= 0 && i < Ho) ? dc + (i % HS) * Wo : zero;
  };
  auto vertical_plain_pair = [&](int64_t s) {  // rows s and s + 1, both plain, K = 11
    const T w0 = w[0], w1 = w[1], w2 = w[2], w3 = w[3], w4 = w[4], w5 = w[5];
    for (int ci = 0; ci < nch; ++ci) {
      const T* dc = dring + ci * dring_stride;
      const T* rr[12];
      for (int64_t t = 0; t < 12; ++t) rr[t] = dmap_row(dc, s - Rv + t);
      T* v0 = V + ci * vlen + (K - 1);
      T* v1 = V + (nch + ci) * vlen + (K - 1);
      const T *a0 = rr[0], *a1 = rr[1], *a2 = rr[2], *a3 = rr[3], *a4 = rr[4], *a5 = rr[5], *a6 = rr[6],
              *a7 = rr[7], *a8 = rr[8], *a9 = rr[9], *a10 = rr[10], *a11 = rr[11];
DERAIN_SIMD
      for (int64_t o = 0; o < Wo; ++o) {
        const T u1 = a1[o], u2 = a2[o], u3 = a3[o], u4 = a4[o], u5 = a5[o], u6 = a6[o], u7 = a7[o],
                u8 = a8[o], u9 = a9[o], u10 = a10[o];
        v0[o] = tap11(w0, w1, w2, w3, w4, w5, a0[o] + u10, u1 + u9, u2 + u8, u3 + u7, u4 + u6, u5);
        v1[o] = tap11(w0, w1, w2, w3, w4, w5, u1 + a11[o], u2 + u10, u3 + u9, u4 + u8, u5 + u7, u6);
      }
    }
  };
  auto vertical_one = [&](int64_t s) {  // row s into the first V slot
    const T* trow = tv->table.data() + s * K;
    const bool vplain = K == 11 && tv->plain[s];
    for (int ci = 0; ci < nch; ++ci) {
      T* v = V + ci * vlen + (K - 1);
      const T* dc = dring + ci * dring_stride;
      if (vplain) {  // the same arithmetic as a pair's rows
        const T* rr[11];
        for (int64_t t = 0; t < 11; ++t) rr[t] = dmap_row(dc, s - Rv + t);
        const T w0 = w[0], w1 = w[1], w2 = w[2], w3 = w[3], w4 = w[4], w5 = w[5];
        const T *a0 = rr[0], *a1 = rr[1], *a2 = rr[2], *a3 = rr[3], *a4 = rr[4], *a5 = rr[5], *a6 = rr[6],
                *a7 = rr[7], *a8 = rr[8], *a9 = rr[9], *a10 = rr[10];
DERAIN_SIMD
        for (int64_t o = 0; o < Wo; ++o)
          v[o] = tap11(w0, w1, w2, w3, w4, w5, a0[o] + a10[o], a1[o] + a9[o], a2[o] + a8[o], a3[o] + a7[o],
                       a4[o] + a6[o], a5[o]);
      } else {
        std::fill_n(v, Wo, T(0));
        for (int64_t t = 0; t < K; ++t) {
          const int64_t i = s - Rv + t;
          const T wt = trow[t];
          if (i < 0 || i >= Ho || wt == T(0)) continue;
          const T* d = dc + (i % HS) * Wo;
DERAIN_SIMD
          for (int64_t o = 0; o < Wo; ++o) v[o] = std::fma(wt, d[o], v[o]);
        }
      }
    }
  };
  // horizontal taps of V slot `which` into Tm, then the gradients of input row s
  auto finish_row = [&](int64_t s, int which) {
    for (int ci = 0; ci < nch; ++ci) {
      const T* v = V + (which * nch + ci) * vlen + (K - 1);  // v[o], o may run K-1 outside [0, Wo): zeros
      T* tm = Tm + ci * W;
      const int64_t pb = th->plain_begin, pe = th->plain_end;
      if (pe > pb) conv_valid(v + pb - Rh, tm + pb, pe - pb, w, K);
      auto table_columns = [&](int64_t q0, int64_t q1) {
        for (int64_t q = q0; q < q1; ++q) {
          const T* hrow = th->table.data() + q * K;
          T acc = 0;
          for (int64_t t = 0; t < K; ++t) acc = std::fma(hrow[t], v[q - Rh + t], acc);
          tm[q] = acc;
        }
      };
      table_columns(0, pe > pb ? pb : W);
      if (pe > pb) table_columns(pe, W);
    }
    const T* xr = J.x + s * W;
    const T* yr = J.y + s * W;
    T* gxr = J.gx + s * W;
    const T gs = J.gscale, gp = J.gplane;
    if (both) {
      const T *t0 = Tm, *t1 = Tm + W, *t2 = Tm + 2 * W, *t3 = Tm + 3 * W, *t4 = Tm + 4 * W;
      T* gyr = J.gy + s * W;
DERAIN_SIMD
      for (int64_t q = 0; q < W; ++q) {
        gxr[q] = gp * (gs * (t0[q] + T(2) * xr[q] * t2[q] + yr[q] * t4[q]));
        gyr[q] = gp * (gs * (t1[q] + T(2) * yr[q] * t3[q] + xr[q] * t4[q]));
      }
    } else {
      const T *t0 = Tm, *t2 = Tm + W, *t4 = Tm + 2 * W;
DERAIN_SIMD
      for (int64_t q = 0; q < W; ++q) gxr[q] = gp * (gs * (t0[q] + T(2) * xr[q] * t2[q] + yr[q] * t4[q]));
    }
  };

  int64_t i0 = r0, i1 = r1, own0 = r0, own1 = r1;
  if (GRAD) {
    i0 = std::max<int64_t>(0, r0 - Rv);
    i1 = std::min<int64_t>(Ho, r1 - Rv + K - 1);
    own0 = std::min(r0, Ho);
    own1 = std::min(r1, Ho);
  }
  for (int64_t p = i0; p < i0 + K - 1; ++p) hpass(p);
  int64_t next_s = r0;
  double sum = 0;
  bool next_ready = false;  // st_next holds output row i (the second row of a pair)
  for (int64_t i = i0; i < i1; ++i) {
    const T* stats = st;
    if (next_ready) {
      stats = st_next;
      next_ready = false;
    } else if (K == 11 && i + 1 < i1) {
      // vertical pass of output rows i and i + 1 together: 12 row loads for both
      hpass(i + K - 1);
      hpass(i + K);
      const T w0 = w[0], w1 = w[1], w2 = w[2], w3 = w[3], w4 = w[4], w5 = w[5];
      for (int c = 0; c < 5; ++c) {
        const T* base = hring + c * hring_stride;
        const T* rr[12];
        for (int64_t k = 0, slot = i % HS; k < 12; ++k) {
          rr[k] = base + slot * Wo;
          if (++slot == HS) slot = 0;
        }
        T* d0 = st + c * Wo;
        T* d1 = st_next + c * Wo;
        const T *a0 = rr[0], *a1 = rr[1], *a2 = rr[2], *a3 = rr[3], *a4 = rr[4], *a5 = rr[5], *a6 = rr[6],
                *a7 = rr[7], *a8 = rr[8], *a9 = rr[9], *a10 = rr[10], *a11 = rr[11];
DERAIN_SIMD
        for (int64_t o = 0; o < Wo; ++o) {
          const T v1 = a1[o], v2 = a2[o], v3 = a3[o], v4 = a4[o], v5 = a5[o], v6 = a6[o], v7 = a7[o],
                  v8 = a8[o], v9 = a9[o], v10 = a10[o];
          d0[o] = tap11(w0, w1, w2, w3, w4, w5, a0[o] + v10, v1 + v9, v2 + v8, v3 + v7, v4 + v6, v5);
          d1[o] = tap11(w0, w1, w2, w3, w4, w5, v1 + a11[o], v2 + v10, v3 + v9, v4 + v8, v5 + v7, v6);
        }
      }
      next_ready = true;
    } else {
      // vertical pass of output row i alone (for K = 11 the same arithmetic as a pair's rows)
      hpass(i + K - 1);
      for (int c = 0; c < 5; ++c) {
        const T* base = hring + c * hring_stride;
        T* dst = st + c * Wo;
        if (K == 11) {
          const T* rr[11];
          for (int64_t k = 0, slot = i % HS; k < 11; ++k) {
            rr[k] = base + slot * Wo;
            if (++slot == HS) slot = 0;
          }
          const T w0 = w[0], w1 = w[1], w2 = w[2], w3 = w[3], w4 = w[4], w5 = w[5];
          const T *a0 = rr[0], *a1 = rr[1], *a2 = rr[2], *a3 = rr[3], *a4 = rr[4], *a5 = rr[5], *a6 = rr[6],
                  *a7 = rr[7], *a8 = rr[8], *a9 = rr[9], *a10 = rr[10];
DERAIN_SIMD
          for (int64_t o = 0; o < Wo; ++o)
            dst[o] = tap11(w0, w1, w2, w3, w4, w5, a0[o] + a10[o], a1[o] + a9[o], a2[o] + a8[o],
                           a3[o] + a7[o], a4[o] + a6[o], a5[o]);
          continue;
        }
        std::fill_n(dst, Wo, T(0));
        for (int64_t k = 0, slot = i % HS; k < K; ++k) {
          const T wk = w[k];
          const T* src = base + slot * Wo;
          if (++slot == HS) slot = 0;
DERAIN_SIMD
          for (int64_t o = 0; o < Wo; ++o) dst[o] = std::fma(wk, src[o], dst[o]);
        }
      }
    }
    const T* mx = stats;
    const T* my = stats + Wo;
    const T* exx = stats + 2 * Wo;
    const T* eyy = stats + 3 * Wo;
    const T* exy = stats + 4 * Wo;
    const bool own = i >= own0 && i < own1;
    T row_sum = 0;
    if (!GRAD) {
      T* dst = J.map ? J.map + i * Wo : srow;
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
        dst[o] = (a1 * a2) / (b1 * b2);  // the same arithmetic as the GRAD sweep's values
      }
      row_sum = sum_row(dst, Wo);
    } else {
      // derivative maps of output row i: slots mx, my, xx, yy, xy (both) or mx, xx, xy (grad_x alone)
      T* d0 = dring + (i % HS) * Wo;
      T* d1 = d0 + dring_stride;
      T* d2 = d1 + dring_stride;
      T* d3 = d2 + dring_stride;
      T* d4 = d3 + dring_stride;
      // (no reduction in these loops: keeps them vectorised; the values go to srow)
#define DERAIN_SSIM_DERIVATIVES                                      \
  const T ux = mx[o], uy = my[o];                                    \
  const T vx = exx[o] - ux * ux, vy = eyy[o] - uy * uy, cxy = exy[o] - ux * uy; \
  const T sx = vx < T(0) ? T(0) : vx, sy = vy < T(0) ? T(0) : vy;    \
  const T sxy = vx < T(0) ? T(0) : (vy < T(0) ? T(0) : cxy);         \
  const T a1 = T(2) * (ux * uy) + c1;                                \
  const T du = ux - uy;                                              \
  const T b1 = a1 + du * du;                                         \
  const T a2 = T(2) * sxy + c2;                                      \
  const T b2 = sx + sy + c2;                                         \
  const T den = b1 * b2;                                             \
  const T inv = T(1) / den;                                          \
  const T s = (a1 * a2) / den; /* exactly 1 for identical images */ \
  const T t1 = a2 * inv;       /* dS/da1 */                          \
  const T t2 = s * (b2 * inv); /* -dS/db1 = S / b1 */                \
  const T t3 = a1 * inv;       /* dS/da2 */                          \
  const T t4 = s * (b1 * inv); /* -dS/db2 = S / b2 */                \
  const T ax = vx < T(0) ? T(0) : -t4;                               \
  const T ay = vy < T(0) ? T(0) : -t4;                               \
  const T bxy = vx < T(0) ? T(0) : (vy < T(0) ? T(0) : T(2) * t3);
      if (both) {
DERAIN_SIMD
        for (int64_t o = 0; o < Wo; ++o) {
          DERAIN_SSIM_DERIVATIVES
          srow[o] = s;
          d0[o] = T(2) * (uy * t1 - ux * t2) - T(2) * ux * ax - uy * bxy;
          d1[o] = T(2) * (ux * t1 - uy * t2) - T(2) * uy * ay - ux * bxy;
          d2[o] = ax;
          d3[o] = ay;
          d4[o] = bxy;
        }
      } else {
DERAIN_SIMD
        for (int64_t o = 0; o < Wo; ++o) {
          DERAIN_SSIM_DERIVATIVES
          (void)ay;
          srow[o] = s;
          d0[o] = T(2) * (uy * t1 - ux * t2) - T(2) * ux * ax - uy * bxy;
          d1[o] = ax;
          d2[o] = bxy;
        }
      }
#undef DERAIN_SSIM_DERIVATIVES
      if (J.gmap) {
        const T* g = J.gmap + i * Wo;
        for (int ci = 0; ci < nch; ++ci) {
          T* d = d0 + ci * dring_stride;
DERAIN_SIMD
          for (int64_t o = 0; o < Wo; ++o) d[o] = g[o] * d[o];
        }
      }
      if (want_sum && own) row_sum = sum_row(srow, Wo);
      // the input rows whose K output rows are all done, two at a time where both are plain
      const bool last = i == i1 - 1;
      while (next_s < r1 && (next_s - Rv + K - 1 <= i || last)) {
        const bool pairable = K == 11 && next_s + 1 < r1 && tv->plain[next_s] && tv->plain[next_s + 1];
        if (pairable && !(next_s - Rv + K <= i || last)) break;  // its partner needs the next output row
        if (pairable) {
          vertical_plain_pair(next_s);
          finish_row(next_s, 0);
          finish_row(next_s + 1, 1);
          next_s += 2;
        } else {
          vertical_one(next_s);
          finish_row(next_s, 0);
          ++next_s;
        }
      }
    }
    if (own) sum += static_cast<double>(row_sum);
  }
  return sum;
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
  m.impl("ssim_backward", &ssim_backward_cpu);
  m.impl("ssim_backward_x", &ssim_backward_x_cpu);
  m.impl("ssim_with_grad", &ssim_with_grad_cpu);
}

}  // namespace derain
