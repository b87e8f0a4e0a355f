// One SSIM sweep over a strip of rows of one plane: values, and for gradients the derivative maps
// and their transposed blurs (see ssim_kernel.cpp).
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <vector>

#include "../common/padding.h"
#include "../common/simd.h"
#include "window.h"

namespace derain {
namespace ssim {

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


// The terms of the SSIM of one pixel, S = (a1 a2) / (b1 b2), from its local statistics (means ux,
// uy; second moments exx, eyy, exy): variances vx, vy (clamped at 0 in a2 and b2, as is the
// covariance when either variance is negative).
template <typename T>
struct SsimTerms {
  T vx, vy, a1, b1, a2, b2;
};

template <typename T>
DERAIN_ALWAYS_INLINE SsimTerms<T> ssim_terms(T ux, T uy, T exx, T eyy, T exy, T c1, T c2) {
  const T vx = exx - ux * ux, vy = eyy - uy * uy, cxy = exy - ux * uy;
  // (selects on the comparisons themselves: bool temporaries keep GCC from vectorising)
  const T sx = vx < T(0) ? T(0) : vx, sy = vy < T(0) ? T(0) : vy;
  const T sxy = vx < T(0) ? T(0) : (vy < T(0) ? T(0) : cxy);
  const T a1 = T(2) * (ux * uy) + c1;
  const T du = ux - uy;
  const T b1 = a1 + du * du;
  const T a2 = T(2) * sxy + c2;
  const T b2 = sx + sy + c2;
  return {vx, vy, a1, b1, a2, b2};
}

// The SSIM of one pixel (the same arithmetic as ssim_derivatives' value).
template <typename T>
DERAIN_ALWAYS_INLINE T ssim_value(T ux, T uy, T exx, T eyy, T exy, T c1, T c2) {
  const SsimTerms<T> t = ssim_terms(ux, uy, exx, eyy, exy, c1, c2);
  return (t.a1 * t.a2) / (t.b1 * t.b2);
}

// The SSIM of one pixel and its derivatives with respect to its five statistics.
template <typename T>
struct SsimDerivatives {
  T s;
  T d_mx, d_my;        // dS/d mu_x, dS/d mu_y (the second moments held)
  T d_xx, d_yy, d_xy;  // dS/d E[x^2], dS/d E[y^2], dS/d E[xy]
};

template <typename T>
DERAIN_ALWAYS_INLINE SsimDerivatives<T> ssim_derivatives(T ux, T uy, T exx, T eyy, T exy, T c1, T c2) {
  const SsimTerms<T> t = ssim_terms(ux, uy, exx, eyy, exy, c1, c2);
  const T vx = t.vx, vy = t.vy, a1 = t.a1, b1 = t.b1, a2 = t.a2, b2 = t.b2;
  const T den = b1 * b2;
  const T inv = T(1) / den;
  const T s = (a1 * a2) / den;  // exactly 1 for identical images
  const T t1 = a2 * inv;        // dS/da1
  const T t2 = s * (b2 * inv);  // -dS/db1 = S / b1
  const T t3 = a1 * inv;        // dS/da2
  const T t4 = s * (b1 * inv);  // -dS/db2 = S / b2
  const T ax = vx < T(0) ? T(0) : -t4;
  const T ay = vy < T(0) ? T(0) : -t4;
  const T bxy = vx < T(0) ? T(0) : (vy < T(0) ? T(0) : T(2) * t3);
  return {s,
          T(2) * (uy * t1 - ux * t2) - T(2) * ux * ax - uy * bxy,
          T(2) * (ux * t1 - uy * t2) - T(2) * uy * ay - ux * bxy,
          ax,
          ay,
          bxy};
}

// One sweep over the rows [r0, r1) of one plane: output rows when only values
// are wanted (GRAD false), input rows when gradients are (GRAD true: the output
// rows that read them are computed too, K-1 more at each inner strip edge).
// run() returns the sum of the SSIM values of the output rows [r0, r1) when want_sum.
//
// Per output row i: the horizontal passes of the padded input rows it reads (a ring), the
// vertical pass (the five statistics), then the SSIM values, or for gradients the derivative
// maps (another ring); once the K output rows that read an input row are done, that input row's
// transposed blurs and gradients (finish_input_rows).
template <typename T, bool GRAD>
class Sweep {
 public:
  Sweep(const Params<T>& P, const TransposedAxis<T>* tv, const TransposedAxis<T>* th, const PlaneJob<T>& J,
        std::vector<T>& scratch)
      : ah(P.ax_h), aw(P.ax_w), tv(tv), th(th), J(J), K(P.K), rw(aw.r), W(aw.n), Wp(aw.np), Wo(aw.no),
        Ho(ah.no), Rv(ah.R()), Rh(aw.R()), both(GRAD && J.gy != nullptr), nch(GRAD ? (both ? 5 : 3) : 0),
        vlen(Wo + 2 * (K - 1)), HS(K + 1), hring_stride(HS * Wo), dring_stride(HS * Wo), w(P.w.data()),
        c1(P.c1), c2(P.c2) {
    scratch.resize(5 * Wp + 5 * hring_stride + 12 * Wo + nch * (dring_stride + 2 * vlen + W));
    px = scratch.data();
    py = px + Wp;
    pxx = py + Wp;
    pyy = pxx + Wp;
    pxy = pyy + Wp;
    hring = pxy + Wp;
    st = hring + 5 * hring_stride;
    st_next = st + 5 * Wo;
    srow = st_next + 5 * Wo;
    zero = srow + Wo;
    dring = zero + Wo;
    V = dring + nch * dring_stride;
    Tm = V + 2 * nch * vlen;
    std::fill_n(zero, Wo, T(0));
    if (GRAD) std::fill_n(V, 2 * nch * vlen, T(0));
  }

