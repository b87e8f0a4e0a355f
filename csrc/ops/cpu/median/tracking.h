// The median by tracking (windows of at most 65535 elements whose tile region is at most 255
// columns wide): every region position its own rank, the last output's median rank carried along a
// snake path and moved by one 8-bit in-window test per rank (64 ranks per AVX-512 compare) and a
// pdep select.
#pragma once

#include <algorithm>
#include <cstdint>
#include <limits>
#include <vector>

#include "../common/simd.h"
#include "tile.h"

namespace derain {
namespace median {

constexpr int kTrackWords = 4;       // the window around the last median: 64 * kTrackWords ranks
constexpr int kTrackBlocks = 8;       // blocks of 64 ranks scanned before a restart
constexpr int kTrackCoarseShift = 8;  // the restart's histogram: bins of 256 ranks

// Number of col[0..len) below m.
DERAIN_ALWAYS_INLINE int64_t count_below(const uint32_t* col, int64_t len, uint32_t m) {
#if defined(__AVX512F__)
  const __m512i vm = _mm512_set1_epi32(static_cast<int>(m));
  int64_t c = 0, i = 0;
  for (; i + 16 <= len; i += 16)
    c += __builtin_popcount(_mm512_cmplt_epu32_mask(_mm512_loadu_si512(col + i), vm));
  if (i < len) {
    const __mmask16 k = static_cast<__mmask16>((1u << (len - i)) - 1);
    c += __builtin_popcount(_mm512_mask_cmplt_epu32_mask(k, _mm512_maskz_loadu_epi32(k, col + i), vm));
  }
  return c;
#else
  int64_t c = 0;
#pragma omp simd reduction(+ : c)
  for (int64_t i = 0; i < len; ++i) c += col[i] < m;
  return c;
#endif
}

// Index of the (n+1)-th set bit of a 64-bit mask (n < popcount(mask)).
inline uint32_t nth_set_bit64(uint64_t mask, uint32_t n) {
#if defined(__BMI2__)
  return static_cast<uint32_t>(__builtin_ctzll(_pdep_u64(uint64_t(1) << n, mask)));
#else
  uint32_t off = 0;  // narrow to the byte holding it, then clear lower set bits
  for (int half = 32; half >= 8; half /= 2) {
    const uint64_t low = mask & ((uint64_t(1) << half) - 1);
    const uint32_t c = static_cast<uint32_t>(__builtin_popcountll(low));
    if (n >= c) { n -= c; mask >>= half; off += half; } else { mask = low; }
  }
  for (uint32_t i = 0; i < n; ++i) mask &= mask - 1;
  return off + static_cast<uint32_t>(__builtin_ctzll(mask));
#endif
}

// Bit i: p[i] - lo < len (8-bit lanes, wrapping), i < 64.
DERAIN_ALWAYS_INLINE uint64_t in_range_mask(const uint8_t* p, uint8_t lo, uint8_t len) {
#if defined(__AVX512BW__)
  return _mm512_cmplt_epu8_mask(_mm512_sub_epi8(_mm512_loadu_si512(p), _mm512_set1_epi8(static_cast<char>(lo))),
                                _mm512_set1_epi8(static_cast<char>(len)));
#elif defined(__AVX2__)
  // unsigned a < len  <=>  min(a, len - 1) == a  (len >= 1)
  const __m256i vlo = _mm256_set1_epi8(static_cast<char>(lo)), vmax = _mm256_set1_epi8(static_cast<char>(len - 1));
  const __m256i a0 = _mm256_sub_epi8(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(p)), vlo);
  const __m256i a1 = _mm256_sub_epi8(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(p + 32)), vlo);
  const uint32_t m0 = static_cast<uint32_t>(_mm256_movemask_epi8(_mm256_cmpeq_epi8(_mm256_min_epu8(a0, vmax), a0)));
  const uint32_t m1 = static_cast<uint32_t>(_mm256_movemask_epi8(_mm256_cmpeq_epi8(_mm256_min_epu8(a1, vmax), a1)));
  return uint64_t(m0) | uint64_t(m1) << 32;
#else
  uint64_t m = 0;
  for (int i = 0; i < 64; ++i) m |= static_cast<uint64_t>(static_cast<uint8_t>(p[i] - lo) < len) << i;
  return m;
#endif
}

