// AVX-512 micro-kernels of the direct (non-Winograd) 3x3 convolutions and weight gradients, float32:
// 16 output channels (one register) per block of accumulators, input values broadcast.
#pragma once

#include <cstdint>

#include "../common/simd.h"

#if defined(__AVX512F__)
namespace derain {
namespace conv3x3 {

// P output pixels x 16 output channels per block of accumulators. PS is the
// input pixel stride when known at compile time (0: runtime `ps_rt`): then
// every input address is one base register plus a constant offset.
template <int P, int PS>
inline void conv_px_avx512(const float* const rows[3], int64_t x0, int64_t ps_rt, int64_t cin, int64_t d,
                           const float* w, const float* bias, int64_t coutp, float* out) {
  const int64_t ps = PS ? PS : ps_rt;
  for (int64_t cb = 0; cb < coutp; cb += 16) {
    __m512 acc[P];
    const __m512 b = _mm512_loadu_ps(bias + cb);
#pragma GCC unroll 16
    for (int p = 0; p < P; ++p) acc[p] = b;
    // summation order (ky, ci, kx): the same as conv_px16_avx512_d, so that a pixel's value
    // does not depend on whether it falls in a 16-pixel block or in the tail of its row
    for (int ky = 0; ky < 3; ++ky) {
      for (int64_t ci = 0; ci < cin; ++ci) {
        for (int kx = 0; kx < 3; ++kx) {
          const int t = ky * 3 + kx;
          const __m512 wv = _mm512_loadu_ps(w + (t * cin + ci) * coutp + cb);
          const float* ipc = rows[ky] + (x0 + (kx - 1) * d) * ps + ci;
#pragma GCC unroll 16
          for (int p = 0; p < P; ++p) acc[p] = _mm512_fmadd_ps(_mm512_set1_ps(ipc[p * ps]), wv, acc[p]);
        }
      }
    }
#pragma GCC unroll 16
    for (int p = 0; p < P; ++p) _mm512_storeu_ps(out + (x0 + p) * coutp + cb, acc[p]);
  }
}

// The same 16 pixels x 16 channels block with each input value broadcast once
// per row of taps: input pixel x0 - D + j feeds output j (tap kx = 0), j - D
// (kx = 1) and j - 2D (kx = 2), so the three weight vectors of (ky, ci) stay
// in registers and one broadcast serves up to three FMAs (about 0.5 loads per
// FMA instead of 1.06: the plain kernel is bound by its broadcast loads).
template <int PS, int D, int J>
inline void conv_tap_row_avx512(__m512 (&acc)[16], const float* ipc, __m512 w0, __m512 w1, __m512 w2) {
  if constexpr (J < 16 + 2 * D) {
    const __m512 b = _mm512_set1_ps(ipc[J * PS]);
    if constexpr (J < 16) acc[J] = _mm512_fmadd_ps(b, w0, acc[J]);
    if constexpr (J - D >= 0 && J - D < 16) acc[J - D] = _mm512_fmadd_ps(b, w1, acc[J - D]);
    if constexpr (J - 2 * D >= 0 && J - 2 * D < 16) acc[J - 2 * D] = _mm512_fmadd_ps(b, w2, acc[J - 2 * D]);
    conv_tap_row_avx512<PS, D, J + 1>(acc, ipc, w0, w1, w2);
  }
}

template <int PS, int D>
inline void conv_px16_avx512_d(const float* const rows[3], int64_t x0, int64_t ps_rt, int64_t cin, const float* w,
                               const float* bias, int64_t coutp, float* out) {
  const int64_t ps = PS ? PS : ps_rt;
  (void)ps;
  for (int64_t cb = 0; cb < coutp; cb += 16) {
    __m512 acc[16];
    const __m512 b = _mm512_loadu_ps(bias + cb);
#pragma GCC unroll 16
    for (int p = 0; p < 16; ++p) acc[p] = b;
    for (int ky = 0; ky < 3; ++ky) {
      const float* ip = rows[ky] + (x0 - D) * ps;
      const float* wp = w + ky * 3 * cin * coutp + cb;
      for (int64_t ci = 0; ci < cin; ++ci) {
        const __m512 w0 = _mm512_loadu_ps(wp + ci * coutp);
        const __m512 w1 = _mm512_loadu_ps(wp + (cin + ci) * coutp);
        const __m512 w2 = _mm512_loadu_ps(wp + (2 * cin + ci) * coutp);
        if constexpr (PS != 0) {
          conv_tap_row_avx512<PS, D, 0>(acc, ip + ci, w0, w1, w2);
        } else {  // runtime pixel stride: same schedule, addresses computed
          const float* ipc = ip + ci;
#pragma GCC unroll 32
          for (int j = 0; j < 16 + 2 * D; ++j) {
            const __m512 bj = _mm512_set1_ps(ipc[j * ps]);
            if (j < 16) acc[j] = _mm512_fmadd_ps(bj, w0, acc[j]);
            if (j - D >= 0 && j - D < 16) acc[j - D] = _mm512_fmadd_ps(bj, w1, acc[j - D]);
            if (j - 2 * D >= 0 && j - 2 * D < 16) acc[j - 2 * D] = _mm512_fmadd_ps(bj, w2, acc[j - 2 * D]);
          }
        }
      }
    }
#pragma GCC unroll 16
    for (int p = 0; p < 16; ++p) _mm512_storeu_ps(out + (x0 + p) * coutp + cb, acc[p]);
  }
}

template <int PS, int D>
inline void conv_row_avx512_d(const float* const rows[3], int64_t ps, int64_t cin, const float* w,
                              const float* bias, int64_t coutp, float* out, int64_t W) {
  int64_t x = 0;
  for (; x + 16 <= W; x += 16) conv_px16_avx512_d<PS, D>(rows, x, ps, cin, w, bias, coutp, out);
  for (; x + 8 <= W; x += 8) conv_px_avx512<8, PS>(rows, x, ps, cin, D, w, bias, coutp, out);
  for (; x + 4 <= W; x += 4) conv_px_avx512<4, PS>(rows, x, ps, cin, D, w, bias, coutp, out);
  for (; x < W; ++x) conv_px_avx512<1, PS>(rows, x, ps, cin, D, w, bias, coutp, out);
}

template <int PS>
inline void conv_row_avx512_ps(const float* const rows[3], int64_t ps, int64_t cin, int64_t d, const float* w,
                               const float* bias, int64_t coutp, float* out, int64_t W) {
  int64_t x = 0;
  for (; x + 16 <= W; x += 16) conv_px_avx512<16, PS>(rows, x, ps, cin, d, w, bias, coutp, out);
  for (; x + 8 <= W; x += 8) conv_px_avx512<8, PS>(rows, x, ps, cin, d, w, bias, coutp, out);
  for (; x + 4 <= W; x += 4) conv_px_avx512<4, PS>(rows, x, ps, cin, d, w, bias, coutp, out);
  for (; x < W; ++x) conv_px_avx512<1, PS>(rows, x, ps, cin, d, w, bias, coutp, out);
}

template <int CI>
inline void wgrad_px_avx512(const float* ip, int64_t ps, const float* g, int64_t coutp, int64_t cb,
                            float* gw, int64_t W) {
  __m512 acc[CI];
#pragma GCC unroll 16
  for (int c = 0; c < CI; ++c) acc[c] = _mm512_setzero_ps();
  for (int64_t x = 0; x < W; ++x) {
    const __m512 gv = _mm512_loadu_ps(g + x * coutp + cb);
    const float* px = ip + x * ps;
#pragma GCC unroll 16
    for (int c = 0; c < CI; ++c) acc[c] = _mm512_fmadd_ps(_mm512_set1_ps(px[c]), gv, acc[c]);
  }
#pragma GCC unroll 16
  for (int c = 0; c < CI; ++c) {
    float* dst = gw + c * coutp + cb;
    _mm512_storeu_ps(dst, _mm512_add_ps(_mm512_loadu_ps(dst), acc[c]));
  }
}

// Weight gradient of the three taps kx = 0, 1, 2 of one tap row ky for 8 input
// channels: input pixel q (q in [0, W), the only non-zero ones) meets the
// gradient at q + d (kx = 0), q (kx = 1) and q - d (kx = 2); those may lie in
// the zero padding columns of the gradient row (at least d wide). One broadcast
// serves three FMAs: 11 loads per 24 FMAs instead of 17 per 16.
inline void wgrad_ky_ci8_avx512(const float* ip, int64_t ps, const float* g, int64_t coutp, int64_t cb, int64_t d,
                                int64_t cin, float* gw_ky, int64_t W) {
  __m512 acc[3][8];
#pragma GCC unroll 8
  for (int c = 0; c < 8; ++c) acc[0][c] = acc[1][c] = acc[2][c] = _mm512_setzero_ps();
  const int64_t dg = d * coutp;
  for (int64_t q = 0; q < W; ++q) {
    const float* gq = g + q * coutp + cb;
    const __m512 g0 = _mm512_loadu_ps(gq + dg), g1 = _mm512_loadu_ps(gq), g2 = _mm512_loadu_ps(gq - dg);
    const float* px = ip + q * ps;
#pragma GCC unroll 8
    for (int c = 0; c < 8; ++c) {
      const __m512 b = _mm512_set1_ps(px[c]);
      acc[0][c] = _mm512_fmadd_ps(b, g0, acc[0][c]);
      acc[1][c] = _mm512_fmadd_ps(b, g1, acc[1][c]);
      acc[2][c] = _mm512_fmadd_ps(b, g2, acc[2][c]);
    }
  }
  for (int kx = 0; kx < 3; ++kx)
#pragma GCC unroll 8
    for (int c = 0; c < 8; ++c) {
      float* dst = gw_ky + (kx * cin + c) * coutp + cb;
      _mm512_storeu_ps(dst, _mm512_add_ps(_mm512_loadu_ps(dst), acc[kx][c]));
    }
}

// Bias gradient of one row: gb[co] += sum_x g[x][co].
inline void wgrad_bias_row_avx512(const float* g, int64_t coutp, float* gb, int64_t W) {
  for (int64_t cb = 0; cb < coutp; cb += 16) {
    __m512 s = _mm512_setzero_ps();
    for (int64_t x = 0; x < W; ++x) s = _mm512_add_ps(s, _mm512_loadu_ps(g + x * coutp + cb));
    _mm512_storeu_ps(gb + cb, _mm512_add_ps(_mm512_loadu_ps(gb + cb), s));
  }
}

}  // namespace conv3x3
}  // namespace derain
#endif  // __AVX512F__