  DERAIN_ALWAYS_INLINE double run(int64_t r0, int64_t r1, bool want_sum) {
    int64_t i0 = r0, i1 = r1, own0 = r0, own1 = r1;
    if (GRAD) {
      i0 = std::max<int64_t>(0, r0 - Rv);
      i1 = std::min<int64_t>(Ho, r1 - Rv + K - 1);
      own0 = std::min(r0, Ho);
      own1 = std::min(r1, Ho);
    }
    for (int64_t p = i0; p < i0 + K - 1; ++p) horizontal_pass(p);
    int64_t next_s = r0;
    double sum = 0;
    for (int64_t i = i0; i < i1; ++i) {
      const T* stats = statistics(i, i1);
      const bool own = i >= own0 && i < own1;
      T row_sum = 0;
      if (!GRAD) {
        T* dst = J.map ? J.map + i * Wo : srow;
        values_row(stats, dst);
        row_sum = sum_row(dst, Wo);
      } else {
        derivatives_row(stats, i);
        if (want_sum && own) row_sum = sum_row(srow, Wo);
        next_s = finish_input_rows(next_s, r1, i, i == i1 - 1);
      }
      if (own) sum += static_cast<double>(row_sum);
    }
    return sum;
  }

 private:
  // horizontal pass of padded row p (p >= 0) into its ring slot
  DERAIN_ALWAYS_INLINE void horizontal_pass(int64_t p) {
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
    if (aw.pad == Padding::Valid) {
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
#pragma omp simd
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
  }

  // The five statistics of output row i (mu_x, mu_y, E[x^2], E[y^2], E[xy], Wo values each): with
  // K = 11, rows i and i + 1 together (12 row loads for both; the second is kept for the next call).
  DERAIN_ALWAYS_INLINE const T* statistics(int64_t i, int64_t i1) {
    if (next_ready) {
      next_ready = false;
      return st_next;
    }
    if (K == 11 && i + 1 < i1) {
      horizontal_pass(i + K - 1);
      horizontal_pass(i + K);
      for (int c = 0; c < 5; ++c) {
        const T* base = hring + c * hring_stride;
        const T* rr[12];
        for (int64_t k = 0, slot = i % HS; k < 12; ++k) {
          rr[k] = base + slot * Wo;
          if (++slot == HS) slot = 0;
        }
        window11_row_pair(rr, w, st + c * Wo, st_next + c * Wo, Wo);
      }
      next_ready = true;
      return st;
    }
    // output row i alone (for K = 11 the same arithmetic as a pair's rows)
    horizontal_pass(i + K - 1);
    for (int c = 0; c < 5; ++c) {
      const T* base = hring + c * hring_stride;
      T* dst = st + c * Wo;
      if (K == 11) {
        const T* rr[11];
        for (int64_t k = 0, slot = i % HS; k < 11; ++k) {
          rr[k] = base + slot * Wo;
          if (++slot == HS) slot = 0;
        }
        window11_rows(rr, w, dst, Wo);
        continue;
      }
      std::fill_n(dst, Wo, T(0));
      for (int64_t k = 0, slot = i % HS; k < K; ++k) {
        const T wk = w[k];
        const T* src = base + slot * Wo;
        if (++slot == HS) slot = 0;
#pragma omp simd
        for (int64_t o = 0; o < Wo; ++o) dst[o] = std::fma(wk, src[o], dst[o]);
      }
    }
    return st;
  }

  // SSIM values of one output row from its statistics.
  DERAIN_ALWAYS_INLINE void values_row(const T* stats, T* dst) const {
    const T *mx = stats, *my = stats + Wo, *exx = stats + 2 * Wo, *eyy = stats + 3 * Wo, *exy = stats + 4 * Wo;
#pragma omp simd
    for (int64_t o = 0; o < Wo; ++o) dst[o] = ssim_value(mx[o], my[o], exx[o], eyy[o], exy[o], c1, c2);
  }

  // SSIM values (into srow) and derivative maps of output row i: slots mx, my, xx, yy, xy (both) or
  // mx, xx, xy (grad_x alone), times the incoming gradient map for reduction "map".
  DERAIN_ALWAYS_INLINE void derivatives_row(const T* stats, int64_t i) {
    const T *mx = stats, *my = stats + Wo, *exx = stats + 2 * Wo, *eyy = stats + 3 * Wo, *exy = stats + 4 * Wo;
    T* d0 = dring + (i % HS) * Wo;
    T* d1 = d0 + dring_stride;
    T* d2 = d1 + dring_stride;
    T* d3 = d2 + dring_stride;
    T* d4 = d3 + dring_stride;
    // (no reduction in these loops: keeps them vectorised; the values go to srow)
    if (both) {
#pragma omp simd
      for (int64_t o = 0; o < Wo; ++o) {
        const SsimDerivatives<T> p = ssim_derivatives(mx[o], my[o], exx[o], eyy[o], exy[o], c1, c2);
        srow[o] = p.s;
        d0[o] = p.d_mx;
        d1[o] = p.d_my;
        d2[o] = p.d_xx;
        d3[o] = p.d_yy;
        d4[o] = p.d_xy;
      }
    } else {
#pragma omp simd
      for (int64_t o = 0; o < Wo; ++o) {
        const SsimDerivatives<T> p = ssim_derivatives(mx[o], my[o], exx[o], eyy[o], exy[o], c1, c2);
        srow[o] = p.s;
        d0[o] = p.d_mx;
        d1[o] = p.d_xx;
        d2[o] = p.d_xy;
      }
    }
    if (J.gmap) {
      const T* g = J.gmap + i * Wo;
      for (int ci = 0; ci < nch; ++ci) {
        T* d = d0 + ci * dring_stride;
#pragma omp simd
        for (int64_t o = 0; o < Wo; ++o) d[o] = g[o] * d[o];
      }
    }
  }

  // The input rows from next_s on (below r1) whose K output rows are all done once output row i is
  // (all of them after the last output row), two at a time where both are plain; returns the next
  // input row to finish.
  DERAIN_ALWAYS_INLINE int64_t finish_input_rows(int64_t next_s, int64_t r1, int64_t i, bool last) {
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
    return next_s;
  }

  // Transposed blur of the derivative maps into input row s, then its gradients.
  // Vertical taps: input row s reads output rows s - Rv .. s - Rv + K - 1 (zero
  // rows outside [0, Ho)); "plain" rows (the window itself) two at a time.
  DERAIN_ALWAYS_INLINE const T* dmap_row(const T* dc, int64_t i) const {
    return (i >= 0 && i < Ho) ? dc + (i % HS) * Wo : zero;
  }
  DERAIN_ALWAYS_INLINE void vertical_plain_pair(int64_t s) {  // rows s and s + 1, both plain, K = 11
    for (int ci = 0; ci < nch; ++ci) {
      const T* dc = dring + ci * dring_stride;
      const T* rr[12];
      for (int64_t t = 0; t < 12; ++t) rr[t] = dmap_row(dc, s - Rv + t);
      window11_row_pair(rr, w, V + ci * vlen + (K - 1), V + (nch + ci) * vlen + (K - 1), Wo);
    }
  }
  DERAIN_ALWAYS_INLINE void vertical_one(int64_t s) {  // row s into the first V slot
    const T* trow = tv->table.data() + s * K;
    const bool vplain = K == 11 && tv->plain[s];
    for (int ci = 0; ci < nch; ++ci) {
      T* v = V + ci * vlen + (K - 1);
      const T* dc = dring + ci * dring_stride;
      if (vplain) {  // the same arithmetic as a pair's rows
        const T* rr[11];
        for (int64_t t = 0; t < 11; ++t) rr[t] = dmap_row(dc, s - Rv + t);
        window11_rows(rr, w, v, Wo);
      } else {
        std::fill_n(v, Wo, T(0));
        for (int64_t t = 0; t < K; ++t) {
          const int64_t i = s - Rv + t;
          const T wt = trow[t];
          if (i < 0 || i >= Ho || wt == T(0)) continue;
          const T* d = dc + (i % HS) * Wo;
#pragma omp simd
          for (int64_t o = 0; o < Wo; ++o) v[o] = std::fma(wt, d[o], v[o]);
        }
      }
    }
  }
  // horizontal taps of V slot `which` into Tm, then the gradients of input row s
  DERAIN_ALWAYS_INLINE void finish_row(int64_t s, int which) {
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
#pragma omp simd
      for (int64_t q = 0; q < W; ++q) {
        gxr[q] = gp * (gs * (t0[q] + T(2) * xr[q] * t2[q] + yr[q] * t4[q]));
        gyr[q] = gp * (gs * (t1[q] + T(2) * yr[q] * t3[q] + xr[q] * t4[q]));
      }
    } else {
      const T *t0 = Tm, *t2 = Tm + W, *t4 = Tm + 2 * W;
#pragma omp simd
      for (int64_t q = 0; q < W; ++q) gxr[q] = gp * (gs * (t0[q] + T(2) * xr[q] * t2[q] + yr[q] * t4[q]));
    }
  }