// One tile by median tracking, snake order. Every region position has its own rank
// (0..RH*RW-1): rmap holds them column-major, prank row-major. Per output row, vcol[r]
// is the region column of rank r when its row lies in the window's rows, 0xFF
// otherwise (region columns fit 8 bits), so rank r is in the window iff
// vcol[r] - x < kw: one 8-bit compare, 64 ranks per AVX-512 compare.
// State: the last output's median rank m and L = the window's ranks below m. A step
// updates L by comparing the entering and leaving column's (row's) ranks with m; the
// new median is then selected among the 64 * kTrackWords ranks around m (popcounts and
// a pdep); longer moves scan on in blocks of 64 ranks and restart from a coarse
// histogram of the window after kTrackBlocks blocks.
template <typename WS, typename Select>
void track_tile(const uint32_t* rmap, const uint32_t* prank, int64_t RH, int64_t RW, int64_t kh, int64_t kw,
                int64_t th, int64_t tw, WS& ws, int64_t target, const Select& select) {
  const uint32_t E = static_cast<uint32_t>(RH * RW);
  constexpr int64_t kPad = 64 * kTrackWords + 128;  // reads reach 32 * kTrackWords + 64 ranks past either end
  ws.vcol.assign(static_cast<size_t>(E) + 2 * kPad, 0xFF);
  uint8_t* V = ws.vcol.data() + kPad;
  auto set_row = [&](int64_t i, bool in) {
    const uint32_t* pr = prank + i * RW;
    for (int64_t j = 0; j < RW; ++j) V[pr[j]] = in ? static_cast<uint8_t>(j) : 0xFF;
  };
  for (int64_t i = 0; i < kh; ++i) set_row(i, true);

  const uint8_t ukw = static_cast<uint8_t>(kw);
  uint32_t m = 0;  // median rank of the last output
  int64_t L = 0;   // window ranks below m
  std::vector<uint32_t> hist_buf(((E - 1) >> kTrackCoarseShift) + 1);
  uint32_t* hist = hist_buf.data();
  auto restart = [&](int64_t y, int64_t x) {
    const uint32_t nb = ((E - 1) >> kTrackCoarseShift) + 1;
    std::fill(hist, hist + nb, 0u);
    for (int64_t j = x; j < x + kw; ++j) {
      const uint32_t* col = rmap + j * RH + y;
      for (int64_t i = 0; i < kh; ++i) hist[col[i] >> kTrackCoarseShift]++;
    }
    int64_t acc = 0;
    uint32_t c = 0;
    while (acc + hist[c] <= target) acc += hist[c++];
    m = c << kTrackCoarseShift;
    L = acc;
  };
  // the median of output (y, x), from the last one (m, with L updated to this window)
  auto resolve = [&](int64_t y, int64_t x) {
    const uint8_t ux = static_cast<uint8_t>(x);
    int64_t r0 = m;
    {  // the common case: the median lies within 32 * kTrackWords ranks of the last one
      const int64_t base = int64_t(m) - 32 * kTrackWords;
      uint64_t w[kTrackWords];
      int64_t cum[kTrackWords + 1];
      cum[0] = 0;
      for (int q = 0; q < kTrackWords; ++q) {
        w[q] = in_range_mask(V + base + 64 * q, ux, ukw);
        cum[q + 1] = cum[q] + __builtin_popcountll(w[q]);
      }
      const int64_t Lb = L - cum[kTrackWords / 2], need = target - Lb;  // Lb: window ranks below base
      if (need >= 0 && need < cum[kTrackWords]) {
        int q = 0;
        for (int i = 1; i < kTrackWords; ++i) q += int(need >= cum[i]);
        m = static_cast<uint32_t>(base + 64 * q + nth_set_bit64(w[q], static_cast<uint32_t>(need - cum[q])));
        L = Lb + need;
        return;
      }
      // continue the scan from the window's edge
      if (need < 0) { L = Lb; r0 = base; }
      else { L = Lb + cum[kTrackWords]; r0 = base + 64 * kTrackWords; }
    }
    int blocks = 0;
    uint64_t k = 0;
    bool found = false;
    if (L > target) {  // scan down: blocks [r0 - 64, r0)
      for (;;) {
        k = in_range_mask(V + r0 - 64, ux, ukw);
        L -= __builtin_popcountll(k);
        r0 -= 64;
        if (L <= target) { found = true; break; }
        if (++blocks > kTrackBlocks) { restart(y, x); r0 = m; blocks = std::numeric_limits<int>::min(); break; }
      }
    }
    if (!found) {  // scan up from r0
      for (;;) {
        k = in_range_mask(V + r0, ux, ukw);
        const int64_t T = __builtin_popcountll(k);
        if (L + T > target) break;
        L += T;
        r0 += 64;
        if (++blocks > kTrackBlocks) { restart(y, x); r0 = m; blocks = std::numeric_limits<int>::min(); }
      }
    }
    const int64_t need = target - L;
    m = static_cast<uint32_t>(r0) + nth_set_bit64(k, static_cast<uint32_t>(need));
    L += need;
  };

  // medians are written out after the sweep: the emit stays out of its latency chain
  ws.medians.resize(th * tw);
  uint32_t* med = ws.medians.data();
  restart(0, 0);
  int64_t x = 0;
  for (int64_t y = 0; y < th; ++y) {
    if (y > 0) {  // step down: row y-1 leaves, row y+kh-1 enters
      for (int64_t j = x; j < x + kw; ++j)
        L += int64_t(rmap[j * RH + y + kh - 1] < m) - int64_t(rmap[j * RH + y - 1] < m);
      set_row(y - 1, false);
      set_row(y + kh - 1, true);
    }
    resolve(y, x);
    med[y * tw + x] = m;
    if ((y & 1) == 0) {
      for (x = x + 1; x < tw; ++x) {
        L += count_below(rmap + (x + kw - 1) * RH + y, kh, m) - count_below(rmap + (x - 1) * RH + y, kh, m);
        resolve(y, x);
        med[y * tw + x] = m;
      }
      x = tw - 1;
    } else {
      for (x = x - 1; x >= 0; --x) {
        L += count_below(rmap + x * RH + y, kh, m) - count_below(rmap + (x + kw) * RH + y, kh, m);
        resolve(y, x);
        med[y * tw + x] = m;
      }
      x = 0;
    }
  }
  for (int64_t y = 0; y < th; ++y)
    for (int64_t xx = 0; xx < tw; ++xx) select(y, xx, med[y * tw + xx]);
}

