// The row drivers of the Winograd layers (float32, AVX-512): the cache of transformed input rows a
// layer keeps, and one output row, or a pair of rows, of a convolution or of a weight gradient, with
// the kernel picked by dispatch.h.
#pragma once

#include <algorithm>
#include <climits>
#include <cstdint>
#include <vector>

#include "../common/fastmod.h"
#include "../common/simd.h"
#include "dispatch.h"
#include "kernels_avx512_wgrad.h"
#include "kernels_avx512_winograd.h"
#include "winograd_transforms.h"

#if defined(__AVX512F__)
namespace derain {
namespace conv3x3 {

// Transformed input rows of one Winograd layer (convolution or weight gradient), each computed once
// and kept while the output rows y - d, y, y + d that read it are computed (2d + 1 slots, 3d + 1 for
// row pairs; tagged with the row). Layout of a row: tile-major [k][i][ci] for the convolutions
// (winograd_tiles), point-major [i][k][ci] for the weight gradients (wino_accumulate_avx512). Rows
// start on a cache line.
struct WinoRowCache {
  int64_t slots = 0, rowlen = 0, nt = 0, tstride = 0, pstride = 0;
  FastMod modslots;
  std::vector<int64_t> tag;
  std::vector<float> data;
  float* base = nullptr;
  void init(int64_t W, int64_t d, int64_t cin, bool point_major, int64_t nslots = 0) {
    nt = winograd_tiles_in_row(W, d);
    slots = nslots > 0 ? nslots : 2 * d + 1;
    modslots = FastMod(slots);
    rowlen = (nt * 6 * cin + 15) / 16 * 16;
    tstride = point_major ? cin : 6 * cin;
    pstride = point_major ? nt * cin : cin;
    tag.assign(slots, INT64_MIN);
    data.assign(slots * rowlen + 16, 0.f);
    base = align_floats64(data.data());
  }
  // V of input row y (row: its pixel 0).
  const float* get(int64_t y, const float* row, int64_t ps, int64_t d, int64_t cin) {
    const int64_t s = static_cast<int64_t>(modslots(y + slots));  // rows from -d on: y + slots >= 0
    float* v = base + s * rowlen;
    if (tag[s] != y) {
      tag[s] = y;
      winograd_input_row_any(row, ps, cin, d, nt, v, tstride, pstride);
    }
    return v;
  }
};

// conv_row for a layer with transformed weights wg (winograd_weights of w; w serves the direct pixels).
// rows[ky] is input row y + (ky - 1) d; the cache supplies (or computes) their transforms.
inline void conv_row_winograd(const float* const rows[3], int64_t y, WinoRowCache& cache, int64_t ps, int64_t cin,
                              int64_t d, const float* wg, const float* w, const float* bias, int64_t coutp, float* out,
                              int64_t W) {
  const float* v[3];
  for (int ky = 0; ky < 3; ++ky) v[ky] = cache.get(y + (ky - 1) * d, rows[ky], ps, d, cin);
  winograd_dispatch(cin, d, [&](auto s) __attribute__((always_inline)) {
    using S = decltype(s);
    conv_row_winograd_d<S::d, S::a>(rows, v, ps, wg, w, bias, coutp, out, W);
  });
}

// Output rows y (out0) and y + d (out1) of a Winograd layer with 16 output channels; rows[r] is input
// row y + (r - 1) d.
inline void conv_rows_pair_winograd(const float* const rows[4], int64_t y, WinoRowCache& cache, int64_t ps,
                                    int64_t cin, int64_t d, const float* wg2, const float* w, const float* bias,
                                    float* out0, float* out1, int64_t W) {
  const float* v[4];
  for (int r = 0; r < 4; ++r) v[r] = cache.get(y + (r - 1) * d, rows[r], ps, d, cin);
  winograd_dispatch(cin, d, [&](auto s) __attribute__((always_inline)) {
    using S = decltype(s);
    conv_rows_pair_winograd_d<S::d, S::a>(rows, v, ps, wg2, w, bias, out0, out1, W);
  });
}

// Two rows y and y + d of the Winograd weight gradient at once (row pairs): with the transformed
// input rows a_k = V(y + k d), k = -1..2, and gradient rows g_0 = Z(y), g_1 = Z(y + d), the three tap
// rows need P[ky] += a_{ky-1} g_0 + a_{ky} g_1 (6 point products per tile point). F(2,3) along y
// (points 0, 1, -1, infinity; transposed) gets them from 4:
//   Q_0 += (a_-1 - a_1) g_0,  Q_1 += (a_0 + a_1)(g_0 + g_1),  Q_2 += (a_1 - a_0)(g_0 - g_1),
//   Q_3 += (a_2 - a_0) g_1,
// with P[0] = Q_0 + (Q_1 + Q_2) / 2, P[1] = (Q_1 - Q_2) / 2, P[2] = (Q_1 + Q_2) / 2 + Q_3 applied once
// to the band sums (wino_fold_row_pairs). gwq: Q accumulators [4][6][coutp][cin] (transposed against
// P: wino_accumulate_pair_avx512). The gradient sides g_0 +- g_1 are stored one point at a time right
// before that point's products (a pass over all six points up front: the step 0.7-0.8 % slower), the
// input sides formed per tile inside the products. rows[k]: input rows y + (k - 1) d (zero rows
// outside the image; their transforms are zeros), g0, g1: gradient rows.
inline void wgrad_rows_pair_winograd_avx512(const float* const rows[4], int64_t y, int64_t ps, int64_t cin, int64_t d,
                                            const float* g0, const float* g1, int64_t coutp, float* gwq, float* gb,
                                            std::vector<float>& zbuf, WinoRowCache& vcache) {
  const int64_t nt = vcache.nt;
  const int64_t dz = nt * coutp;
  const int64_t need = 14 * dz + 64;
  if (static_cast<int64_t>(zbuf.size()) < need) zbuf.resize(need);
  float* Z0 = align_floats64(zbuf.data());
  float* Z1 = Z0 + 6 * dz;
  float* ZP = Z1 + 6 * dz;  // Z0 + Z1 of one point
  float* ZM = ZP + dz;      // Z0 - Z1 of one point
  wino_transform_grad_any(g0, coutp, d, nt, Z0, dz);
  wino_transform_grad_any(g1, coutp, d, nt, Z1, dz);
  if (gb) {
    wino_bias_grad_avx512(Z0 + dz, coutp, nt, gb);
    wino_bias_grad_avx512(Z1 + dz, coutp, nt, gb);
  }
  const float* v[4];
  for (int k = 0; k < 4; ++k) v[k] = vcache.get(y + (k - 1) * d, rows[k], ps, d, cin);
  const int64_t dv = vcache.pstride;
  const int64_t qj = 6 * cin * coutp;  // from Q_j to Q_j+1
  // tiles in chunks of about 32 (each chunk's products summed in registers, then added to Q)
  const int64_t nchunks = std::max<int64_t>(1, nt / 32), csize = (nt + nchunks - 1) / nchunks;
  for (int i = 0; i < 6; ++i) {
    for (int64_t k = 0; k < dz; k += 16) {
      const __m512 z0 = _mm512_load_ps(Z0 + i * dz + k), z1 = _mm512_load_ps(Z1 + i * dz + k);
      _mm512_store_ps(ZP + k, _mm512_add_ps(z0, z1));
      _mm512_store_ps(ZM + k, _mm512_sub_ps(z0, z1));
    }
    for (int64_t t0 = 0; t0 < nt; t0 += csize) {
      const int64_t nc = std::min(csize, nt - t0);
      const int64_t zo = i * dz + t0 * coutp, zc = t0 * coutp, vo = i * dv + t0 * cin;
      const float *am = v[0] + vo, *a0 = v[1] + vo, *a1 = v[2] + vo, *a2 = v[3] + vo;
      for (int64_t cb = 0; cb < coutp; cb += 16)
        for (int64_t ci = 0; ci < cin; ci += 16) {
          float* q = gwq + (i * coutp + cb) * cin + ci;
          wino_accumulate_pair_avx512<true>(am + ci, a1 + ci, cin, Z0 + zo + cb, coutp, nc, q, cin);
          wino_accumulate_pair_avx512<false>(a0 + ci, a1 + ci, cin, ZP + zc + cb, coutp, nc, q + qj, cin);
          wino_accumulate_pair_avx512<true>(a1 + ci, a0 + ci, cin, ZM + zc + cb, coutp, nc, q + 2 * qj, cin);
          wino_accumulate_pair_avx512<true>(a2 + ci, a0 + ci, cin, Z1 + zo + cb, coutp, nc, q + 3 * qj, cin);
        }
    }
  }
}

// One row of the weight gradient with Winograd tiles: gwp ([3][6][cin][coutp])
// gets the point products, gb the bias gradient (from Z_1 = g0 + g1 + g2 + g3,
// the sum of a tile's gradients). The row is covered by W / 4d whole tile groups
// and, when W is not a multiple of 4d, one more group over copies of the last
// pixels padded with zeros: outputs past W have a zero gradient and inputs past
// the row are zeros, so the padded group adds exactly the remaining pixels'
// products (no direct tail, no read past the row's d padding columns).
// row_ids[ky]: image row of rows[ky] (-1: outside the image, a zero row that is
// skipped). Every input row feeds three output rows (as ky = 2, 1, 0), so its
// transform is kept in vcache, a ring of 2d + 1 rows tagged by vtag (the row ids
// one WeightGrad layer sees increase; the three rows of a step differ mod
// 2d + 1). zbuf: the transformed gradient row and the tail copies. Buffers are
// grown here.
inline void wgrad_row_winograd_avx512(const float* const rows[3], const int64_t row_ids[3], int64_t ps, int64_t cin,
                                      int64_t d, const float* g, int64_t coutp, float* gwp, float* gb,
                                      std::vector<float>& zbuf, WinoRowCache& vcache) {
  // tiles cover the row, the last ones past W: the ring rows of g and of the input have 5d zero pixels
  // on the right, so those outputs have zero gradient and those inputs are zeros
  const int64_t ntiles = vcache.nt;
  const int64_t zsize = 6 * ntiles * coutp, dz = ntiles * coutp;
  if (static_cast<int64_t>(zbuf.size()) < zsize + 16) zbuf.resize(zsize + 16);
  float* Z = align_floats64(zbuf.data());
  wino_transform_grad_any(g, coutp, d, ntiles, Z, dz);
  if (gb) wino_bias_grad_avx512(Z + dz, coutp, ntiles, gb);
  const int64_t dv = vcache.pstride;
  for (int ky = 0; ky < 3; ++ky) {
    if (row_ids[ky] < 0) continue;  // zero row: no contribution
    const float* v = vcache.get(row_ids[ky], rows[ky], ps, d, cin);
    for (int i = 0; i < 6; ++i)
      for (int64_t cb = 0; cb < coutp; cb += 16)
        for (int64_t ci = 0; ci < cin; ci += 16)
          wino_accumulate_avx512(v + i * dv + ci, cin, Z + i * dz + cb, coutp, ntiles,
                                 gwp + ((ky * 6 + i) * cin + ci) * coutp + cb, coutp);
  }
}

}  // namespace conv3x3
}  // namespace derain
#endif  // __AVX512F__
