// The median by Perreault-Hebert over rank bins, for windows of at most 65535 elements that median
// tracking does not take: time nearly flat in k. Prefix searches in AVX-512 with a scalar fallback.
#pragma once

#include <cstdint>

#include "../common/simd.h"
#include "tile.h"

namespace derain {
namespace median {

constexpr int kPHSegBits = 6, kPHSeg = 1 << kPHSegBits;   // 64 fine bins per coarse bin
constexpr int kPHCoarse = 32, kPHBins = kPHCoarse * kPHSeg;  // 2048 bins

// First index i of the 32 counts h[] at which acc + h[0] + ... + h[i] > target (the
// caller guarantees one exists); acc grows by the counts before it. Counts and their
// sums fit in uint16 (window sizes up to 65535).
#if defined(__AVX512BW__)
// Forced inline with the shuffle constants as plain locals: the sweep calls this twice
// per output; as an out-of-line call it paid a static-init guard check, six constant
// loads and a realigned stack frame every time (a quarter of the op's time in perf).
DERAIN_ALWAYS_INLINE int find_in_32(const uint16_t* h, int64_t& acc, int64_t target) {
  const __m512i idx1 = _mm512_set_epi16(30, 29, 28, 27, 26, 25, 24, 23, 22, 21, 20, 19, 18, 17, 16, 15, 14, 13,
                                        12, 11, 10, 9, 8, 7, 6, 5, 4, 3, 2, 1, 0, 0);
  const __m512i idx2 = _mm512_set_epi16(29, 28, 27, 26, 25, 24, 23, 22, 21, 20, 19, 18, 17, 16, 15, 14, 13, 12,
                                        11, 10, 9, 8, 7, 6, 5, 4, 3, 2, 1, 0, 0, 0);
  const __m512i idx4 = _mm512_set_epi16(27, 26, 25, 24, 23, 22, 21, 20, 19, 18, 17, 16, 15, 14, 13, 12, 11, 10,
                                        9, 8, 7, 6, 5, 4, 3, 2, 1, 0, 0, 0, 0, 0);
  const __m512i idx8 = _mm512_set_epi16(23, 22, 21, 20, 19, 18, 17, 16, 15, 14, 13, 12, 11, 10, 9, 8, 7, 6, 5,
                                        4, 3, 2, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0);
  __m512i v = _mm512_loadu_si512(h);
  v = _mm512_add_epi16(v, _mm512_maskz_permutexvar_epi16(0xFFFFFFFEu, idx1, v));
  v = _mm512_add_epi16(v, _mm512_maskz_permutexvar_epi16(0xFFFFFFFCu, idx2, v));
  v = _mm512_add_epi16(v, _mm512_maskz_permutexvar_epi16(0xFFFFFFF0u, idx4, v));
  v = _mm512_add_epi16(v, _mm512_maskz_permutexvar_epi16(0xFFFFFF00u, idx8, v));
  const __m512i idx16 = _mm512_set_epi16(15, 14, 13, 12, 11, 10, 9, 8, 7, 6, 5, 4, 3, 2, 1, 0, 0, 0, 0, 0, 0, 0,
                                         0, 0, 0, 0, 0, 0, 0, 0, 0, 0);
  v = _mm512_add_epi16(v, _mm512_maskz_permutexvar_epi16(0xFFFF0000u, idx16, v));
  const __mmask32 above = _mm512_cmpgt_epu16_mask(v, _mm512_set1_epi16(static_cast<int16_t>(target - acc)));
  const int i = __builtin_ctz(above);
  if (i > 0) {
    const __m512i at = _mm512_permutexvar_epi16(_mm512_set1_epi16(static_cast<int16_t>(i - 1)), v);
    acc += static_cast<uint16_t>(_mm_extract_epi16(_mm512_castsi512_si128(at), 0));
  }
  return i;
}
#else
inline int find_in_32(const uint16_t* h, int64_t& acc, int64_t target) {
  int i = 0;
  while (acc + h[i] <= target) acc += h[i++];
  return i;
}
#endif

DERAIN_ALWAYS_INLINE int find_in_64(const uint16_t* h, int64_t& acc, int64_t target) {
  uint32_t first = 0;
#pragma omp simd reduction(+ : first)
  for (int f = 0; f < 32; ++f) first += h[f];
  if (acc + first > target) return find_in_32(h, acc, target);
  acc += first;
  return 32 + find_in_32(h + 32, acc, target);
}

constexpr uint32_t kShared = 0xFFFFFFFFu, kAbsent = 0xFFFEFFFEu;
inline uint32_t nBinsPH(uint32_t E, int shift) { return ((E - 1) >> shift) + 1; }

// Index of the (n+1)-th set bit of mask (n < popcount(mask)).
inline uint32_t nth_set_bit(uint32_t mask, uint32_t n) {
#if defined(__BMI2__)
  return static_cast<uint32_t>(__builtin_ctz(_pdep_u32(1u << n, mask)));
#else
  for (uint32_t i = 0; i < n; ++i) mask &= mask - 1;
  return static_cast<uint32_t>(__builtin_ctz(mask));
#endif
}

// A tile by Perreault-Hebert over rank bins (16-bit per-row / column counts: RH, RW < 0xFFFF):
// column histograms of 2048 bins (32 coarse x 64
// fine) per region column, updated by one element per column and output row; the
// window's coarse histogram slides by one column per output (vector adds), its fine
// segments are brought up to date lazily. The bin of the median is then resolved
// to the exact rank among its (1 << shift) ranks by counting each rank's copies in
// the window (multiplicities through per-row / per-column prefix counts).
template <typename WS, typename Emit>
DERAIN_ALWAYS_INLINE void perreault_hebert_tile(const RankedRegion& region, const Geometry& g, WS& ws,
                                                const Emit& emit) {
  const int64_t th = region.th, tw = region.tw, RH = region.RH, RW = region.RW, target = region.target;
  const uint32_t base = region.base, nR = region.nR, nC = region.nC, E = region.E;
  const uint32_t* order = region.order;
  const uint32_t* rmap = region.rmap;
  auto select = [&](int64_t y, int64_t x, uint32_t m) { emit_rank(region, g, emit, y, x, m); };
  int shift = 0;
  while (((E - 1) >> shift) >= kPHBins) ++shift;
  ws.colc.assign(RW * kPHCoarse, 0);
  ws.colf.assign(RW * kPHBins, 0);
  uint16_t* colc = ws.colc.data();
  uint16_t* colf = ws.colf.data();
  // rank -> distinct row / column (0xFFFF: the zero pad)
  ws.ra.resize(E);
  ws.cb.resize(E);
  for (uint32_t r = 0; r < E; ++r) {
    const uint32_t id = order[r];
    if (id < base) { ws.ra[r] = 0xFFFF; ws.cb[r] = 0xFFFF; continue; }
    const uint32_t a = (id - base) / nC;
    ws.ra[r] = static_cast<uint16_t>(a);
    ws.cb[r] = static_cast<uint16_t>(id - base - a * nC);
  }
  // prefix counts: cntR[a * (RH+1) + i] = #region rows < i with distinct row a; realR: non-pad rows
  ws.cntR.assign(static_cast<size_t>(nR) * (RH + 1), 0);
  ws.cntC.assign(static_cast<size_t>(nC) * (RW + 1), 0);
  ws.realR.assign(RH + 1, 0);
  ws.realC.assign(RW + 1, 0);
  uint16_t* cntR = ws.cntR.data();
  uint16_t* cntC = ws.cntC.data();
  for (uint32_t a = 0; a < nR; ++a) {
    uint16_t* c = cntR + a * (RH + 1);
    for (int64_t i = 0; i < RH; ++i) c[i + 1] = c[i] + (ws.row_id[i] == static_cast<int32_t>(a));
  }
  for (uint32_t b = 0; b < nC; ++b) {
    uint16_t* c = cntC + b * (RW + 1);
    for (int64_t j = 0; j < RW; ++j) c[j + 1] = c[j] + (ws.col_id[j] == static_cast<int32_t>(b));
  }
  for (int64_t i = 0; i < RH; ++i) ws.realR[i + 1] = ws.realR[i] + (ws.row_id[i] >= 0);
  for (int64_t j = 0; j < RW; ++j) ws.realC[j + 1] = ws.realC[j] + (ws.col_id[j] >= 0);
  const uint16_t* ra = ws.ra.data();
  const uint16_t* cb = ws.cb.data();
  // rank -> region position (row << 16 | column) of an element that occurs once in the
  // region (one test decides whether it is in a window); kShared: it has copies (or is
  // the zero pad), count them; kAbsent: ranks past E in the last bin
  const bool fast_refine = shift <= 5 && RH < 0xFFFF && RW < 0xFFFF;
  if (fast_refine) {
    ws.rowpos.assign(nR, -1);
    ws.colpos.assign(nC, -1);
    for (int64_t i = 0; i < RH; ++i) {
      const int32_t a = ws.row_id[i];
      if (a >= 0) ws.rowpos[a] = ws.rowpos[a] == -1 ? static_cast<int32_t>(i) : -2;
    }
    for (int64_t j = 0; j < RW; ++j) {
      const int32_t b = ws.col_id[j];
      if (b >= 0) ws.colpos[b] = ws.colpos[b] == -1 ? static_cast<int32_t>(j) : -2;
    }
    ws.pos_of_rank.assign((static_cast<size_t>(nBinsPH(E, shift)) << shift), kAbsent);
    for (uint32_t r = 0; r < E; ++r) {
      if (ra[r] == 0xFFFF) { ws.pos_of_rank[r] = kShared; continue; }
      const int32_t pr = ws.rowpos[ra[r]], pc = ws.colpos[cb[r]];
      ws.pos_of_rank[r] = (pr < 0 || pc < 0) ? kShared : (static_cast<uint32_t>(pr) << 16 | static_cast<uint32_t>(pc));
    }
  }
  const uint32_t* pos_of_rank = ws.pos_of_rank.data();
  const int32_t* realR = ws.realR.data();
  const int32_t* realC = ws.realC.data();

  for (int64_t j = 0; j < RW; ++j)
    for (int64_t i = 0; i < g.kh; ++i) {
      const uint32_t b = rmap[j * RH + i] >> shift;
      colf[j * kPHBins + b]++;
      colc[j * kPHCoarse + (b >> kPHSegBits)]++;
    }
  alignas(64) uint16_t hc[kPHCoarse];
  alignas(64) uint16_t hf[kPHBins];
  int64_t seg_pos[kPHCoarse];
  for (int64_t y = 0; y < th; ++y) {
    if (y > 0) {
      for (int64_t j = 0; j < RW; ++j) {
        const uint32_t bo = rmap[j * RH + y - 1] >> shift, bi = rmap[j * RH + y + g.kh - 1] >> shift;
        colf[j * kPHBins + bo]--;
        colc[j * kPHCoarse + (bo >> kPHSegBits)]--;
        colf[j * kPHBins + bi]++;
        colc[j * kPHCoarse + (bi >> kPHSegBits)]++;
      }
    }
    for (int c = 0; c < kPHCoarse; ++c) { hc[c] = 0; seg_pos[c] = -(int64_t(1) << 40); }
    for (int64_t j = 0; j < g.kw; ++j) {
      const uint16_t* cc = colc + j * kPHCoarse;
#pragma omp simd
      for (int c = 0; c < kPHCoarse; ++c) hc[c] += cc[c];
    }
    const int64_t rows_real = realR[y + g.kh] - realR[y];
    for (int64_t x = 0; x < tw; ++x) {
      if (x > 0) {
        const uint16_t* ci = colc + (x + g.kw - 1) * kPHCoarse;
        const uint16_t* co = colc + (x - 1) * kPHCoarse;
#pragma omp simd
        for (int c = 0; c < kPHCoarse; ++c) hc[c] = hc[c] + ci[c] - co[c];
      }
      int64_t acc = 0;
      const int c = find_in_32(hc, acc, target);
      uint16_t* seg = hf + (c << kPHSegBits);
      const int64_t behind = x - seg_pos[c];
      if (behind >= g.kw) {
        for (int f = 0; f < kPHSeg; ++f) seg[f] = 0;
        for (int64_t j = x; j < x + g.kw; ++j) {
          const uint16_t* cf = colf + j * kPHBins + (c << kPHSegBits);
#pragma omp simd
          for (int f = 0; f < kPHSeg; ++f) seg[f] += cf[f];
        }
      } else {
        for (int64_t p = seg_pos[c] + 1; p <= x; ++p) {
          const uint16_t* ci = colf + (p + g.kw - 1) * kPHBins + (c << kPHSegBits);
          const uint16_t* co = colf + (p - 1) * kPHBins + (c << kPHSegBits);
#pragma omp simd
          for (int f = 0; f < kPHSeg; ++f) seg[f] = seg[f] + ci[f] - co[f];
        }
      }
      seg_pos[c] = x;
      const int f = find_in_64(seg, acc, target);
      // exact rank inside bin (c, f): count copies of each of its ranks in the window
      const uint32_t bin = (static_cast<uint32_t>(c) << kPHSegBits) + f;
      uint32_t q = bin << shift;
      int64_t rest = target - acc;
      if (fast_refine) {
        const uint32_t* pq = pos_of_rank + q;
        const uint32_t nb = 1u << shift;
        uint32_t in = 0, shared = 0;
        const uint32_t uy = static_cast<uint32_t>(y), ux = static_cast<uint32_t>(x);
        const uint32_t ukh = static_cast<uint32_t>(g.kh), ukw = static_cast<uint32_t>(g.kw);
        for (uint32_t i = 0; i < nb; ++i) {
          const uint32_t p = pq[i];
          in |= static_cast<uint32_t>(((p >> 16) - uy < ukh) & ((p & 0xFFFFu) - ux < ukw)) << i;
          shared |= static_cast<uint32_t>(p == kShared) << i;
        }
        if (!shared) {
          select(y, x, q + nth_set_bit(in, static_cast<uint32_t>(rest)));
          continue;
        }
      }
      for (;; ++q) {
        int64_t m;
        if (ra[q] == 0xFFFF) {
          m = g.kh * g.kw - rows_real * (realC[x + g.kw] - realC[x]);
        } else {
          const uint16_t* rr = cntR + ra[q] * (RH + 1);
          const uint16_t* cc = cntC + cb[q] * (RW + 1);
          m = int64_t(rr[y + g.kh] - rr[y]) * int64_t(cc[x + g.kw] - cc[x]);
        }
        if (rest < m) break;
        rest -= m;
      }
      select(y, x, q);
    }
  }
}

}  // namespace median
}  // namespace derain
