// Which kernel computes a row of a 3x3 convolution or of its weight gradient: the engine's one
// dispatch table, from dtype, instruction set, channel counts and dilation to a kernel. The pipeline
// asks the predicates below when it sets up a layer and calls the entry points; no other file
// chooses a kernel.
//
//   dtype, ISA       convolution row                               weight-gradient row
//   ---------------  --------------------------------------------  -----------------------------------------
//   float, AVX-512   Winograd F(4,3) tiles where                   Winograd F(4,3) tiles where
//                    conv_winograd_applies (WinogradShapes) and    wgrad_winograd_applies (cin a multiple of
//                    the layers' transformed rows fit the cache    16, WgradWinogradShapes) and the rows fit
//                    (winograd_fits); two rows at once where       (winograd_fits); two rows at once where
//                    conv_pairs_apply (16 output channels).        wgrad_pairs_apply.
//                    Else direct (conv_row_avx512): one broadcast  Else direct (wgrad_row_avx512): one
//                    per row of taps for ReuseShapes (pixel        broadcast per 3 taps for blocks of 8 input
//                    stride, dilation), one per tap otherwise.     channels, the rest per tap.
//   float without    blocked `omp simd` loops (conv_row_blocked)   blocked `omp simd` loops
//   AVX-512; double                                                (wgrad_row_blocked)
//
// Kernels specialised for compile-time shapes run for the shapes the lists below name (the layers of
// the block and the network); other shapes run the kernels' run-time forms.
#pragma once

#include <cstdint>
#include <type_traits>
#include <utility>

#include "../../../config.h"
#include "../common/simd.h"
#include "kernels_avx512_direct.h"
#include "kernels_blocked.h"
#include "winograd_transforms.h"

