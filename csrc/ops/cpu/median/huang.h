// The median of large windows (over 65535 elements, or regions too large for 16-bit counts): a
// Huang sweep in snake order over a histogram of 32-rank bins with 32-bit counts, 2 kh updates per
// step, the median tracked from the previous one.
#pragma once

#include <cstdint>

#include "../common/simd.h"
#include "tile.h"

namespace derain {
namespace median {

constexpr int kFineBits = 5;  // 32 ranks per histogram bin
constexpr uint32_t kFine = 1u << kFineBits;

// A tile by the Huang sweep (count_t: the histogram's counts).
template <typename count_t, typename WS, typename Emit>
DERAIN_ALWAYS_INLINE void huang_tile(const RankedRegion& region, const Geometry& g, WS& ws, const Emit& emit) {
  const int64_t th = region.th, tw = region.tw, RH = region.RH, target = region.target;
  const uint32_t E = region.E;
  const uint32_t* rmap = region.rmap;
  auto select = [&](int64_t y, int64_t x, uint32_t m) { emit_rank(region, g, emit, y, x, m); };
  // histogram of the window's ranks, read in bins of kFine ranks; the state is the bin
  // of the median (mc), the count of ranks below it (lt) and inside it (cm)
  const uint32_t nBins = (E + kFine - 1) >> kFineBits;
  ws.fine.assign(static_cast<size_t>(nBins) << kFineBits, 0);
  count_t* fine = ws.fine.data();
  int64_t mc = 0, lt = 0, cm = 0;
  auto bin_count = [&](int64_t bin) -> int64_t {
    const count_t* fb = fine + (bin << kFineBits);
    uint32_t s = 0;
#pragma omp simd reduction(+ : s)
    for (uint32_t f = 0; f < kFine; ++f) s += fb[f];
    return s;
  };

  // replace ranks out[i] by in[i], i < len
  auto update = [&](const uint32_t* out, const uint32_t* in, int64_t len, int64_t stride) {
    const uint32_t lo = static_cast<uint32_t>(mc) << kFineBits;
    int32_t d_lt = 0, d_cm = 0;
    if (stride == 1) {
#pragma omp simd reduction(+ : d_lt, d_cm)
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

}  // namespace median
}  // namespace derain