// A tile by median tracking over position ranks.
template <typename WS, typename Emit>
DERAIN_ALWAYS_INLINE void tracking_tile(const RankedRegion& region, const Geometry& g, WS& ws, const Emit& emit) {
  const int64_t th = region.th, tw = region.tw, RH = region.RH, RW = region.RW, target = region.target;
  const uint32_t base = region.base, nR = region.nR, nC = region.nC, E = region.E;
  const uint32_t* rank_of_id = region.rank_of_id;
  const int64_t* src_of_id = region.src_of_id;
  uint32_t* rmap = region.rmap;
  // Median tracking over position ranks: every position of the region gets its own rank,
  // ordered by its element's rank (copies of one element, the zero pad included, take
  // consecutive ranks: which copy is selected does not change the selected element).
  // Then every rank has exactly one position and track_tile tests one column per rank.
  const uint32_t EP = static_cast<uint32_t>(RH * RW);
  // copies of each distinct row / column in the region
  ws.cntR.assign(nR, 0);
  ws.cntC.assign(nC, 0);
  int64_t pad_copies = 0;
  for (int64_t i = 0; i < RH; ++i)
    if (ws.row_id[i] >= 0) ws.cntR[ws.row_id[i]]++;
  for (int64_t j = 0; j < RW; ++j)
    if (ws.col_id[j] >= 0) ws.cntC[ws.col_id[j]]++;
  if (base) {
    int64_t real_rows = 0, real_cols = 0;
    for (uint32_t a = 0; a < nR; ++a) real_rows += ws.cntR[a];
    for (uint32_t b = 0; b < nC; ++b) real_cols += ws.cntC[b];
    pad_copies = RH * RW - real_rows * real_cols;
  }
  // first position rank of every element rank
  ws.pos_of_rank.resize(static_cast<size_t>(E) + 1);
  uint32_t* first = ws.pos_of_rank.data();
  if (base) first[rank_of_id[0]] = static_cast<uint32_t>(pad_copies);
  for (uint32_t a = 0; a < nR; ++a) {
    const uint32_t ra = ws.cntR[a];
    const uint32_t* rk = rank_of_id + base + a * nC;
    for (uint32_t b = 0; b < nC; ++b) first[rk[b]] = ra * ws.cntC[b];
  }
  uint32_t sum = 0;
  for (uint32_t r = 0; r < E; ++r) { const uint32_t c = first[r]; first[r] = sum; sum += c; }
  // position ranks: column-major (rmap) and row-major (prank); psrc: source of a position rank
  ws.prank.resize(EP);
  ws.psrc.resize(EP);
  uint32_t* prank = ws.prank.data();
  int64_t* psrc = ws.psrc.data();
  for (int64_t j = 0; j < RW; ++j) {
    const int32_t cid = ws.col_id[j];
    uint32_t* col = rmap + j * RH;
    for (int64_t i = 0; i < RH; ++i) {
      const int32_t rid = ws.row_id[i];
      const uint32_t id = (rid < 0 || cid < 0) ? 0 : base + rid * nC + cid;
      const uint32_t pr = first[rank_of_id[id]]++;
      col[i] = pr;
      prank[i * RW + j] = pr;
      psrc[pr] = src_of_id[id];
    }
  }
  auto select_position = [&](int64_t y, int64_t x, uint32_t m) {
    if (region.nanp && window_has_nan(region, g, y, x)) {
      emit(y, x, int64_t(-2));
      return;
    }
    emit(y, x, psrc[m]);
  };
  track_tile(rmap, prank, RH, RW, g.kh, g.kw, th, tw, ws, target, select_position);
}

}  // namespace median
}  // namespace derain
