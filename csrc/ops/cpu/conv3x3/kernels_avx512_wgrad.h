// AVX-512 micro-kernels of the Winograd F(4,3) weight gradients, float32: outer products of
// transformed input rows (V) and transformed gradient rows (Z) summed over the tiles of a row, for
// one row or a row pair (the row drivers are in winograd_rows.h).
#pragma once

#include <cstdint>

#include "../common/simd.h"

#if defined(__AVX512F__)
namespace derain {
namespace conv3x3 {

// P[c][co] += sum_t V[t][c] Z[t][co] for 16 input channels x 16 output channels:
// the 16 accumulators stay in registers over all tiles. Half of the V values
// come as broadcast memory operands of their FMAs, the other half from one
// vector load split by in-register shuffles (lane broadcast + in-lane permute):
// loads alone would bind the loop (about 1.06 loads per FMA); the mix measured
// about 15% faster than either pure form on Zen 5.
// (GCC 12 warns about the deliberately undefined pass-through operand inside the
// shuffle intrinsics: a false positive.)
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
// acc[c] += s[c] * x for c < 16: s[0..7] as broadcast memory operands, s[8..15] from one vector
// load split by shuffles (the mix described above).
inline void outer16_fma_avx512(__m512 (&acc)[16], const float* s, __m512 x) {
#pragma GCC unroll 8
  for (int c = 0; c < 8; ++c) acc[c] = _mm512_fmadd_ps(_mm512_set1_ps(s[c]), x, acc[c]);
  const __m512 ss = _mm512_loadu_ps(s);
#pragma GCC unroll 2
  for (int k = 2; k < 4; ++k) {
    const __m512 lane = _mm512_shuffle_f32x4(ss, ss, 0x55 * k);  // 128-bit lane k everywhere
    acc[4 * k + 0] = _mm512_fmadd_ps(_mm512_permute_ps(lane, 0x00), x, acc[4 * k + 0]);
    acc[4 * k + 1] = _mm512_fmadd_ps(_mm512_permute_ps(lane, 0x55), x, acc[4 * k + 1]);
    acc[4 * k + 2] = _mm512_fmadd_ps(_mm512_permute_ps(lane, 0xAA), x, acc[4 * k + 2]);
    acc[4 * k + 3] = _mm512_fmadd_ps(_mm512_permute_ps(lane, 0xFF), x, acc[4 * k + 3]);
  }
}

inline void wino_accumulate_avx512(const float* V, int64_t vs, const float* Z, int64_t zs, int64_t ntiles, float* P,
                                   int64_t coutp) {
  __m512 acc[16];
#pragma GCC unroll 16
  for (int c = 0; c < 16; ++c) acc[c] = _mm512_setzero_ps();
  for (int64_t t = 0; t < ntiles; ++t) outer16_fma_avx512(acc, V + t * vs, _mm512_loadu_ps(Z + t * zs));
#pragma GCC unroll 16
  for (int c = 0; c < 16; ++c) {
    float* dst = P + c * coutp;
    _mm512_storeu_ps(dst, _mm512_add_ps(_mm512_loadu_ps(dst), acc[c]));
  }
}

// The row pairs' products, transposed: PT[co][c] += sum_t (A[t] -+ B[t])[c] Z[t][co] for 16 output
// x 16 input channels (PT's rows cin apart; SUB: A - B, else A + B). The input-side combination is
// formed per tile in a register from two vector loads, and the gradient side is broadcast (half from
// memory, half by shuffles, as above): against combining the input rows into a stored chunk first
// (the broadcasts must come from memory) the pair routine is 1.06x faster (W = 128, L1-resident),
// with the same products and sums (bit-identical).
template <bool SUB>
inline void wino_accumulate_pair_avx512(const float* A, const float* B, int64_t vs, const float* Z, int64_t zs,
                                        int64_t ntiles, float* PT, int64_t cin) {
  __m512 acc[16];
#pragma GCC unroll 16
  for (int c = 0; c < 16; ++c) acc[c] = _mm512_setzero_ps();
  for (int64_t t = 0; t < ntiles; ++t) {
    const __m512 a = _mm512_loadu_ps(A + t * vs), b = _mm512_loadu_ps(B + t * vs);
    outer16_fma_avx512(acc, Z + t * zs, SUB ? _mm512_sub_ps(a, b) : _mm512_add_ps(a, b));
  }
#pragma GCC unroll 16
  for (int c = 0; c < 16; ++c) {
    float* dst = PT + c * cin;
    _mm512_storeu_ps(dst, _mm512_add_ps(_mm512_loadu_ps(dst), acc[c]));
  }
}
#pragma GCC diagnostic pop

// gb += sum over the tiles of Z_1 = g0 + g1 + g2 + g3 (z1: point 1 of a transformed gradient row;
// 4 partial sums: short dependency chains).
inline void wino_bias_grad_avx512(const float* z1, int64_t coutp, int64_t ntiles, float* gb) {
  for (int64_t cb = 0; cb < coutp; cb += 16) {
    const float* z = z1 + cb;
    __m512 s[4] = {_mm512_setzero_ps(), _mm512_setzero_ps(), _mm512_setzero_ps(), _mm512_setzero_ps()};
    int64_t t = 0;
    for (; t + 4 <= ntiles; t += 4)
      for (int k = 0; k < 4; ++k) s[k] = _mm512_add_ps(s[k], _mm512_loadu_ps(z + (t + k) * coutp));
    for (; t < ntiles; ++t) s[0] = _mm512_add_ps(s[0], _mm512_loadu_ps(z + t * coutp));
    const __m512 sum = _mm512_add_ps(_mm512_add_ps(s[0], s[1]), _mm512_add_ps(s[2], s[3]));
    _mm512_storeu_ps(gb + cb, _mm512_add_ps(_mm512_loadu_ps(gb + cb), sum));
  }
}

}  // namespace conv3x3
}  // namespace derain
#endif  // __AVX512F__
