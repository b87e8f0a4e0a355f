// The GPU's median selection: one thread block per tile of output pixels, work shared through
// ranks (csrc/ops/cuda/median.cu runs it; EmulateLaunch::blocks runs the same phases on the CPU,
// so tests/test_cuda_logic.py checks it without a GPU). Design and work per pixel:
// docs/design/median.md#on-the-gpu.
//
// Per block, tile = tw x th outputs of one plane, region = the tile's padded input,
// (tw + kw - 1) x (th + kh - 1) = n positions, in shared memory:
//  1. load: every region position gets a 64-bit sort key, (value key << 32) | (source index + 1):
//     the documented order (value, then flat source index; a zero pad is value 0, index -1), with
//     every NaN above every value. Sentinels fill the keys up to np, a power of two.
//  2. sort: a bitonic network over (key, position), log2(np)(log2(np)+1)/2 stages, one
//     block-synchronised phase each. Sorted place = rank: unique per position, ordered as the
//     tie rule orders the elements (copies of one element tie, and either may be selected:
//     both give the same value and the same source).
//  3. ranks: rank_at[position] = its place; pos[place] stays the position of each rank.
//  4. select: a thread owns one output column of a segment of th / segments rows and slides a
//     kh x kw window down it, keeping a coarse histogram of the window's ranks (bins of `group`
//     ranks, super-bins of 16 bins): one row of kw ranks leaves and one enters per step. The
//     median rank's bin comes from the super-bins and bins; inside the bin, each of its `group`
//     ranks is tested for lying in the window through its position.
// Windows holding a NaN (ranks at or above nan_start) give NaN and select nothing (index -1).
#pragma once

#include <cstdint>

#include "host_device.h"
#include "median_keys.h"

namespace derain {
namespace logic {

constexpr int kMedianTileThreads = 64;
constexpr int kMedianTileMaxRegion = 8192;  // np at most: 80-96 KiB of shared memory
constexpr int kMedianTileBins = 256;        // histogram bins per thread
constexpr uint64_t kMedianSentinel = ~uint64_t(0);

struct MedianTileShape {
  int tw, th;      // output tile
  int rw, rh;      // region sides
  int n, np;       // region positions; np = power of two >= n
  int log_np;
  int group_log;   // log2 of the ranks per bin
  int segments;    // threads per output column; rows per thread = th / segments
  int64_t hist_off, pos_off, rank_off, nan_off, smem;  // shared memory layout, bytes
};

// The largest tile whose region fits kMedianTileMaxRegion positions; false when none does.
inline bool median_tile_shape(int64_t kh, int64_t kw, MedianTileShape* s) {
  static const int tiles[][2] = {{32, 32}, {32, 16}, {16, 16}, {16, 8}, {8, 8}};
  for (const auto& t : tiles) {
    const int64_t rw = t[0] + kw - 1, rh = t[1] + kh - 1;
    if (rw * rh > kMedianTileMaxRegion) continue;
    s->tw = t[0];
    s->th = t[1];
    s->rw = int(rw);
    s->rh = int(rh);
    s->n = int(rw * rh);
    s->log_np = 0;
    while ((1 << s->log_np) < s->n) ++s->log_np;
    if (s->log_np < 8) s->log_np = 8;
    s->np = 1 << s->log_np;
    s->group_log = s->log_np - 8;  // 256 bins
    s->segments = kMedianTileThreads / s->tw;
    // keys (8 * np bytes) are dead after step 3: the histograms reuse their space
    const int64_t hist = int64_t(kMedianTileBins) * kMedianTileThreads +
                         int64_t(kMedianTileBins / 16) * kMedianTileThreads * 2;
    const int64_t keys = 8 * int64_t(s->np) > hist ? 8 * int64_t(s->np) : hist;
    s->hist_off = 0;
    s->pos_off = keys;
    s->rank_off = s->pos_off + 2 * int64_t(s->np);
    s->nan_off = (s->rank_off + 2 * int64_t(s->n) + 7) / 8 * 8;
    s->smem = s->nan_off + 8;
    return true;
  }
  return false;
}

// The block's phases: 0 load, 1 .. stages sort, stages + 1 ranks, stages + 2 select.
template <typename T>
struct MedianTileFn {
  const T* x;        // (P, H, W) contiguous
  T* out;            // (P, H, W) contiguous, or null
  int32_t* index;    // (P, H, W): selected source h * W + w, -1 for none; or null
  int64_t H, W;
  int kh, kw, pad;
  int64_t tiles_y, tiles_x;
  MedianTileShape s;

  DERAIN_HOST_DEVICE int stages() const { return s.log_np * (s.log_np + 1) / 2; }
  DERAIN_HOST_DEVICE int phases() const { return stages() + 3; }

  DERAIN_HOST_DEVICE void operator()(int phase, int64_t block, int t, unsigned char* smem) const {
    uint64_t* keys = reinterpret_cast<uint64_t*>(smem);
    uint16_t* pos = reinterpret_cast<uint16_t*>(smem + s.pos_off);
    uint16_t* rank_at = reinterpret_cast<uint16_t*>(smem + s.rank_off);
    int32_t* nan_start = reinterpret_cast<int32_t*>(smem + s.nan_off);
    const int64_t plane = block / (tiles_y * tiles_x);
    const int64_t y0 = (block / tiles_x) % tiles_y * s.th, x0 = block % tiles_x * s.tw;
    if (phase == 0) {
      load(plane, y0, x0, t, keys, pos, nan_start);
    } else if (phase <= stages()) {
      sort_stage(phase - 1, t, keys, pos);
    } else if (phase == stages() + 1) {
      ranks(t, keys, pos, rank_at, nan_start);
    } else {
      select(plane, y0, x0, t, smem + s.hist_off, pos, rank_at, *nan_start);
    }
  }

