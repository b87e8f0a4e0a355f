// The Gaussian window of SSIM along one axis: the axis geometry of each padding mode, the window,
// its transposed form (the blur of the backward), and the window's row and column passes.
#pragma once

#include <ATen/ATen.h>

#include <cmath>
#include <cstdint>
#include <vector>

#include "../common/padding.h"
#include "../common/simd.h"

namespace derain {
namespace ssim {

// Geometry of one axis: n input samples, no outputs, np padded samples.
struct Axis {
  int64_t n, no, np, r;
  Padding pad;
  Axis(int64_t n_, int64_t k, Padding pad_) : n(n_), r(k / 2), pad(pad_) {
    if (pad == Padding::Valid) {
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
    if (pad == Padding::Valid) return p;
    int64_t s = p - r;
    if (s >= 0 && s < n) return s;
    if (pad == Padding::Zeros) return -1;
    return reflect_once(s, n);
  }
  // Output o reads padded indices o .. o + 2r. Input s is read by outputs
  // s - R .. s - R + 2r (R = r, or 2r for "valid"), reflected taps included.
  int64_t R() const { return pad == Padding::Valid ? 2 * r : r; }
};

std::vector<double> gaussian_window(int64_t k, double sigma) {
  // Below sigma = 0.02 every off-centre tap exp(-i^2 / (2 sigma^2)) is exactly 0 in double: the same
  // window for any smaller sigma, and 2 sigma^2 no longer underflows to 0 (0/0 = NaN taps).
  sigma = std::max(sigma, 0.02);
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
#pragma omp simd
    for (int64_t o = 0; o < n_out; ++o) {
      // symmetric window: pair the taps
      out[o] = tap11(w0, w1, w2, w3, w4, w5, a[o] + a[o + 10], a[o + 1] + a[o + 9], a[o + 2] + a[o + 8],
                     a[o + 3] + a[o + 7], a[o + 4] + a[o + 6], a[o + 5]);
    }
    return;
  }
#pragma omp simd
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
#pragma omp simd reduction(+ : acc)
  for (int64_t o = 0; o < n; ++o) acc += a[o];
  return acc;
}


// The 11-tap symmetric window (tap11) down rows a[0..10] at every column o < n: out[o] = sum_k
// w[k] a[k][o], on the pair sums a[k] + a[10 - k].
template <typename T>
DERAIN_ALWAYS_INLINE void window11_rows(const T* const (&a)[11], const T* w, T* out, int64_t n) {
  const T w0 = w[0], w1 = w[1], w2 = w[2], w3 = w[3], w4 = w[4], w5 = w[5];
  const T *a0 = a[0], *a1 = a[1], *a2 = a[2], *a3 = a[3], *a4 = a[4], *a5 = a[5], *a6 = a[6], *a7 = a[7],
          *a8 = a[8], *a9 = a[9], *a10 = a[10];
#pragma omp simd
  for (int64_t o = 0; o < n; ++o)
    out[o] = tap11(w0, w1, w2, w3, w4, w5, a0[o] + a10[o], a1[o] + a9[o], a2[o] + a8[o], a3[o] + a7[o],
                   a4[o] + a6[o], a5[o]);
}

// The window down rows a[0..10] into out0 and down rows a[1..11] into out1: two output rows from 12
// row loads (the same arithmetic as window11_rows for each).
template <typename T>
DERAIN_ALWAYS_INLINE void window11_row_pair(const T* const (&a)[12], const T* w, T* out0, T* out1, int64_t n) {
  const T w0 = w[0], w1 = w[1], w2 = w[2], w3 = w[3], w4 = w[4], w5 = w[5];
  const T *a0 = a[0], *a1 = a[1], *a2 = a[2], *a3 = a[3], *a4 = a[4], *a5 = a[5], *a6 = a[6], *a7 = a[7],
          *a8 = a[8], *a9 = a[9], *a10 = a[10], *a11 = a[11];
#pragma omp simd
  for (int64_t o = 0; o < n; ++o) {
    const T v1 = a1[o], v2 = a2[o], v3 = a3[o], v4 = a4[o], v5 = a5[o], v6 = a6[o], v7 = a7[o], v8 = a8[o],
            v9 = a9[o], v10 = a10[o];
    out0[o] = tap11(w0, w1, w2, w3, w4, w5, a0[o] + v10, v1 + v9, v2 + v8, v3 + v7, v4 + v6, v5);
    out1[o] = tap11(w0, w1, w2, w3, w4, w5, v1 + a11[o], v2 + v10, v3 + v9, v4 + v8, v5 + v7, v6);
  }
}

}  // namespace ssim
}  // namespace derain
