// A line-buffer pipeline of 3x3 convolutions on channels-last rows.
//
// Used by the fused self-correcting block (forward and backward,
// block_kernel.cpp) and by the fused inference of the whole network
// (network_kernel.cpp). A computation is a list of layers in topological
// order; each layer produces one image row at a time (a convolution of rows
// y-d, y, y+d of its input followed by an element-wise epilogue, a load from a
// tensor, or a weight-gradient accumulation). Feature maps live in ring buffers
// of a few rows ("stores", channels-last, zero columns on both sides for the
// padding), so no full-size intermediate map is ever written and everything a
// row needs is still in cache. Rows outside the image read as zeros (the
// convolutions' zero padding).
//
// One pipeline covers one image band [r0, r1) of final rows; each layer
// computes the rows its consumers need (the band plus a halo, clipped to the
// image). The schedule advances every layer by at most one row per sweep, in
// layer order, as soon as its inputs are there; ring capacities are found by
// replaying that schedule on counters before anything is allocated.
//
// Inner kernels: an AVX-512 micro-kernel for float (16 output pixels x 16
// output channels of accumulators, input values broadcast) when the build
// targets AVX-512, otherwise portable blocked loops (4 pixels x 16 channels)
// the compiler vectorises for its target (AVX2, SSE, NEON). Output channel
// counts are padded to a multiple of 16 with zero weights (`padded_channels`).
// float32 convolutions with 16 or 32 input channels run as Winograd F(4,3)
// along the rows on AVX-512 builds, and those with 16 output channels compute
// two rows y, y + d at once with F(2,3) along y (row pairs); the weight gradients
// run as Winograd F(4,3) along the rows too, also in row pairs.
#pragma once

#include <ATen/ATen.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <climits>
#include <cstdlib>
#include <type_traits>
#include <vector>

#if defined(__AVX512F__)
#include <immintrin.h>
#endif