  const Axis &ah, &aw;  // rows, columns
  const TransposedAxis<T>* tv;  // transposed blur down the rows (GRAD)
  const TransposedAxis<T>* th;  // ... and along them
  const PlaneJob<T>& J;
  const int64_t K, rw, W, Wp, Wo, Ho, Rv, Rh;
  const bool both;  // gradients of x and y (else of x alone)
  const int nch;    // derivative maps: 5 (both), 3 (x alone) or 0 (values only)
  const int64_t vlen;
  // rings of K + 1 rows: two rows at a time share their loads in the vertical passes
  const int64_t HS, hring_stride, dring_stride;
  const T* w;
  const T c1, c2;
  bool next_ready = false;  // st_next holds the next output row (the second row of a pair)
  // scratch: one padded input row (x, y and the three products)
  T *px, *py, *pxx, *pyy, *pxy;
  T* hring;    // 5 x (K+1) rows of the horizontal pass, padded row p in slot p % (K+1)
  T* st;       // the five statistics of one output row
  T* st_next;  // ... and of the next one (pairs of rows share their loads)
  T* srow;     // SSIM values of one output row
  T* zero;     // a row of zeros (taps outside the output rows)
  T* dring;    // nch x (K+1) rows of derivative maps, output row i in slot i % (K+1)
  T* V;        // 2 x nch x vlen: vertical transposed pass of two input rows, K-1 zeros on each side
  T* Tm;       // nch x W: both transposed passes of one input row
};

// (Forced inline, as the whole sweep and its row steps are: one loop nest per op and dtype, its
// geometry in registers.)
template <typename T, bool GRAD>
DERAIN_ALWAYS_INLINE double sweep(const Params<T>& P, const TransposedAxis<T>* tv, const TransposedAxis<T>* th,
                                  const PlaneJob<T>& J, int64_t r0, int64_t r1, bool want_sum,
                                  std::vector<T>& scratch) {
  return Sweep<T, GRAD>(P, tv, th, J, scratch).run(r0, r1, want_sum);
}

}  // namespace ssim
}  // namespace derain
