// CPU kernels of median_filter (forward) and median_filter_backward.
//
// Exact for every dtype, any odd kh x kw window, no quantisation of floats, cost
// per pixel nearly independent of k (O(kh) for windows over 65535 elements).
// Per tile of output pixels:
//
//  1. The tile's padded input region (tile + halo) maps, row by row and column
//     by column, onto a set of distinct source rows and columns (reflection and
//     replication repeat sources; a zero pad is one virtual element). The
//     distinct source elements are numbered in source order (flat index h*W+w;
//     the zero pad first).
//  2. Their order-preserving integer keys (floats: sign-flipped bits, -0 -> +0,
//     NaN above +inf) are radix-sorted, stably, so equal values keep source
//     order: element -> rank is a bijection onto 0..E-1 ordered by
//     (value, source index), the selection rule shared with the reference.
//  3. The window's median rank, by one of four paths:
//     - windows of at most 49 elements: nth_element over the window's ranks;
//     - windows of at most 65535 elements whose tile region is at most 255 columns
//       wide (kw <= 192): median tracking (track_tile) over position ranks (every
//       region position its own rank; copies of an element, the zero pad included,
//       take consecutive ones). The last output's median rank m and the count L of
//       window ranks below it are carried along a snake path; a step updates L by
//       comparing the entering / leaving column's ranks with m, and the new median is
//       found among the 256 ranks around m by one 8-bit in-window test per rank (64
//       ranks per AVX-512 compare) and a pdep select; longer moves scan on in blocks
//       of 64 ranks (DERAIN_MEDIAN_TRACK=0 turns this path off);
//     - other windows of at most 65535 elements: Perreault-Hebert over rank
//       bins (2048 bins of 2^shift ranks; 16-bit column histograms updated by one
//       element per column and row, the window's coarse histogram sliding by vector
//       adds, fine segments updated lazily, AVX-512 prefix searches with a scalar
//       fallback), then the exact rank inside the median's bin by counting each
//       of its (at most 2^shift) ranks' copies in the window: time nearly flat in k;
//     - larger windows: a Huang sweep (snake order) over a histogram of 32-rank
//       bins with 32-bit counts, 2*kh updates per step, the median tracked from
//       the previous one.
//  4. The median rank maps back to its source element: value for the forward,
//     flat index for the backward (which scatters the output gradient there).
//
// Windows containing a NaN (found with a prefix count of NaNs over the region)
// return NaN and select nothing. Tiles of all planes run in parallel
// (at::parallel_for). Argument checks with clear messages happen in Python
// (derain_kernels/ops/median.py); the TORCH_CHECKs guard direct torch.ops calls.
#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <algorithm>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <limits>
#include <string>
#include <type_traits>
#include <vector>

#if defined(__AVX512F__) || defined(__AVX512BW__) || defined(__AVX2__) || defined(__BMI2__)
#include <immintrin.h>
#endif

#define DERAIN_SIMD _Pragma("omp simd")
#define DERAIN_SIMD_REDUCE_FIRST _Pragma("omp simd reduction(+ : first)")
#define DERAIN_SIMD_REDUCE _Pragma("omp simd reduction(+ : s)")
#define DERAIN_SIMD_REDUCE2 _Pragma("omp simd reduction(+ : d_lt, d_cm)")
#define DERAIN_SIMD_REDUCE_C _Pragma("omp simd reduction(+ : c)")