namespace derain {
namespace rowpipe {

// Channel count of internal rows and accumulators: a multiple of 16, so that
// every kernel works on blocks of 16 output channels (one AVX-512 register of
// float; the padding channels carry zero weights and stay zero).
template <typename T>
inline int64_t padded_channels(int64_t c) {
  return (c + 15) / 16 * 16;
}

// a * b + c, fused where the target has FMA (never a libm call)
template <typename T>
inline T madd(T a, T b, T c) {
#if defined(__FMA__)
  return std::fma(a, b, c);
#else
  return a * b + c;
#endif
}

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

// ---------------------------------------------------------------- kernels
inline bool prefetch_enabled() {
  static const bool on = [] { const char* e = std::getenv("DERAIN_NO_PREFETCH"); return !(e && e[0] == '1'); }();
  return on;
}

// Kernels. conv_row: out[x][co] = bias[co] + sum_{ky,kx,ci} rows[ky][(x + (kx-1) d) * ps + ci] * w[ky*3+kx][ci][co]
// for x in [0, W), co in [0, coutp). rows[ky] points at pixel 0 of an input row
// whose pixels are ps elements apart, with at least d readable zero pixels on
// both sides; w is [9][cin][coutp]. wgrad_row: gw[t][ci][co] += sum_x
// rows[t/3][(x + (t%3-1) d) * ps + ci] * g[x][co] and gb[co] += sum_x g[x][co]
// (accumulated in T per band of rows; the bands are summed in double by the
// caller). coutp is always a multiple of 16 (padded_channels).

// Portable kernels: P pixels x 16 output channels of
// accumulators in a local array the compiler keeps in vector registers
// (AVX2: 2 ymm per pixel; SSE/NEON: 4).
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

// a mod d for 0 <= a < 2^32 and 0 < d < 2^32 by two multiplications (Lemire's fastmod) instead of a
// division: the pipeline maps rows to ring slots and pair phases several times per layer and row
// (`y % cap` was ~1 % of the block's training step).
struct FastMod {
  uint64_t m = 0, d = 1;
  FastMod() = default;
  explicit FastMod(uint64_t divisor) : m(~uint64_t(0) / divisor + 1), d(divisor) {}
  uint64_t operator()(uint64_t a) const {
    return static_cast<uint64_t>((static_cast<unsigned __int128>(m * a) * d) >> 64);
  }
};

#if defined(__AVX512F__)
inline bool conv_reuse_enabled() {
  static const bool on = [] { const char* e = std::getenv("DERAIN_CONV_PLAIN"); return !(e && e[0] == '1'); }();
  return on;
}
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

inline void conv_row_avx512(const float* const rows[3], int64_t ps, int64_t cin, int64_t d, const float* w,
                            const float* bias, int64_t coutp, float* out, int64_t W) {
  if (conv_reuse_enabled()) {
    if (ps == 16 && d == 1) return conv_row_avx512_d<16, 1>(rows, ps, cin, w, bias, coutp, out, W);
    if (ps == 16 && d == 2) return conv_row_avx512_d<16, 2>(rows, ps, cin, w, bias, coutp, out, W);
    if (ps == 16 && d == 3) return conv_row_avx512_d<16, 3>(rows, ps, cin, w, bias, coutp, out, W);
    if (ps == 32 && d == 1) return conv_row_avx512_d<32, 1>(rows, ps, cin, w, bias, coutp, out, W);
    if (ps == 32 && d == 3) return conv_row_avx512_d<32, 3>(rows, ps, cin, w, bias, coutp, out, W);
    if (d == 1) return conv_row_avx512_d<0, 1>(rows, ps, cin, w, bias, coutp, out, W);
    if (d == 3) return conv_row_avx512_d<0, 3>(rows, ps, cin, w, bias, coutp, out, W);
  }
  if (ps == 16) return conv_row_avx512_ps<16>(rows, ps, cin, d, w, bias, coutp, out, W);
  if (ps == 32) return conv_row_avx512_ps<32>(rows, ps, cin, d, w, bias, coutp, out, W);
  conv_row_avx512_ps<0>(rows, ps, cin, d, w, bias, coutp, out, W);
}

// ---- Winograd F(4,3) along the row: 4 outputs of one tap row from 6 inputs
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
inline bool conv_winograd_enabled() {  // read per pipeline layer (cheap), so tests can switch it
  const char* e = std::getenv("DERAIN_CONV_WINOGRAD");
  return !(e && e[0] == '0');
}

// Row pairs (F(2,3) along y on top of F(4,3) along x, conv_rows_pair_winograd) for the Winograd
// convolutions with 16 output channels; DERAIN_CONV_PAIRS=0 computes one row at a time (read per
// layer, so tests can switch it).
inline bool conv_pairs_enabled() {
  const char* e = std::getenv("DERAIN_CONV_PAIRS");
  return !(e && e[0] == '0');
}

// Row pairs of the Winograd weight gradients (F(2,3) along y, wgrad_rows_pair_winograd_avx512);
// DERAIN_WGRAD_PAIRS=0 accumulates one row at a time (read per layer, so tests can switch it).
inline bool wgrad_pairs_enabled() {
  const char* e = std::getenv("DERAIN_WGRAD_PAIRS");
  return !(e && e[0] == '0');
}

// Whether the Winograd kernels handle a convolution (else the direct kernels do).
inline bool winograd_conv_supported(int64_t cin, int64_t d) {
  return conv_winograd_enabled() && (cin == 16 || cin == 32) && d >= 1 && d <= 3;
}


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

inline std::vector<float> winograd_pair_weights(const float* w, int64_t cin);

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

// winograd_input_row with d and cin known at compile time for the common cases (d = 1..3, 16 or 32
// input channels: every Winograd layer of the block and the network). With them at run time the
// loop divided by d per tile and kept its addresses in spilled registers (the step 2.5 % slower).
inline void winograd_input_row_any(const float* row, int64_t ps, int64_t cin, int64_t d, int64_t nt, float* v,
                                   int64_t tstride, int64_t pstride) {
  if (cin == 16) {
    if (d == 1) return winograd_input_row<1, 16>(row, ps, cin, d, nt, v, tstride, pstride);
    if (d == 2) return winograd_input_row<2, 16>(row, ps, cin, d, nt, v, tstride, pstride);
    if (d == 3) return winograd_input_row<3, 16>(row, ps, cin, d, nt, v, tstride, pstride);
  } else if (cin == 32) {
    if (d == 1) return winograd_input_row<1, 32>(row, ps, cin, d, nt, v, tstride, pstride);
    if (d == 2) return winograd_input_row<2, 32>(row, ps, cin, d, nt, v, tstride, pstride);
    if (d == 3) return winograd_input_row<3, 32>(row, ps, cin, d, nt, v, tstride, pstride);
  }
  winograd_input_row(row, ps, cin, d, nt, v, tstride, pstride);
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
    base = reinterpret_cast<float*>((reinterpret_cast<uintptr_t>(data.data()) + 63) & ~static_cast<uintptr_t>(63));
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
// Calls f(D, CIN) with the dilation and input channel count of a Winograd convolution as
// std::integral_constant (d = 1..3, cin = 16 or 32: winograd_conv_supported).
template <typename F>
inline void winograd_dispatch(int64_t cin, int64_t d, F&& f) {
  using std::integral_constant;
  if (cin == 16) {
    if (d == 1) return f(integral_constant<int, 1>(), integral_constant<int, 16>());
    if (d == 2) return f(integral_constant<int, 2>(), integral_constant<int, 16>());
    return f(integral_constant<int, 3>(), integral_constant<int, 16>());
  }
  if (d == 1) return f(integral_constant<int, 1>(), integral_constant<int, 32>());
  if (d == 2) return f(integral_constant<int, 2>(), integral_constant<int, 32>());
  f(integral_constant<int, 3>(), integral_constant<int, 32>());
}

inline void conv_row_winograd(const float* const rows[3], int64_t y, WinoRowCache& cache, int64_t ps, int64_t cin,
                              int64_t d, const float* wg, const float* w, const float* bias, int64_t coutp, float* out,
                              int64_t W) {
  const float* v[3];
  for (int ky = 0; ky < 3; ++ky) v[ky] = cache.get(y + (ky - 1) * d, rows[ky], ps, d, cin);
  winograd_dispatch(cin, d, [&](auto D, auto CIN) {
    conv_row_winograd_d<decltype(D)::value, decltype(CIN)::value>(rows, v, ps, wg, w, bias, coutp, out, W);
  });
}

// ---------------------------------------------------------------- row pairs: F(4,3) x F(2,3)
// Two output rows y and y + d of a Winograd layer at once: along y, F(2,3) (points 0, 1, -1 and
// infinity) combines the four transformed input rows y - d, y, y + d, y + 2d into V'_0 = v0 - v2,
// V'_1 = v1 + v2, V'_2 = v2 - v1, V'_3 = v1 - v3; with the weights transformed along ky as well
// (W'_0 = W_0, W'_{1,2} = (W_0 +- W_1 + W_2) / 2, W'_3 = W_2) the point products M'_j = sum_ci V'_j W'_j
// give row y = A^T (M'_0 + M'_1 + M'_2) and row y + d = A^T (M'_1 - M'_2 - M'_3): 4 x 6 products per
// tile and input channel for two rows instead of 2 x 3 x 6 (1.5x fewer multiplies). The y-transform
// multiplies by 1/2 only (exact in binary), so the rounding is that of the row kernel plus a few
// additions. 16 output channels (every layer of the block and the network; others use row kernels).

// Transformed weights [i][ci][j][16] (the four y-points of one (i, ci) adjacent) of direct weights w
// ([ky*3+kx][cin][16]), computed in double from the direct weights: first along kx
// (t = G w per tap row), then along ky.
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

// Output rows y (out0) and y + d (out1) of a Winograd layer with 16 output channels; rows[r] is input
// row y + (r - 1) d.
inline void conv_rows_pair_winograd(const float* const rows[4], int64_t y, WinoRowCache& cache, int64_t ps,
                                    int64_t cin, int64_t d, const float* wg2, const float* w, const float* bias,
                                    float* out0, float* out1, int64_t W) {
  const float* v[4];
  for (int r = 0; r < 4; ++r) v[r] = cache.get(y + (r - 1) * d, rows[r], ps, d, cin);
  winograd_dispatch(cin, d, [&](auto D, auto CIN) {
    conv_rows_pair_winograd_d<decltype(D)::value, decltype(CIN)::value>(rows, v, ps, wg2, w, bias, out0, out1, W);
  });
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

inline void wgrad_row_avx512(const float* const rows[3], int64_t ps, int64_t cin, int64_t d, const float* g,
                             int64_t coutp, float* gw, float* gb, int64_t W) {
  const int64_t cin8 = conv_reuse_enabled() ? cin / 8 * 8 : 0;
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

// First 64-byte aligned address at or after p (p from a buffer with 16 floats of slack).
inline float* align_floats64(float* p) {
  return reinterpret_cast<float*>((reinterpret_cast<uintptr_t>(p) + 63) & ~static_cast<uintptr_t>(63));
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

// wino_transform_grad_avx512 with d and the channel count known at compile time for the common cases
// (d = 1..3, 16 output channels; the backward 2.7 % faster than with them at run time).
inline void wino_transform_grad_any(const float* g, int64_t coutp, int64_t d, int64_t ntiles, float* Z, int64_t dz) {
  if (coutp == 16) {
    if (d == 1) return wino_transform_grad_avx512<1, 16>(g, coutp, d, ntiles, Z, dz);
    if (d == 2) return wino_transform_grad_avx512<2, 16>(g, coutp, d, ntiles, Z, dz);
    if (d == 3) return wino_transform_grad_avx512<3, 16>(g, coutp, d, ntiles, Z, dz);
  }
  wino_transform_grad_avx512(g, coutp, d, ntiles, Z, dz);
}

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
#endif

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

// Whether the weight gradient of a layer with cin input channels and dilation d
// runs as Winograd F(4,3) tiles (wgrad_row_winograd): float on an AVX-512 build,
// cin a multiple of 16, d in 1..3, unless DERAIN_WGRAD_DIRECT=1 (read at every
// call, so tests and benchmarks can switch it in one process).
template <typename T>
inline bool wgrad_winograd_applies(int64_t cin, int64_t d) {
  const char* e = std::getenv("DERAIN_WGRAD_DIRECT");
  if (e && e[0] == '1') return false;
#if defined(__AVX512F__)
  if constexpr (std::is_same<T, float>::value) return cin > 0 && cin % 16 == 0 && d >= 1 && d <= 3;
#endif
  (void)cin, (void)d;
  return false;
}

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

// Weights of a conv (cout, cin, 3, 3) laid out as [tap][cin][coutp] (zero
// padded in both channel counts up to cin_p, coutp). `transposed` gives the
// weights of the adjoint (input-gradient) convolution: taps flipped, roles of
// cin and cout swapped (the result maps cout channels to cin channels).
template <typename T>
std::vector<T> relayout_weight(const at::Tensor& w, int64_t cin_p, int64_t coutp, bool transposed = false) {
  at::Tensor wc = w.contiguous();
  const T* src = wc.data_ptr<T>();
  const int64_t co_n = w.size(0), ci_n = w.size(1);
  std::vector<T> out(9 * cin_p * coutp, T(0));
  for (int64_t co = 0; co < co_n; ++co)
    for (int64_t ci = 0; ci < ci_n; ++ci)
      for (int t = 0; t < 9; ++t) {
        T v = src[(co * ci_n + ci) * 9 + t];
        if (!transposed) {
          out[(t * cin_p + ci) * coutp + co] = v;
        } else {  // input channel co of the adjoint, output channel ci, tap flipped
          out[((8 - t) * cin_p + co) * coutp + ci] = v;
        }
      }
  return out;
}

// Winograd weights of direct weights w ([9][cin][coutp], relayout_weight), computed once per op and
// shared by the pipelines of all tasks through Layer::wg_shared; empty where no Winograd kernel
// exists (double, other channel counts, non-AVX-512 builds, DERAIN_CONV_WINOGRAD=0). They do not
// depend on the dilation (add_layer still checks it).
template <typename T>
std::vector<T> winograd_weights_for(const std::vector<T>& w, int64_t cin, int64_t coutp) {
#if defined(__AVX512F__)
  if constexpr (std::is_same<T, float>::value) {
    if (!w.empty() && winograd_conv_supported(cin, 1)) return winograd_weights(w.data(), cin, coutp);
  }
#endif
  return {};
}

template <typename T>
std::vector<T> relayout_bias(const at::Tensor& b, int64_t coutp) {
  std::vector<T> out(coutp, T(0));
  if (b.defined()) {
    at::Tensor bc = b.contiguous();
    for (int64_t i = 0; i < b.numel(); ++i) out[i] = bc.data_ptr<T>()[i];
  }
  return out;
}

// ---------------------------------------------------------------- pipeline


#if defined(__AVX512F__)
// One pass over dense rows of n floats (n % 16 == 0) for the epilogues that end in tensors; S, S2:
// non-temporal stores to out / out2 (64-byte aligned rows). Each computes exactly what its scalar
// loop in Pipeline::compute computes (that loop serves other dtypes, layouts and builds, and runs
// with DERAIN_FUSED_EPILOGUES=0); the training pair's final epilogue took four passes over the
// row: with the input gradient's add (and a one-pass split of the saved la, since replaced by
// reading it in place) the training step at 8x16x128^2 became 2.4-3.4 % faster.
// f(std::true_type()) or f(std::false_type()): whether a row is streamed, as a template argument
template <class F>
inline void stream_dispatch(bool s, F&& f) {
  if (s)
    f(std::true_type());
  else
    f(std::false_type());
}
template <bool S>
inline void store16(float* p, __m512 v) {
  if constexpr (S)
    _mm512_stream_ps(p, v);
  else
    _mm512_storeu_ps(p, v);
}
// out = relu(acc + aux) (v < 0 ? 0 : v, so NaN stays NaN); out2 = aux with its sign bit set where
// out is not > 0, else cleared (the training pair's la carrying the final ReLU's mask).
template <bool S, bool S2>
inline void add_relu_mask_row_avx512(const float* acc, const float* aux, float* out, float* out2, int64_t n) {
  const __m512 zero = _mm512_setzero_ps();
  const __m512i sign = _mm512_set1_epi32(INT32_MIN);
  for (int64_t i = 0; i < n; i += 16) {
    const __m512 a = _mm512_loadu_ps(aux + i);
    __m512 v = _mm512_add_ps(_mm512_loadu_ps(acc + i), a);
    v = _mm512_mask_mov_ps(v, _mm512_cmp_ps_mask(v, zero, _CMP_LT_OQ), zero);
    const __m512i mag = _mm512_andnot_si512(sign, _mm512_castps_si512(a));
    const __m512i neg = _mm512_or_si512(mag, sign);
    store16<S>(out + i, v);
    store16<S2>(out2 + i, _mm512_castsi512_ps(_mm512_mask_mov_epi32(neg, _mm512_cmp_ps_mask(v, zero, _CMP_GT_OQ), mag)));
  }
}
// out = relu(acc + aux) (the plain forward's last epilogue)
template <bool S>
inline void add_relu_row_avx512(const float* acc, const float* aux, float* out, int64_t n) {
  const __m512 zero = _mm512_setzero_ps();
  for (int64_t i = 0; i < n; i += 16) {
    const __m512 v = _mm512_add_ps(_mm512_loadu_ps(acc + i), _mm512_loadu_ps(aux + i));
    store16<S>(out + i, _mm512_mask_mov_ps(v, _mm512_cmp_ps_mask(v, zero, _CMP_LT_OQ), zero));
  }
}
// out = acc + aux
template <bool S>
inline void add_row_avx512(const float* acc, const float* aux, float* out, int64_t n) {
  for (int64_t i = 0; i < n; i += 16) store16<S>(out + i, _mm512_add_ps(_mm512_loadu_ps(acc + i), _mm512_loadu_ps(aux + i)));
}
#endif

// A strided 3-D view (C, H, W) of one image of a tensor.
template <typename T>
struct ImageView {
  T* data = nullptr;
  int64_t C = 0, sc = 0, sh = 0, sw = 0;
  bool stream = false;  // rows written with non-temporal stores (see kStreamBytes)
  T& at(int64_t c, int64_t y, int64_t x) const { return data[c * sc + y * sh + x * sw]; }
};

// Tensors of at least this many bytes are written with non-temporal stores: they do not fit the
// caches anyway, and a plain store first reads every line it writes (the pages are fresh, zeroed
// by the kernel). Measured on the block at 8x16x128^2 (8 MiB out): forward 4-5 % faster, the
// backward (8 MiB gradient) 1-3 %, one thread.
constexpr int64_t kStreamBytes = int64_t(4) << 20;

template <typename T>
ImageView<T> image_view(const at::Tensor& t, int64_t n) {
  ImageView<T> v;
  v.data = const_cast<T*>(t.const_data_ptr<T>()) + n * t.stride(0);
  v.C = t.size(1);
  v.sc = t.stride(1);
  v.sh = t.stride(2);
  v.sw = t.stride(3);
  v.stream = static_cast<int64_t>(t.nbytes()) >= kStreamBytes;
  return v;
}

enum class Kind {
  LoadImage,    // store[y] = image rows (first C channels)
  LoadGradMask, // store[y] = image2 > 0 ? image : 0   (gradient through the final ReLU)
  LoadSplit,    // store[y] = |image| (la saved by the forward; when out is set); out2[y] = aux[y] - |image| (e)
  Conv,         // acc = conv(input store); epilogue below
  WeightGrad,   // gw += input (shifted) x aux[y]; gb += aux[y]
};

enum class Epilogue {
  Relu,         // out = relu(acc)
  ReluSplit,    // out = la = relu(acc); out2 = aux - la
  AddRelu,      // out = relu(acc + aux)
  AddReluImage, // image = relu(acc + aux); when image2 is set, image2 = aux with its sign bit set
                //   where image is not > 0 (the training pair's la, carrying the final ReLU's mask)
  TanhSubImage, // image = image2 - tanh(acc)
  BackwardE,    // out = ge = acc; out2 = gp = (aux - ge) * [aux2 > 0], or with aux2 unset * [|image2| > 0]
  AddImage,     // image = acc + aux
};

struct StoreSpec {
  int64_t ch;  // channels per pixel
};

template <typename T>
struct Layer {
  Kind kind = Kind::Conv;
  Epilogue epi = Epilogue::Relu;
  int in = -1;  // input store (Conv, WeightGrad)
  int64_t in_choff = 0, cin = 0, d = 1;
  const T* w = nullptr;
  const T* b = nullptr;
  int64_t coutp = 0;  // accumulator channels (Conv) / gradient channels (WeightGrad)
  int out = -1, out2 = -1, aux = -1, aux2 = -1;
  int64_t out_choff = 0, out2_choff = 0, aux_choff = 0, aux2_choff = 0;
  ImageView<T> image, image2;  // tensors read or written
  bool sign_mask = false;      // LoadGradMask: the mask is image2's sign bit clear (else image2 > 0)
  T* gw = nullptr;  // WeightGrad accumulators [9][cin][coutp] and [coutp], in T
  T* gb = nullptr;
  T* gwp = nullptr;  // WeightGrad: Winograd point accumulators [3][6][cin][coutp] (nullptr: direct kernel only)
  T* gwq = nullptr;  // WeightGrad: row-pair accumulators [4][6][coutp][cin] (nullptr: no row pairs)
  std::vector<std::pair<int, int64_t>> deps;  // (producer layer, rows of reach)
  const T* wg_shared = nullptr;  // Conv: Winograd weights prepared once per op (winograd_weights_for)
  std::vector<T> wg;             // Conv: own Winograd weights (add_layer, when none are shared)
  const T* wgp = nullptr;        // Conv: the Winograd weights in use (null: direct kernels)
  // Conv with Winograd and 16 output channels: output rows computed in pairs (y, y + d) with F(2,3)
  // along y (pair_head); the second row waits in `stash` until the schedule reaches it
  bool pair = false;
  const T* wg2p = nullptr;  // pair weights (winograd_pair_weights, after the row weights)
  std::vector<T> stash;
  std::vector<int64_t> stash_tag;
  int64_t stash_len = 0;
#if defined(__AVX512F__)
  WinoRowCache wino;  // Conv with wgp / WeightGrad with gwp: transformed input rows
#endif
  // filled by the pipeline
  int64_t lo = 0, hi = 0, next = 0, lag = 0;
  FastMod mod2d;  // y mod 2d (the row-pair phase)
};

template <typename T>
class Pipeline {
 public:
  // pad: the largest dilation of the layers. Rows get pad zero pixels on the left and 5 pad on the
  // right (a Winograd tile at the end of a row reads up to 5d - 1 pixels past it).
  Pipeline(int64_t H, int64_t W, int64_t pad) : H_(H), W_(W), pad_(pad), rpad_(5 * pad) {
    // FastMod is exact below 2^32: rows (and cache slots, row + a few) stay far below it
    TORCH_CHECK(H < (int64_t(1) << 31), "derain: images of 2^31 rows or more are not supported");
    const char* m = std::getenv("DERAIN_FUSED_EPILOGUES");
    fused_epi_ = !(m && m[0] == '0');
  }

  int add_store(int64_t ch) {
    stores_.push_back({ch});
    return static_cast<int>(stores_.size()) - 1;
  }
  int add_layer(Layer<T> l) {
    TORCH_CHECK(l.kind == Kind::LoadImage || l.kind == Kind::LoadGradMask || l.kind == Kind::LoadSplit ||
                    l.coutp % 16 == 0,
                "derain: internal error: output channels of a layer must be padded to 16");
#if defined(__AVX512F__)
    if constexpr (std::is_same<T, float>::value) {
      if (l.kind == Kind::Conv && winograd_ok_ && winograd_conv_supported(l.cin, l.d) &&
          winograd_tiles_in_row(W_, l.d) > 0) {
        if (!l.wg_shared) l.wg = winograd_weights(l.w, l.cin, l.coutp);
        l.wgp = l.wg_shared ? l.wg_shared : l.wg.data();  // a moved vector keeps its buffer
        l.pair = conv_pairs_enabled() && l.coutp == 16;
        // a row pair reads transformed rows y - d, y, y + d, y + 2d at once: 3d + 1 slots (which also
        // keep every row until its last reader: each row is transformed once), 2d + 1 for single rows
        l.wino.init(W_, l.d, l.cin, /*point_major=*/false, l.pair ? 3 * l.d + 1 : 0);
        if (l.pair) {
          l.wg2p = l.wgp + winograd_pair_offset(l.cin, l.coutp);
          l.stash_len = (W_ + 4 * pad_) * l.coutp + 16;
          l.stash.assign(l.d * l.stash_len, 0.f);
          l.stash_tag.assign(l.d, INT64_MIN);
        }
      }
      if (l.kind == Kind::WeightGrad && l.gwp) {
        l.pair = l.gwq != nullptr && wgrad_pairs_enabled();
        l.wino.init(W_, l.d, l.cin, /*point_major=*/true, l.pair ? 3 * l.d + 1 : 0);
      }
    }
#endif
    // the layers that read the saved la straight from the tensor need dense channels-last rows
    // without padding channels
    auto dense = [&](const ImageView<T>& im, int64_t ch) { return im.data && im.sc == 1 && im.sw == im.C && im.C == ch; };
    TORCH_CHECK(l.kind != Kind::LoadSplit || l.out >= 0 ||
                    (dense(l.image, stores_[l.aux].ch) && stores_[l.out2].ch == l.image.C),
                "derain: internal error: LoadSplit without a la store needs dense rows");
    TORCH_CHECK(l.kind != Kind::Conv || l.epi != Epilogue::BackwardE || l.aux2 >= 0 || dense(l.image2, l.coutp),
                "derain: internal error: BackwardE reading la from the tensor needs dense rows");
    layers_.push_back(std::move(l));
    return static_cast<int>(layers_.size()) - 1;
  }
  Layer<T>& layer(int i) { return layers_[i]; }
  // false: convolutions use the direct kernels (set before adding layers; see winograd_fits)
  void allow_winograd(bool ok) { winograd_ok_ = ok; }

  // Computes final rows [r0, r1) (and whatever halo the layers need).
  void run(int64_t r0, int64_t r1) {
    plan(r0, r1);
    allocate();
    reset();
    std::vector<T> acc((W_ + 4 * pad_) * max_coutp_ + 16);  // Winograd tiles may end past W
    bool busy = true;
    while (busy) {
      busy = false;
      for (size_t i = 0; i < layers_.size(); ++i) {
        Layer<T>& l = layers_[i];
        if (l.next >= l.hi) continue;
        busy = true;
        if (!ready(l)) continue;
        compute(l, l.next, acc.data());
        ++l.next;
      }
    }
#if defined(__AVX512F__)
    // Rows written with non-temporal stores become visible to other threads (and the caller) after
    // this fence; the task's end (an OpenMP barrier) comes after it. No other thread reads a
    // pipeline's output rows while it runs, so one fence per run is enough: a fence after every
    // streamed row waited for that row to reach memory (training step at 8x16x128^2 1.1 % slower).
    _mm_sfence();
#endif
  }

 private:
  struct Store {
    int64_t ch = 0, cap = 1, rowlen = 0;
    FastMod modcap;  // y mod cap
    std::vector<T> data;
  };

  void plan(int64_t r0, int64_t r1) {
    const int n = static_cast<int>(layers_.size());
    std::vector<int64_t> lag(n, -1);
    for (int i = n - 1; i >= 0; --i) {
      if (lag[i] < 0) lag[i] = 0;  // a final layer
      for (auto& dep : layers_[i].deps) lag[dep.first] = std::max(lag[dep.first], lag[i] + dep.second);
    }
    max_coutp_ = 1;
    for (int i = 0; i < n; ++i) {
      Layer<T>& l = layers_[i];
      l.mod2d = FastMod(2 * std::max<int64_t>(l.d, 1));
      l.lag = lag[i];
      l.lo = std::max<int64_t>(0, r0 - lag[i]);
      l.hi = std::min<int64_t>(H_, r1 + lag[i]);
      if (l.kind == Kind::Conv) max_coutp_ = std::max(max_coutp_, l.coutp);
    }
    // consumers of every layer, for the ring capacities
    consumers_.assign(n, {});
    for (int i = 0; i < n; ++i)
      for (auto& dep : layers_[i].deps) consumers_[dep.first].push_back({i, dep.second});
    // replay the schedule on counters: capacity = widest live window of rows
    caps_.assign(stores_.size(), 1);
    reset();
    bool busy = true;
    while (busy) {
      busy = false;
      for (int i = 0; i < n; ++i) {
        Layer<T>& l = layers_[i];
        if (l.next >= l.hi) continue;
        busy = true;
        if (!ready(l)) continue;
        int64_t min_needed = l.next;
        for (auto& c : consumers_[i]) {
          const Layer<T>& cl = layers_[c.first];
          if (cl.next < cl.hi) min_needed = std::min(min_needed, cl.next - c.second);
        }
        const int64_t window = l.next - min_needed + 1;
        for (int s : {l.out, l.out2})
          if (s >= 0) caps_[s] = std::max(caps_[s], window);
        ++l.next;
      }
    }
  }

  void allocate() {
    store_data_.resize(stores_.size());
    int64_t chmax = 1;
    for (size_t s = 0; s < stores_.size(); ++s) {
      Store& st = store_data_[s];
      st.ch = stores_[s].ch;
      st.cap = caps_[s];
      st.modcap = FastMod(st.cap);
      st.rowlen = (W_ + pad_ + rpad_) * st.ch;
      st.data.assign(st.cap * st.rowlen, T(0));
      chmax = std::max(chmax, st.ch);
    }
    zero_.assign((W_ + pad_ + rpad_) * chmax + 16, T(0));
    gather_.assign(W_ * chmax + 16, T(0));
    zero_chmax_ = chmax;
  }

  void reset() {
    for (auto& l : layers_) l.next = l.lo;
  }

  // Asks for row y of a channels-last tensor ahead of its load (a row is read long after
  // the previous one: all layers run in between, so the hardware prefetcher does not
  // see a stream and every row load would wait on memory).
  void prefetch_image_row(const ImageView<T>& im, int64_t y) const {
    if (im.sc != 1 || y >= H_ || im.sw != im.C) return;
    const char* p = reinterpret_cast<const char*>(im.data + y * im.sh);
    const int64_t bytes = W_ * im.C * static_cast<int64_t>(sizeof(T));
    for (int64_t off = 0; off < bytes; off += 64) __builtin_prefetch(p + off, 0, 2);
  }

  // Row pairs by image row, not by band (so that a row rounds the same way in every band and tile it
  // falls in, except within d rows of a layer's range ends): rows y with y mod 2d < d are heads (they
  // compute rows y and y + d) when y + d is in the layer's range, the rows d below them their tails;
  // a row whose partner is out of range is computed alone.
  // y mod d (y mod 2d folded once): the stash slot of a pair's rows
  static int64_t stash_slot(const Layer<T>& l, int64_t y) {
    const int64_t s = static_cast<int64_t>(l.mod2d(y));
    return s >= l.d ? s - l.d : s;
  }
  static bool pair_head(const Layer<T>& l, int64_t y) {
    return l.pair && static_cast<int64_t>(l.mod2d(y)) < l.d && y + l.d < l.hi;
  }
  static bool pair_tail(const Layer<T>& l, int64_t y) {
    return l.pair && static_cast<int64_t>(l.mod2d(y)) >= l.d && y - l.d >= l.lo;
  }

  bool ready(const Layer<T>& l) const {
    const int64_t y = l.next;
    // a head reads its input store d rows further (rows y - d .. y + 2d)
    const bool head = pair_head(l, y);
    for (auto& dep : l.deps) {
      const Layer<T>& p = layers_[dep.first];
      // (a weight-gradient head also reads gradient rows y and y + d)
      const bool feeds_input = p.out == l.in || p.out2 == l.in ||
                               (l.kind == Kind::WeightGrad && (p.out == l.aux || p.out2 == l.aux));
      const int64_t reach = dep.second + (head && feeds_input ? l.d : 0);
      if (p.next < std::min(y + reach + 1, p.hi)) return false;
    }
    return true;
  }

  // Pointer to pixel 0 (channel offset choff) of row y of store s; zeros outside the image.
  const T* row(int s, int64_t y, int64_t choff) const {
    const Store& st = store_data_[s];
    if (y < 0 || y >= H_) return zero_.data() + pad_ * zero_chmax_;
    return st.data.data() + static_cast<int64_t>(st.modcap(y)) * st.rowlen + pad_ * st.ch + choff;
  }
  T* mrow(int s, int64_t y, int64_t choff) { return const_cast<T*>(row(s, y, choff)); }

  void compute(Layer<T>& l, int64_t y, T* acc) {
    const int64_t W = W_;
    switch (l.kind) {
      case Kind::LoadImage:
        load_image_row(l.image, y, mrow(l.out, y, l.out_choff), store_data_[l.out].ch);
        return;
      case Kind::LoadSplit: {  // la = |saved la| (its sign bit carries the final ReLU's mask), e = x - la
        const T* xs = row(l.aux, y, l.aux_choff);
        T* e = mrow(l.out2, y, l.out2_choff);
        const int64_t C = l.image.C;
        if (l.out < 0) {  // e only (la is read from the tensor where needed); dense rows (add_layer)
          const T* src = l.image.data + y * l.image.sh;
          if (prefetch_enabled()) prefetch_image_row(l.image, y + 1);
#pragma omp simd
          for (int64_t i = 0; i < W * C; ++i) e[i] = xs[i] - std::fabs(src[i]);
          return;
        }
        // other layouts and padded channels: |la| into ring rows first
        T* la = mrow(l.out, y, l.out_choff);
        const int64_t ps = store_data_[l.out].ch, psx = store_data_[l.aux].ch, pse = store_data_[l.out2].ch;
        load_image_row(l.image, y, la, ps);
        if (ps == C && psx == C && pse == C) {
#pragma omp simd
          for (int64_t i = 0; i < W * C; ++i) {
            la[i] = std::fabs(la[i]);
            e[i] = xs[i] - la[i];
          }
        } else {
          for (int64_t x = 0; x < W; ++x)
#pragma omp simd
            for (int64_t c = 0; c < C; ++c) {
              la[x * ps + c] = std::fabs(la[x * ps + c]);
              e[x * pse + c] = xs[x * psx + c] - la[x * ps + c];
            }
        }
        return;
      }
      case Kind::LoadGradMask:
        if (l.sign_mask)
          load_grad_mask<true>(l, y);
        else
          load_grad_mask<false>(l, y);
        return;
      case Kind::WeightGrad: {
        const T* rows[3] = {row(l.in, y - l.d, l.in_choff), row(l.in, y, l.in_choff), row(l.in, y + l.d, l.in_choff)};
#if defined(__AVX512F__)
        if constexpr (std::is_same<T, float>::value) {
          if (l.gwp && pair_tail(l, y)) return;  // accumulated with its head
          if (l.gwp && pair_head(l, y)) {  // rows y and y + d
            const T* rows4[4] = {rows[0], rows[1], rows[2], row(l.in, y + 2 * l.d, l.in_choff)};
            wgrad_rows_pair_winograd_avx512(rows4, y, store_data_[l.in].ch, l.cin, l.d, row(l.aux, y, l.aux_choff),
                                            row(l.aux, y + l.d, l.aux_choff), l.coutp, l.gwq, l.gb, wino_scratch_,
                                            l.wino);
            return;
          }
          if (l.gwp) {  // Winograd point sums ([3][6][cin][coutp], turned into taps by wino_points_to_taps)
            int64_t ids[3];
            for (int k = 0; k < 3; ++k) {
              const int64_t r = y + (k - 1) * l.d;
              ids[k] = r >= 0 && r < H_ ? r : -1;
            }
            wgrad_row_winograd_avx512(rows, ids, store_data_[l.in].ch, l.cin, l.d, row(l.aux, y, l.aux_choff),
                                      l.coutp, l.gwp, l.gb, wino_scratch_, l.wino);
            return;
          }
        }
#endif
        wgrad_row<T>(rows, store_data_[l.in].ch, l.cin, l.d, row(l.aux, y, l.aux_choff), l.coutp, l.gw, l.gb, W);
        return;
      }
      case Kind::Conv:
        break;
    }
    const int64_t cp = l.coutp;
    const T* rows[3] = {row(l.in, y - l.d, l.in_choff), row(l.in, y, l.in_choff), row(l.in, y + l.d, l.in_choff)};
#if defined(__AVX512F__)
    if constexpr (std::is_same<T, float>::value) {
      if (pair_tail(l, y)) {  // computed with its head: take it from the stash
        const int64_t s = stash_slot(l, y);
        TORCH_CHECK(l.stash_tag[s] == y, "derain: internal error: row pair schedule");
        l.stash_tag[s] = INT64_MIN;
        acc = l.stash.data() + s * l.stash_len;
      } else if (pair_head(l, y)) {  // rows y (into acc) and y + d (into the stash)
        const T* rows4[4] = {rows[0], rows[1], rows[2], row(l.in, y + 2 * l.d, l.in_choff)};
        const int64_t s = stash_slot(l, y);  // the slot of row y + d
        conv_rows_pair_winograd(rows4, y, l.wino, store_data_[l.in].ch, l.cin, l.d, l.wg2p, l.w, l.b, acc,
                                l.stash.data() + s * l.stash_len, W);
        l.stash_tag[s] = y + l.d;
      } else if (l.wgp) {
        conv_row_winograd(rows, y, l.wino, store_data_[l.in].ch, l.cin, l.d, l.wgp, l.w, l.b, cp, acc, W);
      } else {
        conv_row<T>(rows, store_data_[l.in].ch, l.cin, l.d, l.w, l.b, cp, acc, W);
      }
    } else
#endif
    conv_row<T>(rows, store_data_[l.in].ch, l.cin, l.d, l.w, l.b, cp, acc, W);
    const T zero(0);
    switch (l.epi) {
      case Epilogue::Relu: {
        T* o = mrow(l.out, y, l.out_choff);
        const int64_t ps = store_data_[l.out].ch;
        for (int64_t x = 0; x < W; ++x) {
          const T* a = acc + x * cp;
          T* ox = o + x * ps;
#pragma omp simd
          for (int64_t c = 0; c < cp; ++c) ox[c] = a[c] < zero ? zero : a[c];
        }
        return;
      }
      case Epilogue::ReluSplit: {
        T* o = mrow(l.out, y, l.out_choff);
        T* o2 = mrow(l.out2, y, l.out2_choff);
        const T* xs = row(l.aux, y, l.aux_choff);
        const int64_t ps = store_data_[l.out].ch, ps2 = store_data_[l.out2].ch, psx = store_data_[l.aux].ch;
        const bool flat = ps == cp && ps2 == cp && psx == cp;  // every row dense: one loop over W * cp values
        const int64_t npx = flat ? 1 : W, len = flat ? W * cp : cp;
        for (int64_t x = 0; x < npx; ++x) {
          const T* a = acc + x * cp;
          T* ox = o + x * ps;
          T* o2x = o2 + x * ps2;
          const T* xx = xs + x * psx;
#pragma omp simd
          for (int64_t c = 0; c < len; ++c) {
            const T la = a[c] < zero ? zero : a[c];
            ox[c] = la;
            o2x[c] = xx[c] - la;
          }
        }
        return;
      }
      case Epilogue::AddRelu: {
        T* o = mrow(l.out, y, l.out_choff);
        const T* as = row(l.aux, y, l.aux_choff);
        const int64_t ps = store_data_[l.out].ch, psa = store_data_[l.aux].ch;
        const bool flat = ps == cp && psa == cp;  // every row dense: one loop over W * cp values
        const int64_t npx = flat ? 1 : W, len = flat ? W * cp : cp;
        for (int64_t x = 0; x < npx; ++x) {
          const T* a = acc + x * cp;
          T* ox = o + x * ps;
          const T* ax = as + x * psa;
#pragma omp simd
          for (int64_t c = 0; c < len; ++c) {
            const T v = a[c] + ax[c];
            ox[c] = v < zero ? zero : v;
          }
        }
        return;
      }
      case Epilogue::AddReluImage: {
        const T* as = row(l.aux, y, l.aux_choff);
        const int64_t psa = store_data_[l.aux].ch;
#if defined(__AVX512F__)
        if constexpr (std::is_same<T, float>::value) {
          const ImageView<T>& im = l.image;
          const ImageView<T>& im2 = l.image2;
          if (fused_epi_ && !im2.data && dense_row(im, cp) && psa == cp) {
            float* o = im.data + y * im.sh;
            const bool s = streams(im, o);
            stream_dispatch(s, [&](auto S) { add_relu_row_avx512<decltype(S)::value>(acc, as, o, W * cp); });
            return;
          }
          if (fused_epi_ && im2.data && dense_row(im, cp) && dense_row(im2, cp) && psa == cp) {
            float* o = im.data + y * im.sh;
            float* o2 = im2.data + y * im2.sh;
            const bool s = streams(im, o), s2 = streams(im2, o2);
            stream_dispatch(s, [&](auto S) {
              stream_dispatch(s2, [&](auto S2) {
                add_relu_mask_row_avx512<decltype(S)::value, decltype(S2)::value>(acc, as, o, o2, W * cp);
              });
            });
            return;
          }
        }
#endif
        const bool flat = psa == cp;  // every row dense: one loop over W * cp values
        const int64_t npx = flat ? 1 : W, len = flat ? W * cp : cp;
        for (int64_t x = 0; x < npx; ++x) {
          T* a = acc + x * cp;
          const T* ax = as + x * psa;
#pragma omp simd
          for (int64_t c = 0; c < len; ++c) {
            const T v = a[c] + ax[c];
            a[c] = v < zero ? zero : v;
          }
        }
        write_image(l.image, y, acc, cp);
        if (l.image2.data) {  // la with the mask [out > 0] in its sign bit (la >= 0 or NaN)
          T* packed = gather_.data();
          for (int64_t x = 0; x < npx; ++x) {
            const T* a = acc + x * cp;
            const T* ax = as + x * psa;
            T* px = packed + x * cp;
#pragma omp simd
            for (int64_t c = 0; c < len; ++c) px[c] = a[c] > zero ? std::fabs(ax[c]) : -std::fabs(ax[c]);
          }
          write_image(l.image2, y, packed, cp);
        }
        return;
      }
      case Epilogue::TanhSubImage: {
        const ImageView<T>& src = l.image2;
        const ImageView<T>& dst = l.image;
        for (int64_t c = 0; c < dst.C; ++c)
          for (int64_t x = 0; x < W; ++x) dst.at(c, y, x) = src.at(c, y, x) - std::tanh(acc[x * cp + c]);
        return;
      }
      case Epilogue::BackwardE: {
        T* o = mrow(l.out, y, l.out_choff);
        T* o2 = mrow(l.out2, y, l.out2_choff);
        const T* gq = row(l.aux, y, l.aux_choff);
        // la from its ring rows, or (aux2 unset) straight from the saved la, whose sign bit carries
        // the final ReLU's mask (so the test is |la| > 0; add_layer checked its rows are dense)
        const bool saved = l.aux2 < 0;
        const T* la = saved ? l.image2.data + y * l.image2.sh : row(l.aux2, y, l.aux2_choff);
        const int64_t ps = store_data_[l.out].ch, ps2 = store_data_[l.out2].ch;
        const int64_t psq = store_data_[l.aux].ch, psl = saved ? l.image2.sw : store_data_[l.aux2].ch;
        const bool flat = ps == cp && ps2 == cp && psq == cp && psl == cp;  // every row dense: one loop over W * cp values
        const int64_t npx = flat ? 1 : W, len = flat ? W * cp : cp;
        auto rows = [&](auto abs_la) {
          for (int64_t x = 0; x < npx; ++x) {
            const T* a = acc + x * cp;
            T* ox = o + x * ps;
            T* o2x = o2 + x * ps2;
            const T* qx = gq + x * psq;
            const T* lx = la + x * psl;
#pragma omp simd
            for (int64_t c = 0; c < len; ++c) {
              // both values read unconditionally: a select on lx > 0 then compiles to a
              // zero-masking subtract (with the read inside the select, GCC emits a merge-masked
              // load whose merge value goes through the stack: a store-forwarding chain per vector)
              const T av = a[c], gv = qx[c] - av;
              const T lv = decltype(abs_la)::value ? std::fabs(lx[c]) : lx[c];
              ox[c] = av;
              o2x[c] = lv > zero ? gv : zero;
            }
          }
        };
        if (saved)
          rows(std::true_type());
        else
          rows(std::false_type());
        return;
      }
      case Epilogue::AddImage: {
        const T* as = row(l.aux, y, l.aux_choff);
        const int64_t psa = store_data_[l.aux].ch;
#if defined(__AVX512F__)
        if constexpr (std::is_same<T, float>::value) {
          const ImageView<T>& im = l.image;
          if (fused_epi_ && dense_row(im, cp) && psa == cp) {
            float* o = im.data + y * im.sh;
            const bool s = streams(im, o);
            stream_dispatch(s, [&](auto S) { add_row_avx512<decltype(S)::value>(acc, as, o, W * cp); });
            return;
          }
        }
#endif
        const bool flat = psa == cp;  // every row dense: one loop over W * cp values
        const int64_t npx = flat ? 1 : W, len = flat ? W * cp : cp;
        for (int64_t x = 0; x < npx; ++x) {
          T* a = acc + x * cp;
          const T* ax = as + x * psa;
#pragma omp simd
          for (int64_t c = 0; c < len; ++c) a[c] += ax[c];
        }
        write_image(l.image, y, acc, cp);
        return;
      }
    }
  }

  // grad * [mask]: mask = image2 > 0 (the output of the final ReLU), or with SIGN the sign bit of
  // image2 clear (the saved la of the training pair, whose sign bit carries that mask).
  template <bool SIGN>
  static bool passes(T m) {
    if constexpr (SIGN)
      return !std::signbit(m);
    else
      return m > T(0);
  }
  template <bool SIGN>
  void load_grad_mask(const Layer<T>& l, int64_t y) {
    const int64_t W = W_;
    const int64_t ch = store_data_[l.out].ch;
    T* o = mrow(l.out, y, l.out_choff);
    const ImageView<T>& g = l.image;
    const ImageView<T>& m = l.image2;
    const T* gs = g.data + y * g.sh;
    const T* ms = m.data + y * m.sh;
    const T zero(0);
    if (prefetch_enabled()) {
      prefetch_image_row(g, y + 1);
      prefetch_image_row(m, y + 1);
    }
    if (g.sc == 1 && m.sc == 1 && g.sw == g.C && m.sw == g.C && ch == g.C) {  // dense rows: one flat loop
      const int64_t n = W * g.C;
#pragma omp simd
      for (int64_t i = 0; i < n; ++i) {
        const T gv = gs[i];  // read unconditionally: a select, not a merge-masked load
        o[i] = passes<SIGN>(ms[i]) ? gv : zero;
      }
    } else if (g.sc == 1 && m.sc == 1) {
      for (int64_t x = 0; x < W; ++x) {
        const T* gx = gs + x * g.sw;
        const T* mx = ms + x * m.sw;
        T* ox = o + x * ch;
#pragma omp simd
        for (int64_t c = 0; c < g.C; ++c) ox[c] = passes<SIGN>(mx[c]) ? gx[c] : zero;
      }
    } else if (g.sc == 0 && g.sw == 0 && m.sc == 1 && m.sw == g.C && ch == g.C) {  // constant row, dense mask
      const T gv = gs[0];
      const int64_t n = W * g.C;
#pragma omp simd
      for (int64_t i = 0; i < n; ++i) o[i] = passes<SIGN>(ms[i]) ? gv : zero;
    } else if (g.sc == 0 && g.sw == 0 && m.sc == 1) {  // a constant row (the gradient of .sum())
      const T gv = gs[0];
      for (int64_t x = 0; x < W; ++x) {
        const T* mx = ms + x * m.sw;
        T* ox = o + x * ch;
#pragma omp simd
        for (int64_t c = 0; c < g.C; ++c) ox[c] = passes<SIGN>(mx[c]) ? gv : zero;
      }
    } else {
      // any strides: gather gradient and mask into pixel-major rows (plain copies), then
      // select branch-free (a branch on a random ReLU mask mispredicts half the time)
      T* mrow_buf = gather_.data();
      for (int64_t c = 0; c < g.C; ++c) {
        const T* gc = gs + c * g.sc;
        const T* mc = ms + c * m.sc;
        for (int64_t x = 0; x < W; ++x) {
          o[x * ch + c] = gc[x * g.sw];
          mrow_buf[x * g.C + c] = mc[x * m.sw];
        }
      }
      for (int64_t x = 0; x < W; ++x) {
        T* ox = o + x * ch;
        const T* mx = mrow_buf + x * g.C;
#pragma omp simd
        for (int64_t c = 0; c < g.C; ++c) ox[c] = passes<SIGN>(mx[c]) ? ox[c] : zero;
      }
    }
  }

  // Row y of a tensor (its first C channels) into a store row of ch channels per pixel.
  void load_image_row(const ImageView<T>& im, int64_t y, T* o, int64_t ch) const {
    const T* src = im.data + y * im.sh;
    if (prefetch_enabled()) prefetch_image_row(im, y + 1);
    if (im.sc == 1 && im.sw == im.C && ch == im.C) {  // dense channels-last row: one copy
      std::copy(src, src + W_ * im.C, o);
    } else if (im.sc == 1) {  // channels-last: pixel by pixel, channels contiguous
      for (int64_t x = 0; x < W_; ++x) {
        const T* sx = src + x * im.sw;
        T* ox = o + x * ch;
#pragma omp simd
        for (int64_t c = 0; c < im.C; ++c) ox[c] = sx[c];
      }
    } else {
      for (int64_t c = 0; c < im.C; ++c) {
        const T* sc = src + c * im.sc;
        for (int64_t x = 0; x < W_; ++x) o[x * ch + c] = sc[x * im.sw];
      }
    }
  }

  // A dense channels-last row of cp channels per pixel in whole vectors (the fused epilogues' rows).
  bool dense_row(const ImageView<T>& im, int64_t cp) const {
    return im.sc == 1 && im.sw == im.C && cp == im.C && (W_ * cp) % 16 == 0;
  }
  static bool streams(const ImageView<T>& im, const T* row) {
    return im.stream && reinterpret_cast<uintptr_t>(row) % 64 == 0;
  }

  void write_image(const ImageView<T>& im, int64_t y, const T* acc, int64_t cp) const {
    if (im.sc == 1 && im.sw == im.C && cp == im.C) {  // dense channels-last row: one copy
#if defined(__AVX512F__)
      if constexpr (std::is_same<T, float>::value) {
        T* dst = im.data + y * im.sh;
        const int64_t n = W_ * cp;
        if (im.stream && reinterpret_cast<uintptr_t>(dst) % 64 == 0 && n % 16 == 0) {
          for (int64_t i = 0; i < n; i += 16) _mm512_stream_ps(dst + i, _mm512_loadu_ps(acc + i));
          return;
        }
      }
#endif
      std::copy(acc, acc + W_ * cp, im.data + y * im.sh);
    } else if (im.sc == 1) {
      T* base = im.data + y * im.sh;
      for (int64_t x = 0; x < W_; ++x) {
        T* o = base + x * im.sw;
        const T* a = acc + x * cp;
#pragma omp simd
        for (int64_t c = 0; c < im.C; ++c) o[c] = a[c];
      }
    } else {
      for (int64_t c = 0; c < im.C; ++c) {
        T* o = im.data + c * im.sc + y * im.sh;
        const T* a = acc + c;
        for (int64_t x = 0; x < W_; ++x) o[x * im.sw] = a[x * cp];
      }
    }
  }

 private:
  int64_t H_, W_, pad_, rpad_;
  bool fused_epi_ = true;
  bool winograd_ok_ = true;
  int64_t max_coutp_ = 16;
  int64_t zero_chmax_ = 1;
  std::vector<StoreSpec> stores_;
  std::vector<Store> store_data_;
  std::vector<int64_t> caps_;
  std::vector<Layer<T>> layers_;
  std::vector<std::vector<std::pair<int, int64_t>>> consumers_;
  std::vector<T> zero_;
  std::vector<T> gather_;  // one pixel-major row of a strided tensor (LoadGradMask)
  std::vector<T> wino_scratch_;  // transformed gradient row Z of the Winograd weight gradient
};

}  // namespace rowpipe
}  // namespace derain
