// AVX-512 micro-kernels of the Winograd F(4,3) convolutions, float32: groups of tiles of one output
// row (winograd_tiles, winograd_tiles4_mix) and of two output rows at once (row pairs:
// conv_rows_pair_winograd_d). Their inputs are transformed rows (winograd_input_row, kept by
// WinoRowCache in winograd_rows.h); tiles whose outputs are not finite are recomputed by the direct
// kernel (conv_px_avx512).
//
// Winograd F(4,3) along the row: 4 outputs of one tap row from 6 inputs
// with 6 multiplies instead of 12. With dilation D a tile is 4 outputs D
// pixels apart: tile k has base b = (k / D) * 4D + k % D, outputs b + D j
// (j = 0..3) and inputs u_j = in[b + D (j-1)] (j = 0..5), so the tiles of a
// row cover its first (W / 4D) * 4D pixels; the rest use the direct kernel.
// Each input row is transformed once, V = B^T u (vectors over ci), and kept
// while the three output rows that use it are computed (WinoRowCache); an
// output row accumulates M_i = sum_{ky, ci} V_i[ci] * Wg[ky][i][ci] (vectors
// over co) and stores A^T M + bias. Points 0, 1, -1, 2, -1/2 (and infinity):
// the rounding error is about 1.5x that of direct summation (2x with the
// textbook 0, +-1, +-2). Tiles whose outputs are not finite (a NaN or an
// infinity in the input, or overflow) are recomputed by the direct kernel, so
// NaN and infinity land exactly where direct convolution puts them.
#pragma once

#include <cstdint>

#include "../common/simd.h"
#include "kernels_avx512_direct.h"
#include "winograd_transforms.h"