namespace derain {
namespace {

enum class Pad { Reflect, Replicate, Zeros };

Pad parse_padding(c10::string_view padding) {
  if (padding == "reflect") return Pad::Reflect;
  if (padding == "replicate") return Pad::Replicate;
  if (padding == "zeros") return Pad::Zeros;
  TORCH_CHECK(false, "derain: padding must be one of 'reflect', 'replicate', 'zeros', got '",
              std::string(padding), "'");
  return Pad::Reflect;
}

// Source index in [0, n) of padded coordinate p (any integer), or -1 for a zero pad.
// Reflect is the periodic mirror of numpy.pad(mode="reflect"): period 2(n-1).
inline int64_t source_of(int64_t p, int64_t n, Pad pad) {
  if (p >= 0 && p < n) return p;
  if (pad == Pad::Zeros) return -1;
  if (pad == Pad::Replicate) return p < 0 ? 0 : n - 1;
  if (n == 1) return 0;
  const int64_t period = 2 * (n - 1);
  int64_t m = p % period;
  if (m < 0) m += period;
  return m < n ? m : period - m;
}

// ---- order-preserving keys ------------------------------------------------
inline uint32_t key_of(float v) {
  if (v != v) return 0xFFFFFFFFu;  // every NaN above +inf
  if (v == 0.0f) v = 0.0f;         // -0 == +0: ordered by source index
  uint32_t u;
  std::memcpy(&u, &v, 4);
  return (u & 0x80000000u) ? ~u : (u | 0x80000000u);
}
inline uint64_t key_of(double v) {
  if (v != v) return 0xFFFFFFFFFFFFFFFFull;
  if (v == 0.0) v = 0.0;
  uint64_t u;
  std::memcpy(&u, &v, 8);
  return (u & 0x8000000000000000ull) ? ~u : (u | 0x8000000000000000ull);
}
inline uint32_t key_of(uint8_t v) { return v; }
inline uint32_t key_of(at::Half v) { return key_of(static_cast<float>(v)); }
inline uint32_t key_of(at::BFloat16 v) { return key_of(static_cast<float>(v)); }

template <typename T> inline bool is_nan(T v) { return v != v; }
template <> inline bool is_nan<uint8_t>(uint8_t) { return false; }
inline bool is_nan(at::Half v) { return std::isnan(static_cast<float>(v)); }
inline bool is_nan(at::BFloat16 v) { return std::isnan(static_cast<float>(v)); }

template <typename T> struct KeyInfo { using type = uint32_t; static constexpr int bits = 32; };
template <> struct KeyInfo<double> { using type = uint64_t; static constexpr int bits = 64; };
template <> struct KeyInfo<uint8_t> { using type = uint32_t; static constexpr int bits = 8; };

// Stable LSD radix sort (11-bit digits) of ids 0..n-1 by key (`bits` significant
// low bits). Returns the buffer holding the sorted ids (ids_a or ids_b). Digits on
// which all keys agree are skipped.
constexpr int kDigitBits = 11;
constexpr uint32_t kDigits = 1u << kDigitBits;

template <typename key_t>
uint32_t* radix_sort_ids(key_t* keys_a, key_t* keys_b, uint32_t* ids_a, uint32_t* ids_b, uint32_t n, int bits) {
  const int passes = (bits + kDigitBits - 1) / kDigitBits;
  std::vector<uint32_t> counts_buf(static_cast<size_t>(passes) * kDigits, 0);
  uint32_t* counts = counts_buf.data();
  for (uint32_t i = 0; i < n; ++i) {
    const key_t k = keys_a[i];
    ids_a[i] = i;
    for (int b = 0; b < passes; ++b) counts[b * kDigits + ((k >> (kDigitBits * b)) & (kDigits - 1))]++;
  }
  for (int b = 0; b < passes; ++b) {
    uint32_t* c = counts + b * kDigits;
    const int shift = kDigitBits * b;
    if (c[(keys_a[0] >> shift) & (kDigits - 1)] == n) continue;  // all keys share this digit
    uint32_t sum = 0;
    for (uint32_t d = 0; d < kDigits; ++d) { const uint32_t t = c[d]; c[d] = sum; sum += t; }
    for (uint32_t i = 0; i < n; ++i) {
      const key_t k = keys_a[i];
      const uint32_t pos = c[(k >> shift) & (kDigits - 1)]++;
      keys_b[pos] = k;
      ids_b[pos] = ids_a[i];
    }
    std::swap(keys_a, keys_b);
    std::swap(ids_a, ids_b);
  }
  return ids_a;
}

constexpr int kFineBits = 5;  // 32 ranks per histogram bin
constexpr int64_t kSmallWindow = 49;
constexpr int kPHSegBits = 6, kPHSeg = 1 << kPHSegBits;   // 64 fine bins per coarse bin
constexpr int kPHCoarse = 32, kPHBins = kPHCoarse * kPHSeg;  // 2048 bins
  // windows up to 7x7 select directly
constexpr uint32_t kFine = 1u << kFineBits;

struct Geometry {
  int64_t H, W, kh, kw, rh, rw;
  Pad pad;
};

// Per-thread scratch buffers, reused across tiles.
template <typename key_t, typename count_t>
struct Workspace {
  std::vector<int32_t> row_src, col_src, row_id, col_id, drows, dcols;
  std::vector<key_t> keys_a, keys_b;
  std::vector<uint32_t> ids_a, ids_b, rank_of_id, rmap;
  std::vector<int64_t> src_of_id;
  std::vector<count_t> fine;
  std::vector<int32_t> nan_prefix, realR, realC;
  std::vector<uint16_t> colc, colf, ra, cb, cntR, cntC;
  std::vector<int32_t> rowpos, colpos;
  std::vector<uint32_t> pos_of_rank;
  std::vector<uint8_t> vcol;  // median tracking
  std::vector<uint32_t> medians, prank;
  std::vector<int64_t> psrc;
};

// First index i of the 32 counts h[] at which acc + h[0] + ... + h[i] > target (the
// caller guarantees one exists); acc grows by the counts before it. Counts and their
// sums fit in uint16 (window sizes up to 65535).
#if defined(__AVX512BW__)
// Forced inline with the shuffle constants as plain locals: the sweep calls this twice
// per output; as an out-of-line call it paid a static-init guard check, six constant
// loads and a realigned stack frame every time (a quarter of the op's time in perf).
__attribute__((always_inline)) inline int find_in_32(const uint16_t* h, int64_t& acc, int64_t target) {
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

__attribute__((always_inline)) inline int find_in_64(const uint16_t* h, int64_t& acc, int64_t target) {
  uint32_t first = 0;
DERAIN_SIMD_REDUCE_FIRST
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

// ---- median tracking (see median_tile) ------------------------------------
constexpr int kTrackWords = 4;       // the window around the last median: 64 * kTrackWords ranks
constexpr int kTrackBlocks = 8;       // blocks of 64 ranks scanned before a restart
constexpr int kTrackCoarseShift = 8;  // the restart's histogram: bins of 256 ranks

// DERAIN_MEDIAN_TRACK=0 turns median tracking off (the Perreault-Hebert path runs instead).
inline bool median_tracking_enabled() {
  static const bool on = [] {
    const char* e = std::getenv("DERAIN_MEDIAN_TRACK");
    return !(e && e[0] == '0');
  }();
  return on;
}

// Number of col[0..len) below m.
__attribute__((always_inline)) inline int64_t count_below(const uint32_t* col, int64_t len, uint32_t m) {
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
DERAIN_SIMD_REDUCE_C
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
__attribute__((always_inline)) inline uint64_t in_range_mask(const uint8_t* p, uint8_t lo, uint8_t len) {
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

// Distinct sources of padded coordinates [lo, lo + len): ascending list, per-position id
// (-1 for a zero pad). Returns whether a zero pad occurs.
inline bool distinct_sources(int64_t lo, int64_t len, int64_t n, Pad pad, std::vector<int32_t>& src,
                             std::vector<int32_t>& id, std::vector<int32_t>& distinct) {
  src.resize(len);
  id.resize(len);
  bool zero = false;
  for (int64_t i = 0; i < len; ++i) {
    src[i] = static_cast<int32_t>(source_of(lo + i, n, pad));
    zero |= src[i] < 0;
  }
  distinct.clear();
  for (int64_t i = 0; i < len; ++i)
    if (src[i] >= 0) distinct.push_back(src[i]);
  std::sort(distinct.begin(), distinct.end());
  distinct.erase(std::unique(distinct.begin(), distinct.end()), distinct.end());
  for (int64_t i = 0; i < len; ++i)
    id[i] = src[i] < 0 ? -1
                       : static_cast<int32_t>(std::lower_bound(distinct.begin(), distinct.end(), src[i]) -
                                              distinct.begin());
  return zero;
}

// One tile of outputs [y0, y0+th) x [x0, x0+tw) of one plane. `emit(y, x, src)` is
// called for every output with the selected source flat index (h*W + w), -1 for a
// zero pad, or -2 for a window containing a NaN.
template <typename scalar_t, typename count_t, typename Emit>
void median_tile(const scalar_t* xp, int64_t sH, int64_t sW, const Geometry& g, int64_t y0, int64_t x0,
                 int64_t th, int64_t tw, bool want_offsets,
                 Workspace<typename KeyInfo<scalar_t>::type, count_t>& ws, const Emit& emit) {
  using key_t = typename KeyInfo<scalar_t>::type;
  const int64_t RH = th + g.kh - 1, RW = tw + g.kw - 1;
  const bool zr = distinct_sources(y0 - g.rh, RH, g.H, g.pad, ws.row_src, ws.row_id, ws.drows);
  const bool zc = distinct_sources(x0 - g.rw, RW, g.W, g.pad, ws.col_src, ws.col_id, ws.dcols);
  const uint32_t base = (zr || zc) ? 1 : 0;  // id 0: the zero pad, before real zeros
  const uint32_t nR = ws.drows.size(), nC = ws.dcols.size();
  const uint32_t E = base + nR * nC;

  ws.keys_a.resize(E);
  ws.keys_b.resize(E);
  ws.ids_a.resize(E);
  ws.ids_b.resize(E);
  ws.rank_of_id.resize(E);
  ws.src_of_id.resize(E);
  key_t* keys = ws.keys_a.data();
  int64_t* src_of_id = ws.src_of_id.data();  // memory offset (forward) or flat index (backward)
  bool any_nan = false;
  if (base) {
    keys[0] = key_of(scalar_t(0));
    src_of_id[0] = -1;
  }
  for (uint32_t a = 0; a < nR; ++a) {
    const int64_t h = ws.drows[a];
    const scalar_t* row = xp + h * sH;
    key_t* kr = keys + base + a * nC;
    int64_t* sr = src_of_id + base + a * nC;
    for (uint32_t b = 0; b < nC; ++b) {
      const int64_t w = ws.dcols[b];
      const scalar_t v = row[w * sW];
      any_nan |= is_nan(v);
      kr[b] = key_of(v);
      sr[b] = want_offsets ? h * sH + w * sW : h * g.W + w;
    }
  }
  const uint32_t* order = radix_sort_ids<key_t>(ws.keys_a.data(), ws.keys_b.data(), ws.ids_a.data(),
                                                ws.ids_b.data(), E, KeyInfo<scalar_t>::bits);
  uint32_t* rank_of_id = ws.rank_of_id.data();
  for (uint32_t r = 0; r < E; ++r) rank_of_id[order[r]] = r;

  // rank map of the region, column-major (columns are what a horizontal step reads)
  ws.rmap.resize(RH * RW);
  uint32_t* rmap = ws.rmap.data();
  for (int64_t j = 0; j < RW; ++j) {
    const int32_t cid = ws.col_id[j];
    uint32_t* col = rmap + j * RH;
    for (int64_t i = 0; i < RH; ++i) {
      const int32_t rid = ws.row_id[i];
      col[i] = (rid < 0 || cid < 0) ? rank_of_id[0] : rank_of_id[base + rid * nC + cid];
    }
  }

  // NaN counts of windows through a prefix sum (only when the region holds a NaN)
  int32_t* nanp = nullptr;
  const int64_t PW = RW + 1;
  if (any_nan) {
    ws.nan_prefix.assign((RH + 1) * PW, 0);
    nanp = ws.nan_prefix.data();
    for (int64_t i = 0; i < RH; ++i) {
      const int32_t rid = ws.row_id[i];
      int32_t run = 0;
      for (int64_t j = 0; j < RW; ++j) {
        const int32_t cid = ws.col_id[j];
        if (rid >= 0 && cid >= 0) run += is_nan(xp[ws.drows[rid] * sH + ws.dcols[cid] * sW]) ? 1 : 0;
        nanp[(i + 1) * PW + j + 1] = nanp[i * PW + j + 1] + run;
      }
    }
  }
  auto select = [&](int64_t y, int64_t x, uint32_t m) {
    if (nanp) {
      const int64_t c = nanp[(y + g.kh) * PW + x + g.kw] - nanp[y * PW + x + g.kw] -
                        nanp[(y + g.kh) * PW + x] + nanp[y * PW + x];
      if (c) { emit(y, x, int64_t(-2)); return; }
    }
    emit(y, x, src_of_id[order[m]]);
  };
  const int64_t n = g.kh * g.kw;
  const int64_t target = (n - 1) / 2;  // 0-based position of the median

  if (n <= kSmallWindow) {
    // small windows: the median moves far between neighbours; select directly
    uint32_t buf[kSmallWindow];
    for (int64_t y = 0; y < th; ++y)
      for (int64_t x = 0; x < tw; ++x) {
        int64_t q = 0;
        for (int64_t j = x; j < x + g.kw; ++j)
          for (int64_t i = y; i < y + g.kh; ++i) buf[q++] = rmap[j * RH + i];
        std::nth_element(buf, buf + target, buf + n);
        select(y, x, buf[target]);
      }
    return;
  }

  if (sizeof(count_t) == 2 && RH < 0x7FFF && RW <= 0xFF && median_tracking_enabled()) {
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
      if (nanp) {
        const int64_t c = nanp[(y + g.kh) * PW + x + g.kw] - nanp[y * PW + x + g.kw] -
                          nanp[(y + g.kh) * PW + x] + nanp[y * PW + x];
        if (c) { emit(y, x, int64_t(-2)); return; }
      }
      emit(y, x, psrc[m]);
    };
    track_tile(rmap, prank, RH, RW, g.kh, g.kw, th, tw, ws, target, select_position);
    return;
  }

  if (sizeof(count_t) == 2 && RH < 0xFFFF && RW < 0xFFFF) {  // 16-bit per-row / column counts
    // Perreault-Hebert over rank bins: column histograms of 2048 bins (32 coarse x 64
    // fine) per region column, updated by one element per column and output row; the
    // window's coarse histogram slides by one column per output (vector adds), its fine
    // segments are brought up to date lazily. The bin of the median is then resolved
    // to the exact rank among its (1 << shift) ranks by counting each rank's copies in
    // the window (multiplicities through per-row / per-column prefix counts).
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
DERAIN_SIMD
        for (int c = 0; c < kPHCoarse; ++c) hc[c] += cc[c];
      }
      const int64_t rows_real = realR[y + g.kh] - realR[y];
      for (int64_t x = 0; x < tw; ++x) {
        if (x > 0) {
          const uint16_t* ci = colc + (x + g.kw - 1) * kPHCoarse;
          const uint16_t* co = colc + (x - 1) * kPHCoarse;
DERAIN_SIMD
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
DERAIN_SIMD
            for (int f = 0; f < kPHSeg; ++f) seg[f] += cf[f];
          }
        } else {
          for (int64_t p = seg_pos[c] + 1; p <= x; ++p) {
            const uint16_t* ci = colf + (p + g.kw - 1) * kPHBins + (c << kPHSegBits);
            const uint16_t* co = colf + (p - 1) * kPHBins + (c << kPHSegBits);
DERAIN_SIMD
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
    return;
  }

  // histogram of the window's ranks, read in bins of kFine ranks; the state is the bin
  // of the median (mc), the count of ranks below it (lt) and inside it (cm)
  const uint32_t nBins = (E + kFine - 1) >> kFineBits;
  ws.fine.assign(static_cast<size_t>(nBins) << kFineBits, 0);
  count_t* fine = ws.fine.data();
  int64_t mc = 0, lt = 0, cm = 0;
  auto bin_count = [&](int64_t bin) -> int64_t {
    const count_t* fb = fine + (bin << kFineBits);
    uint32_t s = 0;
DERAIN_SIMD_REDUCE
    for (uint32_t f = 0; f < kFine; ++f) s += fb[f];
    return s;
  };

  // replace ranks out[i] by in[i], i < len
  auto update = [&](const uint32_t* out, const uint32_t* in, int64_t len, int64_t stride) {
    const uint32_t lo = static_cast<uint32_t>(mc) << kFineBits;
    int32_t d_lt = 0, d_cm = 0;
    if (stride == 1) {
DERAIN_SIMD_REDUCE2
      for (int64_t i = 0; i < len; ++i) {
        const uint32_t ro = out[i], ri = in[i];
        d_lt += static_cast<int32_t>(ri < lo) - static_cast<int32_t>(ro < lo);
        d_cm += static_cast<int32_t>(ri - lo < kFine) - static_cast<int32_t>(ro - lo < kFine);
      }
      for (int64_t i = 0; i < len; ++i) {
        fine[out[i]]--;
        fine[in[i]]++;
      }
    } else {
      for (int64_t i = 0; i < len; ++i) {
        const uint32_t ro = out[i * stride], ri = in[i * stride];
        d_lt += static_cast<int32_t>(ri < lo) - static_cast<int32_t>(ro < lo);
        d_cm += static_cast<int32_t>(ri - lo < kFine) - static_cast<int32_t>(ro - lo < kFine);
        fine[ro]--;
        fine[ri]++;
      }
    }
    lt += d_lt;
    cm += d_cm;
  };
  auto find = [&]() -> uint32_t {
    while (lt > target) { --mc; cm = bin_count(mc); lt -= cm; }
    while (lt + cm <= target) { lt += cm; ++mc; cm = bin_count(mc); }
    const count_t* fb = fine + (mc << kFineBits);
    uint32_t f;
    if (2 * (target - lt) < cm) {
      int64_t acc = lt + fb[0];
      f = 0;
      while (acc <= target) acc += fb[++f];
    } else {
      int64_t acc = lt + cm - fb[kFine - 1];
      f = kFine - 1;
      while (acc > target) acc -= fb[--f];
    }
    return (static_cast<uint32_t>(mc) << kFineBits) + f;
  };

  for (int64_t j = 0; j < g.kw; ++j)
    for (int64_t i = 0; i < g.kh; ++i) fine[rmap[j * RH + i]]++;
  cm = bin_count(0);
  int64_t x = 0;
  for (int64_t y = 0; y < th; ++y) {
    if (y > 0)  // step down: row y-1 leaves, row y+kh-1 enters, in the window's columns
      update(rmap + x * RH + y - 1, rmap + x * RH + y + g.kh - 1, g.kw, RH);
    select(y, x, find());
    if ((y & 1) == 0) {
      for (x = x + 1; x < tw; ++x) {
        update(rmap + (x - 1) * RH + y, rmap + (x + g.kw - 1) * RH + y, g.kh, 1);
        select(y, x, find());
      }
      x = tw - 1;
    } else {
      for (x = x - 1; x >= 0; --x) {
        update(rmap + (x + g.kw) * RH + y, rmap + x * RH + y, g.kh, 1);
        select(y, x, find());
      }
      x = 0;
    }
  }
}

// Offsets (in elements) of every (H, W) plane of t, for any strides.
std::vector<int64_t> plane_offsets(const at::Tensor& t) {
  const int64_t lead = t.dim() - 2;
  int64_t P = 1;
  for (int64_t d = 0; d < lead; ++d) P *= t.size(d);
  std::vector<int64_t> off(P);
  std::vector<int64_t> idx(lead, 0);
  for (int64_t p = 0; p < P; ++p) {
    int64_t o = 0;
    for (int64_t d = 0; d < lead; ++d) o += idx[d] * t.stride(d);
    off[p] = o;
    for (int64_t d = lead - 1; d >= 0; --d) {
      if (++idx[d] < t.size(d)) break;
      idx[d] = 0;
    }
  }
  return off;
}

Geometry make_geometry(const at::Tensor& x, at::IntArrayRef kernel_size, c10::string_view padding) {
  TORCH_CHECK(x.dim() >= 2, "derain: x must have at least 2 dimensions (..., H, W), got ", x.dim());
  TORCH_CHECK(kernel_size.size() == 2, "derain: kernel_size must have 2 elements");
  for (auto k : kernel_size)
    TORCH_CHECK(k >= 1 && k % 2 == 1, "derain: kernel_size must be odd and >= 1, got ", k);
  Geometry g;
  g.H = x.size(-2);
  g.W = x.size(-1);
  g.kh = kernel_size[0];
  g.kw = kernel_size[1];
  g.rh = g.kh / 2;
  g.rw = g.kw / 2;
  g.pad = parse_padding(padding);
  TORCH_CHECK(g.kh * g.kw < (int64_t(1) << 31), "derain: kernel_size too large");
  return g;
}

// Tile side: large tiles amortise the halo; the region (tile + halo) stays small
// enough for the rank map and histogram to live in L2.
inline int64_t env_int(const char* name) {
  const char* e = std::getenv(name);
  return e ? std::atoll(e) : 0;
}
inline int64_t tile_height(int64_t k) {
  static const int64_t forced = env_int("DERAIN_MEDIAN_TH");
  if (forced > 0) return forced;
  return k <= 63 ? 128 : std::max<int64_t>(32, 192 - k);
}
// The Perreault-Hebert path keeps a 4 KiB histogram per region column: narrow tiles.
inline int64_t tile_width(int64_t k, bool column_histograms) {
  static const int64_t forced = env_int("DERAIN_MEDIAN_TW");
  if (forced > 0) return forced;
  if (column_histograms) return 64;
  return k <= 63 ? 128 : std::max<int64_t>(32, 192 - k);
}

// Runs the selection over all tiles of all planes in parallel.
// emit_plane(p) returns an Emit callable for plane p.
template <typename scalar_t, typename MakeEmit>
void for_each_selection(const at::Tensor& x, const Geometry& g, bool want_offsets, const MakeEmit& make_emit) {
  const auto offs = plane_offsets(x);
  const int64_t P = offs.size();
  const int64_t n = g.kh * g.kw;
  const bool column_histograms = n > kSmallWindow && n <= 65535;
  const int64_t TH = std::min(g.H, tile_height(g.kh)), TW = std::min(g.W, tile_width(g.kw, column_histograms));
  const int64_t nty = (g.H + TH - 1) / TH, ntx = (g.W + TW - 1) / TW;
  const int64_t ntasks = P * nty * ntx;
  const scalar_t* xd = x.const_data_ptr<scalar_t>();
  const int64_t sH = x.stride(-2), sW = x.stride(-1);
  using key_t = typename KeyInfo<scalar_t>::type;
  auto run = [&](auto count_tag) {
    using count_t = decltype(count_tag);
    // small problems run on the calling thread: waking the pool costs more than they do
    const int64_t grain = P * g.H * g.W < 32768 ? ntasks : 1;
    at::parallel_for(0, ntasks, grain, [&](int64_t begin, int64_t end) {
      Workspace<key_t, count_t> ws;
      for (int64_t t = begin; t < end; ++t) {
        const int64_t p = t / (nty * ntx), ty = (t / ntx) % nty, tx = t % ntx;
        const int64_t y0 = ty * TH, x0 = tx * TW;
        const int64_t th = std::min(TH, g.H - y0), tw = std::min(TW, g.W - x0);
        auto emit = make_emit(p, y0, x0);
        median_tile<scalar_t, count_t>(xd + offs[p], sH, sW, g, y0, x0, th, tw, want_offsets, ws, emit);
      }
    });
  };
  if (n <= 65535) run(uint16_t{});
  else run(uint32_t{});
}

at::Tensor median_filter_cpu(const at::Tensor& x, at::IntArrayRef kernel_size, c10::string_view padding) {
  const Geometry g = make_geometry(x, kernel_size, padding);
  at::Tensor out = at::empty_like(x, at::MemoryFormat::Preserve);
  if (x.numel() == 0) return out;
  AT_DISPATCH_FLOATING_TYPES_AND3(at::kHalf, at::kBFloat16, at::kByte, x.scalar_type(), "median_filter", [&] {
    const auto out_offs = plane_offsets(out);
    scalar_t* od = out.mutable_data_ptr<scalar_t>();
    const scalar_t* xd = x.const_data_ptr<scalar_t>();
    const auto x_offs = plane_offsets(x);
    const int64_t oH = out.stride(-2), oW = out.stride(-1);
    const scalar_t nan_value = std::numeric_limits<scalar_t>::quiet_NaN();
    for_each_selection<scalar_t>(x, g, true, [&](int64_t p, int64_t y0, int64_t x0) {
      scalar_t* o = od + out_offs[p] + y0 * oH + x0 * oW;
      const scalar_t* xp = xd + x_offs[p];
      return [=](int64_t y, int64_t xx, int64_t src) {
        o[y * oH + xx * oW] = src >= 0 ? xp[src] : (src == -1 ? scalar_t(0) : nan_value);
      };
    });
  });
  return out;
}

at::Tensor median_filter_backward_cpu(const at::Tensor& grad, const at::Tensor& x, at::IntArrayRef kernel_size,
                                      c10::string_view padding) {
  const Geometry g = make_geometry(x, kernel_size, padding);
  TORCH_CHECK(grad.sizes().equals(x.sizes()), "derain: grad must have the shape of x, got ", grad.sizes(),
              " and ", x.sizes());
  TORCH_CHECK(grad.scalar_type() == x.scalar_type() && at::isFloatingType(x.scalar_type()),
              "derain: grad and x must be floating tensors of the same dtype, got ", grad.scalar_type(), " and ",
              x.scalar_type());
  at::Tensor gx = at::zeros_like(x, at::MemoryFormat::Preserve);
  if (x.numel() == 0) return gx;
  const int64_t HW = g.H * g.W;
  const int64_t P = x.numel() / HW;
  // 1. the selected source of every output, 2. scatter per plane (serial within a plane)
  at::Tensor sel = at::empty({P, g.H, g.W}, x.options().dtype(at::kInt));
  int32_t* sd = sel.mutable_data_ptr<int32_t>();
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, x.scalar_type(), "median_filter_backward", [&] {
    const int64_t W = g.W;
    for_each_selection<scalar_t>(x, g, false, [&](int64_t p, int64_t y0, int64_t x0) {
      int32_t* s = sd + p * HW + y0 * W + x0;
      return [=](int64_t y, int64_t xx, int64_t src) { s[y * W + xx] = static_cast<int32_t>(src); };
    });
    using acc_t = at::opmath_type<scalar_t>;
    const auto g_offs = plane_offsets(grad);
    const auto x_offs = plane_offsets(gx);
    const scalar_t* gd = grad.const_data_ptr<scalar_t>();
    scalar_t* xd = gx.mutable_data_ptr<scalar_t>();
    const int64_t gH = grad.stride(-2), gW = grad.stride(-1), xH = gx.stride(-2), xW = gx.stride(-1);
    at::parallel_for(0, P, HW * P < 32768 ? P : 1, [&](int64_t begin, int64_t end) {
      std::vector<acc_t> acc(HW);
      for (int64_t p = begin; p < end; ++p) {
        std::fill(acc.begin(), acc.end(), acc_t(0));
        const int32_t* s = sd + p * HW;
        const scalar_t* gp = gd + g_offs[p];
        for (int64_t y = 0; y < g.H; ++y)
          for (int64_t xx = 0; xx < W; ++xx) {
            const int32_t src = s[y * W + xx];
            if (src >= 0) acc[src] += acc_t(gp[y * gH + xx * gW]);
          }
        scalar_t* xp = xd + x_offs[p];
        for (int64_t y = 0; y < g.H; ++y)
          for (int64_t xx = 0; xx < W; ++xx) xp[y * xH + xx * xW] = scalar_t(acc[y * W + xx]);
      }
    });
  });
  return gx;
}

}  // namespace

TORCH_LIBRARY_IMPL(derain, CPU, m) {
  m.impl("median_filter", &median_filter_cpu);
  m.impl("median_filter_backward", &median_filter_backward_cpu);
}

}  // namespace derain
