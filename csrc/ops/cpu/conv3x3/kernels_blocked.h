// Portable micro-kernels of the 3x3 convolution engine: blocked loops the compiler vectorises for
// whatever the build targets (AVX2, SSE, NEON; AVX-512 for double). They serve double everywhere and
// float on builds without AVX-512 (dispatch.h).
#pragma once

#include <cmath>
#include <cstdint>

namespace derain {
namespace conv3x3 {

// a * b + c, fused where the target has FMA (never a libm call)
template <typename T>
inline T madd(T a, T b, T c) {
#if defined(__FMA__)
  return std::fma(a, b, c);
#else
  return a * b + c;
#endif
}

// conv_row and wgrad_row as defined in dispatch.h. Portable kernels: P pixels x 16 output channels
// of accumulators in a local array the compiler keeps in vector registers (AVX2: 2 ymm per pixel;
// SSE/NEON: 4).
template <typename T, int P>
inline void conv_px_blocked(const T* const rows[3], int64_t x0, int64_t ps, int64_t cin, int64_t d, const T* w,
                            const T* bias, int64_t coutp, T* out) {
  for (int64_t cb = 0; cb < coutp; cb += 16) {
    T acc[P][16];
    for (int p = 0; p < P; ++p)
      for (int co = 0; co < 16; ++co) acc[p][co] = bias[cb + co];
    for (int t = 0; t < 9; ++t) {
      const T* ip = rows[t / 3] + (x0 + (t % 3 - 1) * d) * ps;
      const T* wp = w + t * cin * coutp + cb;
      for (int64_t ci = 0; ci < cin; ++ci) {
        const T* wv = wp + ci * coutp;
        for (int p = 0; p < P; ++p) {
          const T v = ip[p * ps + ci];
#pragma omp simd
          for (int co = 0; co < 16; ++co) acc[p][co] = madd(v, wv[co], acc[p][co]);
        }
      }
    }
    for (int p = 0; p < P; ++p)
      for (int co = 0; co < 16; ++co) out[(x0 + p) * coutp + cb + co] = acc[p][co];
  }
}

template <typename T, int CI>
inline void wgrad_px_blocked(const T* ip, int64_t ps, const T* g, int64_t coutp, int64_t cb, T* gw, int64_t W) {
  T acc[CI][16] = {};
  for (int64_t x = 0; x < W; ++x) {
    const T* gv = g + x * coutp + cb;
    const T* px = ip + x * ps;
    for (int c = 0; c < CI; ++c) {
      const T v = px[c];
#pragma omp simd
      for (int co = 0; co < 16; ++co) acc[c][co] = madd(v, gv[co], acc[c][co]);
    }
  }
  for (int c = 0; c < CI; ++c)
    for (int co = 0; co < 16; ++co) gw[c * coutp + cb + co] += acc[c][co];
}

template <typename T>
inline void conv_row_blocked(const T* const rows[3], int64_t ps, int64_t cin, int64_t d, const T* w,
                             const T* bias, int64_t coutp, T* out, int64_t W) {
  int64_t x = 0;
  for (; x + 4 <= W; x += 4) conv_px_blocked<T, 4>(rows, x, ps, cin, d, w, bias, coutp, out);
  for (; x < W; ++x) conv_px_blocked<T, 1>(rows, x, ps, cin, d, w, bias, coutp, out);
}

template <typename T>
inline void wgrad_row_blocked(const T* const rows[3], int64_t ps, int64_t cin, int64_t d, const T* g,
                              int64_t coutp, T* gw, T* gb, int64_t W) {
  for (int t = 0; t < 9; ++t) {
    const T* ip = rows[t / 3] + (t % 3 - 1) * d * ps;
    for (int64_t cb = 0; cb < coutp; cb += 16) {
      int64_t ci = 0;
      for (; ci + 4 <= cin; ci += 4) wgrad_px_blocked<T, 4>(ip + ci, ps, g, coutp, cb, gw + (t * cin + ci) * coutp, W);
      for (; ci < cin; ++ci) wgrad_px_blocked<T, 1>(ip + ci, ps, g, coutp, cb, gw + (t * cin + ci) * coutp, W);
    }
  }
  if (gb) {
    for (int64_t x = 0; x < W; ++x) {
      const T* gx = g + x * coutp;
#pragma omp simd
      for (int64_t co = 0; co < coutp; ++co) gb[co] += gx[co];
    }
  }
}

}  // namespace conv3x3
}  // namespace derain