namespace derain {
namespace conv3x3 {

// ---------------------------------------------------------------- shape lists
// A shape (a, d): a channel count or a pixel stride, and a dilation; 0 matches any value (the
// kernel then takes it at run time).
template <int A, int D>
struct Shape {
  static constexpr int a = A, d = D;
};
template <class... S>
struct Shapes {};

// Calls f(S()) for the first shape S of the list that matches (a, d) and returns true; false when
// none does. Forced inline, as are the lambdas the entry points below pass to it: a caller compiles
// to a chain of compares and direct kernel calls, and the compiler weighs inlining those kernels
// exactly as if the chain were written out by hand.
template <class F>
DERAIN_ALWAYS_INLINE bool with_shape(Shapes<>, int64_t, int64_t, F&&) {
  return false;
}
template <class S, class... Rest, class F>
DERAIN_ALWAYS_INLINE bool with_shape(Shapes<S, Rest...>, int64_t a, int64_t d, F&& f) {
  if ((S::a == 0 || a == S::a) && (S::d == 0 || d == S::d)) {
    f(S());
    return true;
  }
  return with_shape(Shapes<Rest...>(), a, d, std::forward<F>(f));
}

// Winograd convolutions, and the input transforms of every Winograd layer: (input channels,
// dilation). Every Winograd layer of the block and the network; with d and cin at run time the
// input transform divided by d per tile and kept its addresses in spilled registers (the step 2.5 %
// slower).
using WinogradShapes = Shapes<Shape<16, 1>, Shape<16, 2>, Shape<16, 3>, Shape<32, 1>, Shape<32, 2>, Shape<32, 3>>;

// Winograd weight gradients: (input channels, a multiple of 16; dilation).
using WgradWinogradShapes = Shapes<Shape<0, 1>, Shape<0, 2>, Shape<0, 3>>;

// Gradient transforms of the Winograd weight gradients: (output channels, dilation) (the backward
// 2.7 % faster than with them at run time).
using GradTransformShapes = Shapes<Shape<16, 1>, Shape<16, 2>, Shape<16, 3>>;

// Direct AVX-512 convolutions broadcasting each input value once per row of taps
// (conv_px16_avx512_d): (input pixel stride, dilation); 0: stride at run time.
using ReuseShapes =
    Shapes<Shape<16, 1>, Shape<16, 2>, Shape<16, 3>, Shape<32, 1>, Shape<32, 3>, Shape<0, 1>, Shape<0, 3>>;

// Direct AVX-512 convolutions broadcasting each input value once per tap (conv_px_avx512): (input
// pixel stride, any dilation).
using PlainShapes = Shapes<Shape<16, 0>, Shape<32, 0>, Shape<0, 0>>;

// ---------------------------------------------------------------- which kernel
// Whether a convolution with cin input channels and dilation d runs as Winograd F(4,3) tiles (else
// the direct kernels do): float on an AVX-512 build, a shape of WinogradShapes, unless
// config conv_winograd=False.
template <typename T>
inline bool conv_winograd_applies(int64_t cin, int64_t d) {
#if defined(__AVX512F__)
  if constexpr (std::is_same<T, float>::value)
    return config::conv_winograd() && with_shape(WinogradShapes(), cin, d, [](auto) {});
#endif
  (void)cin, (void)d;
  return false;
}

// Whether a Winograd convolution computes its rows in pairs (y, y + d; F(2,3) along y on top of
// F(4,3) along x, conv_rows_pair_winograd): 16 output channels, unless config conv_pairs=False.
inline bool conv_pairs_apply(int64_t coutp) { return config::conv_pairs() && coutp == 16; }

// Whether the weight gradient of a layer with cin input channels and dilation d runs as Winograd
// F(4,3) tiles (wgrad_row_winograd_avx512): float on an AVX-512 build, cin a multiple of 16, a
// dilation of WgradWinogradShapes, unless config wgrad_winograd=False.
template <typename T>
inline bool wgrad_winograd_applies(int64_t cin, int64_t d) {
  if (!config::wgrad_winograd()) return false;
#if defined(__AVX512F__)
  if constexpr (std::is_same<T, float>::value)
    return cin > 0 && cin % 16 == 0 && with_shape(WgradWinogradShapes(), cin, d, [](auto) {});
#endif
  (void)cin, (void)d;
  return false;
}

// Whether a Winograd weight gradient accumulates rows in pairs (F(2,3) along y,
// wgrad_rows_pair_winograd_avx512): where the caller gave the pairs' accumulators, unless
// config wgrad_pairs=False.
inline bool wgrad_pairs_apply(bool have_pair_sums) { return have_pair_sums && config::wgrad_pairs(); }

// Bytes of transformed input rows one Winograd layer keeps (convolution or weight gradient: 2d + 1
// rows of ceil(W / 4d) * d tiles x 6 points x cin floats). Convolutions computing row pairs keep
// 3d + 1 rows (d more); the budget below was measured with 2d + 1 rows and is kept as it was.
inline int64_t winograd_cache_bytes(int64_t W, int64_t d, int64_t cin) {
  return (2 * d + 1) * ((W + 4 * d - 1) / (4 * d) * d) * 6 * cin * static_cast<int64_t>(sizeof(float));
}

// Whether the Winograd layers of one pipeline may be used: their transformed rows must stay in the
// caches between the three output rows that read each of them. Measured on the project machine (two
// threads, two pipelines at once): the fused network (~15 Winograd layers) is faster with Winograd at
// W = 512 (4.6 MB of transformed rows) and 1.3x slower at W = 768 (6.9 MB); the block's backward is
// faster at W = 2048 (4.5 MB) and 1.3x slower at W = 4096 (9 MB). Beyond the budget the direct
// kernels run (same results up to float32 round-off).
constexpr int64_t kWinogradCacheBudget = int64_t(5) << 20;
inline bool winograd_fits(int64_t cache_bytes) { return cache_bytes <= kWinogradCacheBudget; }

// ---------------------------------------------------------------- entry points
#if defined(__AVX512F__)
// conv_row (below) of float on AVX-512: the direct kernels by (pixel stride, dilation).
inline void conv_row_avx512(const float* const rows[3], int64_t ps, int64_t cin, int64_t d, const float* w,
                            const float* bias, int64_t coutp, float* out, int64_t W) {
  if (with_shape(ReuseShapes(), ps, d, [&](auto s) __attribute__((always_inline)) {
        using S = decltype(s);
        conv_row_avx512_d<S::a, S::d>(rows, ps, cin, w, bias, coutp, out, W);
      }))
    return;
  with_shape(PlainShapes(), ps, d, [&](auto s) __attribute__((always_inline)) {
    conv_row_avx512_ps<decltype(s)::a>(rows, ps, cin, d, w, bias, coutp, out, W);
  });
}

// wgrad_row (below) of float on AVX-512: blocks of 8 input channels x 3 taps per broadcast, the
// remaining channels per tap.
inline void wgrad_row_avx512(const float* const rows[3], int64_t ps, int64_t cin, int64_t d, const float* g,
                             int64_t coutp, float* gw, float* gb, int64_t W) {
  const int64_t cin8 = cin / 8 * 8;
  if (cin8 > 0) {
    for (int ky = 0; ky < 3; ++ky)
      for (int64_t cb = 0; cb < coutp; cb += 16)
        for (int64_t ci = 0; ci < cin8; ci += 8)
          wgrad_ky_ci8_avx512(rows[ky] + ci, ps, g, coutp, cb, d, cin, gw + (ky * 3 * cin + ci) * coutp, W);
  }
  for (int t = 0; t < 9 && cin8 < cin; ++t) {
    const float* ip = rows[t / 3] + (t % 3 - 1) * d * ps;
    for (int64_t cb = 0; cb < coutp; cb += 16) {
      int64_t ci = cin8;
      for (; ci + 16 <= cin; ci += 16) wgrad_px_avx512<16>(ip + ci, ps, g, coutp, cb, gw + (t * cin + ci) * coutp, W);
      for (; ci + 4 <= cin; ci += 4) wgrad_px_avx512<4>(ip + ci, ps, g, coutp, cb, gw + (t * cin + ci) * coutp, W);
      for (; ci < cin; ++ci) wgrad_px_avx512<1>(ip + ci, ps, g, coutp, cb, gw + (t * cin + ci) * coutp, W);
    }
  }
  if (gb) wgrad_bias_row_avx512(g, coutp, gb, W);
}
#endif  // __AVX512F__

// conv_row: out[x][co] = bias[co] + sum_{ky,kx,ci} rows[ky][(x + (kx-1) d) * ps + ci] * w[ky*3+kx][ci][co]
// for x in [0, W), co in [0, coutp). rows[ky] points at pixel 0 of an input row
// whose pixels are ps elements apart, with at least d readable zero pixels on
// both sides; w is [9][cin][coutp]. wgrad_row: gw[t][ci][co] += sum_x
// rows[t/3][(x + (t%3-1) d) * ps + ci] * g[x][co] and gb[co] += sum_x g[x][co]
// (accumulated in T per band of rows; the bands are summed in double by the
// caller). coutp is always a multiple of 16 (padded_channels).
template <typename T>
inline void conv_row(const T* const rows[3], int64_t ps, int64_t cin, int64_t d, const T* w, const T* bias,
                     int64_t coutp, T* out, int64_t W) {
#if defined(__AVX512F__)
  if constexpr (std::is_same<T, float>::value) {
    return conv_row_avx512(rows, ps, cin, d, w, bias, coutp, out, W);
  }
#endif
  conv_row_blocked<T>(rows, ps, cin, d, w, bias, coutp, out, W);
}

template <typename T>
inline void wgrad_row(const T* const rows[3], int64_t ps, int64_t cin, int64_t d, const T* g, int64_t coutp,
                      T* gw, T* gb, int64_t W) {
#if defined(__AVX512F__)
  if constexpr (std::is_same<T, float>::value) {
    return wgrad_row_avx512(rows, ps, cin, d, g, coutp, gw, gb, W);
  }
#endif
  wgrad_row_blocked<T>(rows, ps, cin, d, g, coutp, gw, gb, W);
}

#if defined(__AVX512F__)
// winograd_input_row for a row of a Winograd layer, with d and cin known at compile time for
// WinogradShapes.
inline void winograd_input_row_any(const float* row, int64_t ps, int64_t cin, int64_t d, int64_t nt, float* v,
                                   int64_t tstride, int64_t pstride) {
  if (with_shape(WinogradShapes(), cin, d, [&](auto s) __attribute__((always_inline)) {
        using S = decltype(s);
        winograd_input_row<S::d, S::a>(row, ps, cin, d, nt, v, tstride, pstride);
      }))
    return;
  winograd_input_row(row, ps, cin, d, nt, v, tstride, pstride);
}

// wino_transform_grad_avx512 with d and the channel count known at compile time for
// GradTransformShapes.
inline void wino_transform_grad_any(const float* g, int64_t coutp, int64_t d, int64_t ntiles, float* Z, int64_t dz) {
  if (with_shape(GradTransformShapes(), coutp, d, [&](auto s) __attribute__((always_inline)) {
        using S = decltype(s);
        wino_transform_grad_avx512<S::d, S::a>(g, coutp, d, ntiles, Z, dz);
      }))
    return;
  wino_transform_grad_avx512(g, coutp, d, ntiles, Z, dz);
}

// Calls f(S) with the Shape S (input channels S::a, dilation S::d) of a Winograd convolution
// (conv_winograd_applies holds).
template <typename F>
DERAIN_ALWAYS_INLINE void winograd_dispatch(int64_t cin, int64_t d, F&& f) {
  with_shape(WinogradShapes(), cin, d, std::forward<F>(f));
}
#endif  // __AVX512F__

}  // namespace conv3x3
}  // namespace derain
