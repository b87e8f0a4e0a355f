// The median of every output of one tile, by the algorithm that suits its window (the paths of
// median_kernel.cpp's description, step 3).
#pragma once

#include <cstdint>

#include "../../../config.h"
#include "huang.h"
#include "keys.h"
#include "perreault_hebert.h"
#include "small_window.h"
#include "tile.h"
#include "tracking.h"

namespace derain {
namespace median {

// One tile of outputs [y0, y0+th) x [x0, x0+tw) of one plane. `emit(y, x, src)` is
// called for every output with the selected source flat index (h*W + w), -1 for a
// zero pad, or -2 for a window containing a NaN.
template <typename scalar_t, typename count_t, typename Emit>
void median_tile(const scalar_t* xp, int64_t sH, int64_t sW, const Geometry& g, int64_t y0, int64_t x0,
                 int64_t th, int64_t tw, bool want_offsets,
                 Workspace<typename KeyInfo<scalar_t>::type, count_t>& ws, const Emit& emit) {
  const RankedRegion region = rank_region(xp, sH, sW, g, y0, x0, th, tw, want_offsets, ws);
  const int64_t n = g.kh * g.kw;
  if (n <= kSmallWindow) return small_window_tile(region, g, emit);
  // median tracking: region columns fit 8 bits
  if (sizeof(count_t) == 2 && region.RH < 0x7FFF && region.RW <= 0xFF && config::median_tracking())
    return tracking_tile(region, g, ws, emit);
  if (sizeof(count_t) == 2 && region.RH < 0xFFFF && region.RW < 0xFFFF)  // 16-bit per-row / column counts
    return perreault_hebert_tile(region, g, ws, emit);
  huang_tile<count_t>(region, g, ws, emit);
}

}  // namespace median
}  // namespace derain
