// The median of small windows (at most kSmallWindow elements): nth_element over each window's
// ranks. The median moves far between neighbouring outputs of such windows, so nothing is carried
// from one output to the next.
#pragma once

#include <algorithm>
#include <cstdint>

#include "../common/simd.h"
#include "tile.h"

namespace derain {
namespace median {

constexpr int64_t kSmallWindow = 49;  // windows up to 7x7 select directly

template <typename Emit>
DERAIN_ALWAYS_INLINE void small_window_tile(const RankedRegion& region, const Geometry& g, const Emit& emit) {
  const int64_t th = region.th, tw = region.tw, RH = region.RH, target = region.target, n = g.kh * g.kw;
  const uint32_t* rmap = region.rmap;
  auto select = [&](int64_t y, int64_t x, uint32_t m) { emit_rank(region, g, emit, y, x, m); };
  uint32_t buf[kSmallWindow];
  for (int64_t y = 0; y < th; ++y)
    for (int64_t x = 0; x < tw; ++x) {
      int64_t q = 0;
      for (int64_t j = x; j < x + g.kw; ++j)
        for (int64_t i = y; i < y + g.kh; ++i) buf[q++] = rmap[j * RH + i];
      std::nth_element(buf, buf + target, buf + n);
      select(y, x, buf[target]);
    }
}

}  // namespace median
}  // namespace derain
