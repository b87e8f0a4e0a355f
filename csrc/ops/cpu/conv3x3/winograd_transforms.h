// The Winograd F(4,3) transforms of the 3x3 convolution engine: the interpolation points, the
// weight transforms (row tiles and row pairs), the input transform of one row (V = B^T u), the output
// transform of one tile (A^T m), the gradient transform of the weight gradients (Z = A g) and the
// conversion of the weight gradients' point sums back to taps. The kernels that multiply the
// transformed values are in kernels_avx512_winograd.h (convolutions) and
// kernels_avx512_wgrad.h (weight gradients); float32 on AVX-512 builds only.
#pragma once

#include <cstdint>
#include <vector>

#include "../common/simd.h"

namespace derain {
namespace conv3x3 {

// Winograd F(4,3) with interpolation points 0, 1, -1, 2, -1/2 (and infinity): 4 outputs of a
// 3-tap correlation from 6 inputs, y = A^T [(G w) . (B^T u)]. Used by the convolutions
// (winograd_tiles) and, transposed, by the weight gradients (gw = G^T [(B^T u) . (A g)]). Float32
// rounding about 1.5x direct summation (2x with the textbook points 0, +-1, +-2).
struct WinoF43 {
  static constexpr float BT[6][6] = {{1, 1.5f, -2, -1.5f, 1, 0},   {0, -1, -2.5f, -0.5f, 1, 0},
                                     {0, 1, 0.5f, -2.5f, 1, 0},    {0, -0.5f, -1, 0.5f, 1, 0},
                                     {0, 2, -1, -2, 1, 0},         {0, 1, 1.5f, -2, -1.5f, 1}};
  static constexpr double G[6][3] = {{1, 0, 0},
                                     {-1.0 / 3, -1.0 / 3, -1.0 / 3},
                                     {1.0 / 3, -1.0 / 3, 1.0 / 3},
                                     {1.0 / 15, 2.0 / 15, 4.0 / 15},
                                     {-16.0 / 15, 8.0 / 15, -4.0 / 15},
                                     {0, 0, 1}};
  static constexpr float AT[4][6] = {
      {1, 1, 1, 1, 1, 0}, {0, 1, -1, 2, -0.5f, 0}, {0, 1, 1, 4, 0.25f, 0}, {0, 1, -1, 8, -0.125f, 1}};
};

#if defined(__AVX512F__)
// sum_j c[j] * u[j] with the coefficients known at compile time (zeros skipped, +-1 as add/sub).
template <int N>
inline __m512 wino_lincomb(const float (&c)[N], const __m512* u) {
  __m512 s = _mm512_setzero_ps();
  bool first = true;
#pragma GCC unroll 6
  for (int j = 0; j < N; ++j) {
    if (c[j] == 0.f) continue;
    if (first) {
      s = c[j] == 1.f ? u[j] : _mm512_mul_ps(_mm512_set1_ps(c[j]), u[j]);
      first = false;
    } else if (c[j] == 1.f) {
      s = _mm512_add_ps(s, u[j]);
    } else if (c[j] == -1.f) {
      s = _mm512_sub_ps(s, u[j]);
    } else {
      s = _mm512_fmadd_ps(_mm512_set1_ps(c[j]), u[j], s);
    }
  }
  return s;
}

// Transformed weights of row pairs (conv_rows_pair_winograd_d: F(2,3) along y on top of F(4,3) along
// x, see kernels_avx512_winograd.h) in the layout [i][ci][j][16] (the four y-points of one (i, ci)
// adjacent), of direct weights w ([ky*3+kx][cin][16]), computed in double from the direct weights:
// first along kx (t = G w per tap row), then along ky.
inline std::vector<float> winograd_pair_weights(const float* w, int64_t cin) {
  static constexpr double G2[4][3] = {{1, 0, 0}, {0.5, 0.5, 0.5}, {0.5, -0.5, 0.5}, {0, 0, 1}};
  std::vector<double> t(3 * 6 * cin * 16);  // [ky][i][ci][16]
  for (int ky = 0; ky < 3; ++ky)
    for (int i = 0; i < 6; ++i)
      for (int64_t ci = 0; ci < cin; ++ci) {
        double* o = t.data() + ((ky * 6 + i) * cin + ci) * 16;
        const float* w0 = w + ((ky * 3) * cin + ci) * 16;
        const float* w1 = w0 + cin * 16;
        const float* w2 = w1 + cin * 16;
        for (int co = 0; co < 16; ++co)
          o[co] = WinoF43::G[i][0] * w0[co] + WinoF43::G[i][1] * w1[co] + WinoF43::G[i][2] * w2[co];
      }
  std::vector<float> out(4 * 6 * cin * 16);
  for (int j = 0; j < 4; ++j)
    for (int i = 0; i < 6; ++i)
      for (int64_t ci = 0; ci < cin; ++ci) {
        const double* t0 = t.data() + ((0 * 6 + i) * cin + ci) * 16;
        const double* t1 = t.data() + ((1 * 6 + i) * cin + ci) * 16;
        const double* t2 = t.data() + ((2 * 6 + i) * cin + ci) * 16;
        float* o = out.data() + ((i * cin + ci) * 4 + j) * 16;
        for (int co = 0; co < 16; ++co)
          o[co] = static_cast<float>(G2[j][0] * t0[co] + G2[j][1] * t1[co] + G2[j][2] * t2[co]);
      }
  return out;
}

// Transformed weights [ky][cb][ci][i][16] (i = 0..5, cb = block of 16 output channels) from
// w [ky*3+kx][cin][coutp]: Wg_i = sum_kx G[i][kx] w_kx. The six vectors of one (ky, cb, ci) are adjacent.
// With 16 output channels the weights of row pairs (winograd_pair_weights) follow, at
// winograd_pair_offset(cin, coutp).
inline int64_t winograd_pair_offset(int64_t cin, int64_t coutp) { return 3 * 6 * cin * coutp; }
inline std::vector<float> winograd_weights(const float* w, int64_t cin, int64_t coutp) {
  std::vector<float> out(3 * 6 * cin * coutp);
  if (coutp == 16) {
    const std::vector<float> pair = winograd_pair_weights(w, cin);
    out.insert(out.end(), pair.begin(), pair.end());
  }
  float* o = out.data();  // written in order: [ky][cb][ci][i][16]
  for (int ky = 0; ky < 3; ++ky)
    for (int64_t cb = 0; cb < coutp; cb += 16)
      for (int64_t ci = 0; ci < cin; ++ci) {
        const float* w0 = w + (ky * 3 * cin + ci) * coutp + cb;
        const float* w1 = w0 + cin * coutp;
        const float* w2 = w1 + cin * coutp;
        for (int i = 0; i < 6; ++i, o += 16)
          for (int c = 0; c < 16; ++c)
            o[c] = static_cast<float>(WinoF43::G[i][0] * w0[c] + WinoF43::G[i][1] * w1[c] + WinoF43::G[i][2] * w2[c]);
      }
  return out;
}

// Tiles of a row of W pixels: every pixel is in one (the last segment of 4d pixels may stick out past
// the row: its extra outputs land in the accumulator row's spare pixels and are never read).
inline int64_t winograd_tiles_in_row(int64_t W, int64_t d) { return (W + 4 * d - 1) / (4 * d) * d; }
inline int64_t winograd_tile_base(int64_t k, int64_t d) { return (k / d) * 4 * d + k % d; }

// V = B^T u of one input row for its nt tiles: point i of tile k at v + k * tstride + i * pstride
// (+ the input channel; cin a multiple of 16). `row` points at pixel 0 (channel offset applied), pixel
// stride ps, with d zero pixels on the left and 5d on the right (a tile reads pixels b - d .. b + 4d).
template <int D = 0, int CIN = 0>
inline void winograd_input_row(const float* row, int64_t ps, int64_t cin_rt, int64_t d_rt, int64_t nt, float* v,
                               int64_t tstride, int64_t pstride) {
  // D, CIN > 0: known at compile time (constant offsets); tile k = g d + r of segment g starts at
  // pixel 4 d g + r (nt is a multiple of d: winograd_tiles_in_row)
  const int64_t d = D > 0 ? D : d_rt, cin = CIN > 0 ? CIN : cin_rt;
  for (int64_t g = 0; g * d < nt; ++g)
    for (int64_t r = 0; r < d; ++r) {
      const float* u = row + (4 * d * g + r - d) * ps;
      float* vk = v + (g * d + r) * tstride;
#pragma GCC unroll 2
      for (int64_t ci = 0; ci < cin; ci += 16) {
        __m512 uu[6];
#pragma GCC unroll 6
        for (int j = 0; j < 6; ++j) uu[j] = _mm512_loadu_ps(u + j * d * ps + ci);
#pragma GCC unroll 6
        for (int i = 0; i < 6; ++i) _mm512_storeu_ps(vk + i * pstride + ci, wino_lincomb(WinoF43::BT[i], uu));
      }
    }
}

// Output transform of one tile: the 4 outputs A^T m (16 output channels) stored `step` floats apart.
// Returns bad + 0 * outputs: NaN iff some output is NaN or infinite.
inline __m512 winograd_store_tile(const __m512* m, float* o, int64_t step, __m512 bad) {
  const __m512 zero = _mm512_setzero_ps();
#pragma GCC unroll 4
  for (int j = 0; j < 4; ++j) {
    const __m512 y = wino_lincomb(WinoF43::AT[j], m);
    bad = _mm512_fmadd_ps(y, zero, bad);
    _mm512_storeu_ps(o + j * step, y);
  }
  return bad;
}

// ---- Winograd F(4,3) weight gradient along the row (float, AVX-512).
// A tile of dilation d and base b has the 4 outputs q = b + d k (k = 0..3) and
// the 6 inputs u_j = in[b + d (j - 1)] (j = 0..5); with V = B^T u (over ci) and
// Z = A g (over co), the tile's contribution to the 3 taps of a tap row is
//   gw[kx] += sum_i G[i][kx] V_i Z_i^T,
// so a row accumulates the 6 point products P[ky][i][ci][co] += V_i[ci] Z_i[co]
// (6 FMAs per 4 pixels instead of 12) and the caller converts P to taps once
// (wino_points_to_taps). Tiles of one row come in groups of 4d consecutive pixels
// (d interleaved tiles); the last group may stick out past the row, where the ring
// rows' 5d zero pixels make its extra products zero (wgrad_row_winograd_avx512).
// B^T, G, A^T: WinoF43 (the points of the convolutions).

// Z[i][t][co] (point i at Z + i * dz) of the gradient row g for the tiles
// t < ntiles (t = group * d + r, base pixel group * 4d + r).
template <int D = 0, int COUTP = 0>  // > 0: known at compile time
inline void wino_transform_grad_avx512(const float* g, int64_t coutp_rt, int64_t d_rt, int64_t ntiles, float* Z,
                                       int64_t dz) {
  const int64_t d = D > 0 ? D : d_rt, coutp = COUTP > 0 ? COUTP : coutp_rt;
  const __m512 two = _mm512_set1_ps(2.f), four = _mm512_set1_ps(4.f);
  const __m512 half = _mm512_set1_ps(0.5f), quarter = _mm512_set1_ps(0.25f);
  for (int64_t t = 0, grp = 0; t < ntiles; grp += 4 * d)
   for (int64_t r = 0; r < d; ++r, ++t) {
    const int64_t base = grp + r;
    for (int64_t cb = 0; cb < coutp; cb += 16) {
      const float* gp = g + base * coutp + cb;
      const __m512 g0 = _mm512_loadu_ps(gp), g1 = _mm512_loadu_ps(gp + d * coutp);
      const __m512 g2 = _mm512_loadu_ps(gp + 2 * d * coutp), g3 = _mm512_loadu_ps(gp + 3 * d * coutp);
      const __m512 s02 = _mm512_add_ps(g0, g2), s13 = _mm512_add_ps(g1, g3);
      const __m512 q02 = _mm512_fmadd_ps(four, g2, g0);                        // g0 + 4 g2
      const __m512 q13 = _mm512_mul_ps(two, _mm512_fmadd_ps(four, g3, g1));    // 2 g1 + 8 g3
      const __m512 h02 = _mm512_fmadd_ps(quarter, g2, g0);                     // g0 + g2 / 4
      const __m512 h13 = _mm512_mul_ps(half, _mm512_fmadd_ps(quarter, g3, g1)); // g1 / 2 + g3 / 8
      float* z = Z + t * coutp + cb;
      _mm512_storeu_ps(z, g0);
      _mm512_storeu_ps(z + dz, _mm512_add_ps(s02, s13));
      _mm512_storeu_ps(z + 2 * dz, _mm512_sub_ps(s02, s13));
      _mm512_storeu_ps(z + 3 * dz, _mm512_add_ps(q02, q13));
      _mm512_storeu_ps(z + 4 * dz, _mm512_sub_ps(h02, h13));
      _mm512_storeu_ps(z + 5 * dz, g3);
    }
  }
}
#endif  // __AVX512F__

// P[ky][i] += sum_j G2[j][ky] Q[j][i] for the row-pair sums Q ([4][6][coutp][cin], right after P's
// [3][6][cin][coutp]; wgrad_rows_pair_winograd_avx512), in double: G2 of F(2,3) (rows 1, (1 1 1)/2,
// (1 -1 1)/2, (0 0 1)).
inline void wino_fold_row_pairs(double* P, int64_t cin, int64_t coutp) {
  const int64_t n = cin * coutp;
  const double* Q = P + 18 * n;
  for (int i = 0; i < 6; ++i) {
    double* p0 = P + (0 * 6 + i) * n;
    double* p1 = P + (1 * 6 + i) * n;
    double* p2 = P + (2 * 6 + i) * n;
    const double* q0 = Q + (0 * 6 + i) * n;
    const double* q1 = Q + (1 * 6 + i) * n;
    const double* q2 = Q + (2 * 6 + i) * n;
    const double* q3 = Q + (3 * 6 + i) * n;
    for (int64_t ci = 0; ci < cin; ++ci)
      for (int64_t co = 0; co < coutp; ++co) {
        const int64_t c = ci * coutp + co, cq = co * cin + ci;
        const double s = 0.5 * (q1[cq] + q2[cq]);
        p0[c] += q0[cq] + s;
        p1[c] += 0.5 * (q1[cq] - q2[cq]);
        p2[c] += s + q3[cq];
      }
  }
}

// gw[ky][kx][c] += sum_i G[i][kx] P[ky][i][c] for point sums P ([3][6][n]) and
// taps gw ([9][n]), in double (G of Winograd F(4,3)).
inline void wino_points_to_taps(const double* P, int64_t n, double* gw) {
  const auto& G = WinoF43::G;
  for (int ky = 0; ky < 3; ++ky)
    for (int kx = 0; kx < 3; ++kx) {
      double* dst = gw + (ky * 3 + kx) * n;
      for (int i = 0; i < 6; ++i) {
        const double gik = G[i][kx];
        if (gik == 0) continue;
        const double* src = P + (ky * 6 + i) * n;
        for (int64_t c = 0; c < n; ++c) dst[c] += gik * src[c];
      }
    }
}

}  // namespace conv3x3
}  // namespace derain