  // Source (plane index, or -1 for a zero pad) of region position (py, px).
  DERAIN_HOST_DEVICE int64_t source(int64_t y0, int64_t x0, int py, int px) const {
    const int64_t sy = source_index(y0 - kh / 2 + py, H, pad), sx = source_index(x0 - kw / 2 + px, W, pad);
    return (sy < 0 || sx < 0) ? -1 : sy * W + sx;
  }

  DERAIN_HOST_DEVICE void load(int64_t plane, int64_t y0, int64_t x0, int t, uint64_t* keys, uint16_t* pos,
                               int32_t* nan_start) const {
    const T* xp = x + plane * H * W;
    for (int i = t; i < s.np; i += kMedianTileThreads) {
      pos[i] = uint16_t(i);
      if (i >= s.n) {
        keys[i] = kMedianSentinel;
        continue;
      }
      const int py = i / s.rw, px = i - py * s.rw;
      const int64_t src = source(y0, x0, py, px);
      const T v = src >= 0 ? xp[src] : T(0);
      const uint32_t key = median_is_nan(v) ? 0xFFFFFFFFu : MedianKeyOf<T>::key(v);
      keys[i] = (uint64_t(key) << 32) | uint64_t(uint32_t(src + 1));
    }
    if (t == 0) *nan_start = s.np;
  }

  // Stage `st` of the bitonic network: (size, stride) in the order the network runs them.
  DERAIN_HOST_DEVICE void sort_stage(int st, int t, uint64_t* keys, uint16_t* pos) const {
    int size_log = 1;
    while (st >= size_log) {
      st -= size_log;
      ++size_log;
    }
    const int size = 1 << size_log, stride = size >> (st + 1);
    for (int i = t; i < s.np / 2; i += kMedianTileThreads) {
      const int lo = 2 * stride * (i / stride) + i % stride, hi = lo + stride;
      const bool ascending = (lo & size) == 0;
      const uint64_t a = keys[lo], b = keys[hi];
      if ((a > b) == ascending) {
        keys[lo] = b;
        keys[hi] = a;
        const uint16_t p = pos[lo];
        pos[lo] = pos[hi];
        pos[hi] = p;
      }
    }
  }

  DERAIN_HOST_DEVICE void ranks(int t, const uint64_t* keys, const uint16_t* pos, uint16_t* rank_at,
                                int32_t* nan_start) const {
    for (int i = t; i < s.np; i += kMedianTileThreads) {
      if (pos[i] < s.n) rank_at[pos[i]] = uint16_t(i);
      // NaNs and sentinels have key 0xFFFFFFFF: the first of them starts the NaN ranks
      const bool top = (keys[i] >> 32) == 0xFFFFFFFFu;
      if (top && (i == 0 || (keys[i - 1] >> 32) != 0xFFFFFFFFu)) *nan_start = i;
    }
  }

  DERAIN_HOST_DEVICE void select(int64_t plane, int64_t y0, int64_t x0, int t, unsigned char* hist_mem,
                                 const uint16_t* pos, const uint16_t* rank_at, int nan_start) const {
    const int c = t % s.tw, rows = s.th / s.segments, r0 = t / s.tw * rows;
    if (x0 + c >= W || y0 + r0 >= H) return;
    // thread-minor layout: bin b of this thread at b * threads + t
    constexpr int TT = kMedianTileThreads;
    uint8_t* bins = hist_mem;
    uint16_t* supers = reinterpret_cast<uint16_t*>(hist_mem + kMedianTileBins * TT);
    for (int b = 0; b < kMedianTileBins; ++b) bins[b * TT + t] = 0;
    for (int b = 0; b < kMedianTileBins / 16; ++b) supers[b * TT + t] = 0;
    int nans = 0;
    auto add_row = [&](int py, int d) {
      const uint16_t* ra = rank_at + py * s.rw + c;
      for (int j = 0; j < kw; ++j) {
        const int r = ra[j], b = r >> s.group_log;
        bins[b * TT + t] = uint8_t(bins[b * TT + t] + d);
        supers[(b >> 4) * TT + t] = uint16_t(supers[(b >> 4) * TT + t] + d);
        nans += (r >= nan_start) ? d : 0;
      }
    };
    for (int py = r0; py < r0 + kh; ++py) add_row(py, 1);
    const int mid = (kh * kw - 1) / 2;
    const T* xp = x + plane * H * W;
    for (int r = r0; r < r0 + rows && y0 + r < H; ++r) {
      if (r > r0) {
        add_row(r - 1, -1);
        add_row(r + kh - 1, 1);
      }
      int64_t src = -1;
      if (nans == 0) {
        int acc = 0, b = 0;
        while (acc + supers[(b >> 4) * TT + t] <= mid) {
          acc += supers[(b >> 4) * TT + t];
          b += 16;
        }
        while (acc + bins[b * TT + t] <= mid) {
          acc += bins[b * TT + t];
          ++b;
        }
        int rem = mid - acc, sel = 0;
        for (int rr = b << s.group_log;; ++rr) {
          const int p = pos[rr];
          const int py = p / s.rw, px = p - py * s.rw;
          if (py >= r && py < r + kh && px >= c && px < c + kw) {
            if (rem == 0) {
              sel = p;
              break;
            }
            --rem;
          }
        }
        const int py = sel / s.rw;
        src = source(y0, x0, py, sel - py * s.rw);
      }
      const int64_t o = plane * H * W + (y0 + r) * W + x0 + c;
      if (out) out[o] = nans ? median_nan<T>() : (src >= 0 ? xp[src] : T(0));
      if (index) index[o] = int32_t(src);
    }
  }
};

}  // namespace logic
}  // namespace derain