#if defined(__AVX512F__)
namespace derain {
namespace conv3x3 {

// Output pixels of T consecutive tiles starting at tile k0, all output channels (the last 1-3 tiles
// of a row; groups of 4 go through winograd_tiles4_mix). Returns false if any output is not finite
// (the caller recomputes those tiles directly).
template <int D, int CIN, int T>
inline bool winograd_tiles(const float* const v[3], int64_t k0, const float* wg, const float* bias, int64_t coutp,
                           float* out) {
  __m512 bad = _mm512_setzero_ps();
  for (int64_t cb = 0; cb < coutp; cb += 16) {
    __m512 acc[T][6];
    const __m512 b = _mm512_loadu_ps(bias + cb);
#pragma GCC unroll 4
    for (int t = 0; t < T; ++t)
#pragma GCC unroll 6
      for (int i = 0; i < 6; ++i) acc[t][i] = i == 1 ? b : _mm512_setzero_ps();  // A^T (0, b, 0, 0, 0, 0) = b
    for (int ky = 0; ky < 3; ++ky) {
      const float* vk = v[ky] + k0 * 6 * CIN;
      const float* wk = wg + (ky * (coutp / 16) + cb / 16) * CIN * 6 * 16;
      for (int ci = 0; ci < CIN; ++ci) {
#pragma GCC unroll 6
        for (int i = 0; i < 6; ++i) {
          __m512 w = _mm512_loadu_ps(wk + (ci * 6 + i) * 16);
          asm("" : "+v"(w));  // keep w in a register: GCC would otherwise reload it for every FMA
#pragma GCC unroll 4
          for (int t = 0; t < T; ++t)
            acc[t][i] = _mm512_fmadd_ps(_mm512_set1_ps(vk[(t * 6 + i) * CIN + ci]), w, acc[t][i]);
        }
      }
    }
#pragma GCC unroll 4
    for (int t = 0; t < T; ++t) {
      bad = winograd_store_tile(acc[t], out + winograd_tile_base(k0 + t, D) * coutp + cb, D * coutp, bad);
    }
  }
  return _mm512_cmp_ps_mask(bad, bad, _CMP_UNORD_Q) == 0;
}

// Four tiles, two Winograd points per pass: tiles 0, 1 broadcast their transformed inputs from
// memory, tiles 2, 3 split one vector load of 16 input channels in registers (vshuff32x4 picks
// the 128-bit lane, vpermilps the element): 0.75 loads and 0.6 shuffles per FMA instead of 1.25
// loads (the loop winograd_tiles runs is bound by loads).
// (GCC 12 warns about the undefined pass-through operand inside the shuffle intrinsics: a false
// positive, as for wino_accumulate_avx512.)
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
template <int D, int CIN>
inline bool winograd_tiles4_mix(const float* const v[3], int64_t k0, const float* wg, const float* bias,
                                int64_t coutp, float* out) {
  constexpr int T = 4;
  __m512 bad = _mm512_setzero_ps();
  const __m512 zero = _mm512_setzero_ps();
  alignas(64) float mbuf[T][6][16];
  for (int64_t cb = 0; cb < coutp; cb += 16) {
    const __m512 b = _mm512_loadu_ps(bias + cb);
#pragma GCC unroll 3
    for (int ip = 0; ip < 3; ++ip) {
      const int i0 = 2 * ip, i1 = 2 * ip + 1;
      __m512 a00 = zero, a01 = ip == 0 ? b : zero, a10 = zero, a11 = ip == 0 ? b : zero;  // A^T(0,b,0,0,0,0) = b
      __m512 a20 = zero, a21 = ip == 0 ? b : zero, a30 = zero, a31 = ip == 0 ? b : zero;
#pragma GCC unroll 1
      for (int ky = 0; ky < 3; ++ky) {
        const float* vk = v[ky] + k0 * 6 * CIN;
        const float* wk = wg + (ky * (coutp / 16) + cb / 16) * CIN * 6 * 16;
#pragma GCC unroll 2
        for (int c16 = 0; c16 < CIN; c16 += 16) {
          const __m512 r20 = _mm512_loadu_ps(vk + (2 * 6 + i0) * CIN + c16);
          const __m512 r21 = _mm512_loadu_ps(vk + (2 * 6 + i1) * CIN + c16);
          const __m512 r30 = _mm512_loadu_ps(vk + (3 * 6 + i0) * CIN + c16);
          const __m512 r31 = _mm512_loadu_ps(vk + (3 * 6 + i1) * CIN + c16);
#pragma GCC unroll 4
          for (int q = 0; q < 4; ++q) {
            const __m512 q20 = _mm512_shuffle_f32x4(r20, r20, q * 0x55);
            const __m512 q21 = _mm512_shuffle_f32x4(r21, r21, q * 0x55);
            const __m512 q30 = _mm512_shuffle_f32x4(r30, r30, q * 0x55);
            const __m512 q31 = _mm512_shuffle_f32x4(r31, r31, q * 0x55);
#pragma GCC unroll 4
            for (int c = 0; c < 4; ++c) {
              const int ci = c16 + 4 * q + c;
              __m512 w0 = _mm512_loadu_ps(wk + (ci * 6 + i0) * 16);
              __m512 w1 = _mm512_loadu_ps(wk + (ci * 6 + i1) * 16);
              asm("" : "+v"(w0));
              asm("" : "+v"(w1));
              a00 = _mm512_fmadd_ps(_mm512_set1_ps(vk[(0 * 6 + i0) * CIN + ci]), w0, a00);
              a01 = _mm512_fmadd_ps(_mm512_set1_ps(vk[(0 * 6 + i1) * CIN + ci]), w1, a01);
              a10 = _mm512_fmadd_ps(_mm512_set1_ps(vk[(1 * 6 + i0) * CIN + ci]), w0, a10);
              a11 = _mm512_fmadd_ps(_mm512_set1_ps(vk[(1 * 6 + i1) * CIN + ci]), w1, a11);
              a20 = _mm512_fmadd_ps(_mm512_permute_ps(q20, c * 0x55), w0, a20);
              a21 = _mm512_fmadd_ps(_mm512_permute_ps(q21, c * 0x55), w1, a21);
              a30 = _mm512_fmadd_ps(_mm512_permute_ps(q30, c * 0x55), w0, a30);
              a31 = _mm512_fmadd_ps(_mm512_permute_ps(q31, c * 0x55), w1, a31);
            }
          }
        }
      }
      _mm512_store_ps(mbuf[0][i0], a00), _mm512_store_ps(mbuf[0][i1], a01);
      _mm512_store_ps(mbuf[1][i0], a10), _mm512_store_ps(mbuf[1][i1], a11);
      _mm512_store_ps(mbuf[2][i0], a20), _mm512_store_ps(mbuf[2][i1], a21);
      _mm512_store_ps(mbuf[3][i0], a30), _mm512_store_ps(mbuf[3][i1], a31);
    }
#pragma GCC unroll 4
    for (int t = 0; t < T; ++t) {
      __m512 m[6];
#pragma GCC unroll 6
      for (int i = 0; i < 6; ++i) m[i] = _mm512_load_ps(mbuf[t][i]);
      bad = winograd_store_tile(m, out + winograd_tile_base(k0 + t, D) * coutp + cb, D * coutp, bad);
    }
  }
  return _mm512_cmp_ps_mask(bad, bad, _CMP_UNORD_Q) == 0;
}
#pragma GCC diagnostic pop

template <int D, int CIN, int T>
inline void winograd_tiles_checked(const float* const rows[3], const float* const v[3], int64_t k0, int64_t ps,
                                   const float* wg, const float* w, const float* bias, int64_t coutp, float* out,
                                   int64_t W) {
  bool ok;
  if constexpr (T == 4) ok = winograd_tiles4_mix<D, CIN>(v, k0, wg, bias, coutp, out);
  else ok = winograd_tiles<D, CIN, T>(v, k0, wg, bias, coutp, out);
  if (ok) return;
  for (int t = 0; t < T; ++t)
    for (int j = 0; j < 4; ++j) {
      const int64_t x = winograd_tile_base(k0 + t, D) + j * D;
      if (x < W) conv_px_avx512<1, 0>(rows, x, ps, CIN, D, w, bias, coutp, out);
    }
}

template <int D, int CIN>
inline void conv_row_winograd_d(const float* const rows[3], const float* const v[3], int64_t ps, const float* wg,
                                const float* w, const float* bias, int64_t coutp, float* out, int64_t W) {
  const int64_t nt = winograd_tiles_in_row(W, D);
  int64_t k = 0;
  for (; k + 4 <= nt && nt - k != 5; k += 4) winograd_tiles_checked<D, CIN, 4>(rows, v, k, ps, wg, w, bias, coutp, out, W);
  if (nt - k == 5) {  // 3 + 2 tiles rather than 4 + 1 (a lone tile reloads its weights for 6 FMAs)
    winograd_tiles_checked<D, CIN, 3>(rows, v, k, ps, wg, w, bias, coutp, out, W);
    k += 3;
  }
  if (nt - k == 3) winograd_tiles_checked<D, CIN, 3>(rows, v, k, ps, wg, w, bias, coutp, out, W);
  if (nt - k == 2) winograd_tiles_checked<D, CIN, 2>(rows, v, k, ps, wg, w, bias, coutp, out, W);
  if (nt - k == 1) winograd_tiles_checked<D, CIN, 1>(rows, v, k, ps, wg, w, bias, coutp, out, W);
}

// ---- row pairs: F(4,3) x F(2,3)
// Two output rows y and y + d of a Winograd layer at once: along y, F(2,3) (points 0, 1, -1 and
// infinity) combines the four transformed input rows y - d, y, y + d, y + 2d into V'_0 = v0 - v2,
// V'_1 = v1 + v2, V'_2 = v2 - v1, V'_3 = v1 - v3; with the weights transformed along ky as well
// (W'_0 = W_0, W'_{1,2} = (W_0 +- W_1 + W_2) / 2, W'_3 = W_2) the point products M'_j = sum_ci V'_j W'_j
// give row y = A^T (M'_0 + M'_1 + M'_2) and row y + d = A^T (M'_1 - M'_2 - M'_3): 4 x 6 products per
// tile and input channel for two rows instead of 2 x 3 x 6 (1.5x fewer multiplies). The y-transform
// multiplies by 1/2 only (exact in binary), so the rounding is that of the row kernel plus a few
// additions. 16 output channels (every layer of the block and the network; others use row kernels).

// Buffers of one group of up to 4 tiles: V' ([j][t][i][ci]) and the two rows' point sums ([t][row][i][16]).
template <int CIN>
struct PairGroupBuf {
  static constexpr int TS = 6 * CIN;
  alignas(64) float vp[4][4 * TS];
  alignas(64) float sums[4][2][6][16];
};

// V'_j of point i of tile t (tile k of the row) into b.vp.
template <int CIN>
inline void pair_inputs_point(const float* const v[4], int64_t k, int t, int i, PairGroupBuf<CIN>& b) {
  constexpr int TS = 6 * CIN;
#pragma GCC unroll 2
  for (int c = 0; c < CIN; c += 16) {
    const int64_t at = k * TS + i * CIN + c;
    const __m512 u0 = _mm512_loadu_ps(v[0] + at), u1 = _mm512_loadu_ps(v[1] + at);
    const __m512 u2 = _mm512_loadu_ps(v[2] + at), u3 = _mm512_loadu_ps(v[3] + at);
    const int o = t * TS + i * CIN + c;
    _mm512_store_ps(b.vp[0] + o, _mm512_sub_ps(u0, u2));
    _mm512_store_ps(b.vp[1] + o, _mm512_add_ps(u1, u2));
    _mm512_store_ps(b.vp[2] + o, _mm512_sub_ps(u2, u1));
    _mm512_store_ps(b.vp[3] + o, _mm512_sub_ps(u1, u3));
  }
}

// Point i of T tiles: the 4T products sum_ci V'_j W'_j, then the two rows' sums into b.sums.
template <int CIN, int T>
inline void pair_point(const float* wg2, __m512 bias, int i, PairGroupBuf<CIN>& b) {
  constexpr int TS = 6 * CIN;
  __m512 acc[T][4];
  const __m512 a1 = i == 1 ? bias : _mm512_setzero_ps();  // A^T (0, b, 0, 0, 0, 0) = b, both rows via j = 1
#pragma GCC unroll 4
  for (int t = 0; t < T; ++t)
#pragma GCC unroll 4
    for (int j = 0; j < 4; ++j) acc[t][j] = j == 1 ? a1 : _mm512_setzero_ps();
  const float* wk = wg2 + i * CIN * 64;
  const float* vi = &b.vp[0][0] + i * CIN;
#pragma GCC unroll 16
  for (int ci = 0; ci < CIN; ++ci) {
    __m512 w[4];
#pragma GCC unroll 4
    for (int j = 0; j < 4; ++j) {
      w[j] = _mm512_loadu_ps(wk + (ci * 4 + j) * 16);
      asm("" : "+v"(w[j]));  // keep w in a register (see winograd_tiles)
    }
#pragma GCC unroll 4
    for (int t = 0; t < T; ++t)
#pragma GCC unroll 4
      for (int j = 0; j < 4; ++j)
        acc[t][j] = _mm512_fmadd_ps(_mm512_set1_ps(vi[j * 4 * TS + t * TS + ci]), w[j], acc[t][j]);
  }
#pragma GCC unroll 4
  for (int t = 0; t < T; ++t) {
    _mm512_store_ps(b.sums[t][0][i], _mm512_add_ps(acc[t][0], _mm512_add_ps(acc[t][1], acc[t][2])));
    _mm512_store_ps(b.sums[t][1][i], _mm512_sub_ps(_mm512_sub_ps(acc[t][1], acc[t][2]), acc[t][3]));
  }
}

// Output transform of tile t (tile k of the row) of a finished group into both rows; tiles with a
// non-finite output are recomputed by the direct kernel (rows[r]: input row y + (r - 1) d).
template <int D, int CIN>
inline void pair_store_tile(const PairGroupBuf<CIN>& b, int t, int64_t k, const float* const rows[4], int64_t ps,
                            const float* w, const float* bias, float* out0, float* out1, int64_t W) {
  __m512 s[6], r[6];
#pragma GCC unroll 6
  for (int i = 0; i < 6; ++i) s[i] = _mm512_load_ps(b.sums[t][0][i]), r[i] = _mm512_load_ps(b.sums[t][1][i]);
  const int64_t base = winograd_tile_base(k, D);
  __m512 bad = winograd_store_tile(s, out0 + base * 16, D * 16, _mm512_setzero_ps());
  bad = winograd_store_tile(r, out1 + base * 16, D * 16, bad);
  if (_mm512_cmp_ps_mask(bad, bad, _CMP_UNORD_Q) == 0) return;
  for (int j = 0; j < 4; ++j) {
    const int64_t x = base + j * D;
    if (x >= W) continue;
    conv_px_avx512<1, 0>(rows, x, ps, CIN, D, w, bias, 16, out0);
    conv_px_avx512<1, 0>(rows + 1, x, ps, CIN, D, w, bias, 16, out1);
  }
}

// Rows y (out0) and y + d (out1), 16 output channels, in groups of 4 tiles (tails as
// conv_row_winograd_d). Before the six point passes of a group, the previous group's tiles are
// stored and the next group's V' built: V' is written one group ahead of its broadcast reads (a
// wide store read back at once as narrow loads stalls on store forwarding). Measured on a Zen 4
// core (L1-resident rows, W = 128, d = 1): 5.7 us per row pair against 6.2-6.5 us for two rows of
// conv_row_winograd_d; doing the transforms inside the passes instead was slower (6.4-6.9 us).
template <int D, int CIN>
inline void conv_rows_pair_winograd_d(const float* const rows[4], const float* const v[4], int64_t ps,
                                      const float* wg2, const float* w, const float* bias, float* out0, float* out1,
                                      int64_t W) {
  const int64_t nt = winograd_tiles_in_row(W, D);
  const int64_t n4 = (nt % 4 == 1 && nt >= 5) ? (nt - 5) / 4 : nt / 4;
  int tails[2] = {0, 0}, ntail = 0;
  if (nt % 4 == 1 && nt >= 5) tails[0] = 3, tails[1] = 2, ntail = 2;
  else if (nt % 4 != 0) tails[0] = static_cast<int>(nt % 4), ntail = 1;
  const int64_t ng = n4 + ntail;
  auto group_tiles = [&](int64_t g) { return g < n4 ? 4 : tails[g - n4]; };
  auto group_k0 = [&](int64_t g) { return g <= n4 ? 4 * g : 4 * n4 + tails[0]; };
  PairGroupBuf<CIN> buf[2];
  const __m512 bv = _mm512_loadu_ps(bias);
  if (ng > 0)
    for (int t = 0; t < group_tiles(0); ++t)
      for (int i = 0; i < 6; ++i) pair_inputs_point<CIN>(v, t, t, i, buf[0]);
  for (int64_t g = 0; g < ng; ++g) {
    PairGroupBuf<CIN>& cur = buf[g & 1];
    PairGroupBuf<CIN>& other = buf[(g + 1) & 1];  // sums of the previous group; V' of the next one
    const int T = group_tiles(g);
    const int Tn = g + 1 < ng ? group_tiles(g + 1) : 0, Tp = g > 0 ? group_tiles(g - 1) : 0;
    const int64_t kn = g + 1 < ng ? group_k0(g + 1) : 0, kp = g > 0 ? group_k0(g - 1) : 0;
    for (int t = 0; t < Tp; ++t) pair_store_tile<D, CIN>(other, t, kp + t, rows, ps, w, bias, out0, out1, W);
    for (int i = 0; i < 6; ++i)
      for (int t = 0; t < Tn; ++t) pair_inputs_point<CIN>(v, kn + t, t, i, other);
    for (int i = 0; i < 6; ++i) {
      switch (T) {
        case 4: pair_point<CIN, 4>(wg2, bv, i, cur); break;
        case 3: pair_point<CIN, 3>(wg2, bv, i, cur); break;
        case 2: pair_point<CIN, 2>(wg2, bv, i, cur); break;
        default: pair_point<CIN, 1>(wg2, bv, i, cur);
      }
    }
  }
  if (ng > 0) {
    const int64_t g = ng - 1;
    for (int t = 0; t < group_tiles(g); ++t)
      pair_store_tile<D, CIN>(buf[g & 1], t, group_k0(g) + t, rows, ps, w, bias, out0, out1, W);
  }
}

}  // namespace conv3x3
}  // namespace derain
#endif  // __AVX512F__
