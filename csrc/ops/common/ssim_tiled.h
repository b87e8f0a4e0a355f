// SSIM for the GPU in two tiled kernels (csrc/ops/cuda/ssim.cu runs them through ssim_impl.h;
// EmulateLaunch::blocks runs the same phases on the CPU for tests/test_cuda_logic.py):
//
//  A. SsimStatsTileFn, one thread block per 32 x 16 tile of the SSIM map: the tile's x and y
//     with their halo go to shared memory once, the horizontal blur of the 5 statistics
//     (x, y, x², y², xy) of every halo row is kept there, and each thread finishes the vertical
//     blur, the SSIM value and its 5 derivatives for its outputs: writes the map and/or the
//     derivatives times the incoming gradient weight, d (5, n).
//  B. SsimGradTileFn, one block per 32 x 16 tile of the input: d with its halo to shared memory,
//     the transposed vertical blur kept there, then the transposed horizontal blur and the chain
//     rule to gx and gy per pixel.
//
// Each value is the same sum in the same order as the per-element functors of ssim_impl.h
// (same taps, same skips of zero pads, the same ssim_transposed_taps), so the two paths agree
// bit for bit; the tiles only change where the operands come from (shared memory, loaded once
// per block, instead of global memory per tap). Included by ssim_impl.h after the per-element
// functions it shares (ssim_tap_source, ssim_stat, ssim_terms, ssim_store, ssim_transposed_taps).
// Design and work per pixel: docs/design/ssim.md.
#pragma once

#include <cmath>
#include <cstdint>

#include "host_device.h"

namespace derain {
namespace logic {

constexpr int kSsimTileW = 32, kSsimTileH = 16, kSsimThreads = 256;

// Normalised Gaussian taps w[k] for the k this thread writes (bit-identical to GaussianWindowFn).
template <typename T>
DERAIN_HOST_DEVICE inline void ssim_window_taps(T* w, int64_t K, double sigma, int t) {
  const int64_t r = K / 2;
  for (int64_t k = t; k < K; k += kSsimThreads) {
    double sum = 0;
    for (int64_t j = 0; j < K; ++j) sum += exp(-double((j - r) * (j - r)) / (2.0 * sigma * sigma));
    w[k] = T(exp(-double((k - r) * (k - r)) / (2.0 * sigma * sigma)) / sum);
  }
}

struct SsimTileGeom {
  int64_t P, H, W, Ho, Wo, K;
  int pad;
  int64_t tiles_y, tiles_x;
  // region: (kSsimTileH + K - 1) x (kSsimTileW + K - 1)
  DERAIN_HOST_DEVICE int64_t rh() const { return kSsimTileH + K - 1; }
  DERAIN_HOST_DEVICE int64_t rw() const { return kSsimTileW + K - 1; }
};

// Shared memory of the two kernels, in elements of T.
inline int64_t ssim_stats_tile_elems(const SsimTileGeom& g) {
  return g.K + 2 * g.rh() * g.rw() + 5 * g.rh() * kSsimTileW;
}
inline int64_t ssim_grad_tile_elems(const SsimTileGeom& g) {
  return g.K + 5 * g.rh() * g.rw() + 5 * int64_t(kSsimTileH) * g.rw();
}

template <typename T>
struct SsimStatsTileFn {
  const T* x;  // (P, H, W) contiguous
  const T* y;
  T* map;      // (P, Ho, Wo) or null
  T* d;        // (5, P, Ho, Wo) or null
  const T* gweight;
  int64_t per_weight;
  T scale, c1, c2;
  double sigma;
  SsimTileGeom g;

  DERAIN_HOST_DEVICE int phases() const { return 3; }

  DERAIN_HOST_DEVICE void operator()(int phase, int64_t block, int t, unsigned char* smem) const {
    const int64_t RH = g.rh(), RW = g.rw(), K = g.K;
    T* w = reinterpret_cast<T*>(smem);
    T* xs = w + K;
    T* ys = xs + RH * RW;
    T* hs = ys + RH * RW;  // (5, RH, kSsimTileW)
    const int64_t plane = block / (g.tiles_y * g.tiles_x);
    const int64_t oy0 = (block / g.tiles_x) % g.tiles_y * kSsimTileH, ox0 = block % g.tiles_x * kSsimTileW;
    // region rows / columns read by this tile's outputs
    const int64_t rows = (g.Ho - oy0 < kSsimTileH ? g.Ho - oy0 : kSsimTileH) + K - 1;
    const int64_t cols = (g.Wo - ox0 < kSsimTileW ? g.Wo - ox0 : kSsimTileW) + K - 1;
    if (phase == 0) {
      ssim_window_taps(w, K, sigma, t);
      const T* xp = x + plane * g.H * g.W;
      const T* yp = y + plane * g.H * g.W;
      for (int64_t i = t; i < RH * RW; i += kSsimThreads) {
        const int64_t py = i / RW, px = i % RW;
        int64_t sr = -1, sc = -1;
        if (py < rows && px < cols) {
          sr = ssim_tap_source(oy0, py, K, g.H, g.pad);  // = tap py - j of output oy0 + j
          sc = ssim_tap_source(ox0, px, K, g.W, g.pad);
        }
        const bool in = sr >= 0 && sc >= 0;
        xs[i] = in ? xp[sr * g.W + sc] : T(0);
        ys[i] = in ? yp[sr * g.W + sc] : T(0);
      }
    } else if (phase == 1) {  // horizontal blur of the 5 statistics, every region row
      for (int64_t i = t; i < RH * kSsimTileW; i += kSsimThreads) {
        const int64_t py = i / kSsimTileW, ox = i % kSsimTileW;
        if (py >= rows || ox0 + ox >= g.Wo) continue;
        const T* xr = xs + py * RW + ox;
        const T* yr = ys + py * RW + ox;
        T acc[5] = {T(0), T(0), T(0), T(0), T(0)};  // each sum in tap order, as SsimBlurRowsFn's
        for (int64_t k = 0; k < K; ++k) {
          if (ssim_tap_source(ox0 + ox, k, K, g.W, g.pad) < 0) continue;
          for (int s = 0; s < 5; ++s) acc[s] += w[k] * ssim_stat(s, xr[k], yr[k]);
        }
        for (int s = 0; s < 5; ++s) hs[(s * RH + py) * kSsimTileW + ox] = acc[s];
      }
    } else {  // vertical blur, SSIM and its derivatives per output
      const int64_t n = g.P * g.Ho * g.Wo;
      for (int64_t i = t; i < int64_t(kSsimTileH) * kSsimTileW; i += kSsimThreads) {
        const int64_t oy = i / kSsimTileW, ox = i % kSsimTileW;
        if (oy0 + oy >= g.Ho || ox0 + ox >= g.Wo) continue;
        T st[5];
        for (int s = 0; s < 5; ++s) {
          T acc = T(0);
          for (int64_t k = 0; k < K; ++k)
            if (ssim_tap_source(oy0 + oy, k, K, g.H, g.pad) >= 0)
              acc += w[k] * hs[(s * RH + oy + k) * kSsimTileW + ox];
          st[s] = acc;
        }
        ssim_store(ssim_terms(st[0], st[1], st[2], st[3], st[4], c1, c2), (plane * g.Ho + oy0 + oy) * g.Wo + ox0 + ox,
                   n, map, d, gweight, per_weight, scale);
      }
    }
  }
};

template <typename T>
struct SsimGradTileFn {
  const T* d;  // (5, P, Ho, Wo)
  const T* x;  // (P, H, W)
  const T* y;
  T* gx;       // (P, H, W) or null
  T* gy;
  double sigma;
  SsimTileGeom g;

  DERAIN_HOST_DEVICE int phases() const { return 3; }

  DERAIN_HOST_DEVICE void operator()(int phase, int64_t block, int t, unsigned char* smem) const {
    const int64_t RH = g.rh(), RW = g.rw(), K = g.K;
    T* w = reinterpret_cast<T*>(smem);
    T* dr = w + K;              // (5, RH, RW): d over the outputs that read this tile
    T* tv = dr + 5 * RH * RW;   // (5, kSsimTileH, RW): transposed vertical blur
    const int64_t plane = block / (g.tiles_y * g.tiles_x);
    const int64_t sy0 = (block / g.tiles_x) % g.tiles_y * kSsimTileH, sx0 = block % g.tiles_x * kSsimTileW;
    // the outputs that read input s lie in [s - (K - 1) + off, s + off] (mirror images included)
    const int64_t off = g.pad == kValid ? 0 : K / 2;
    const int64_t oy_base = sy0 - (K - 1) + off, ox_base = sx0 - (K - 1) + off;
    if (phase == 0) {
      ssim_window_taps(w, K, sigma, t);
      const int64_t n = g.P * g.Ho * g.Wo;
      for (int64_t i = t; i < 5 * RH * RW; i += kSsimThreads) {
        const int64_t s = i / (RH * RW), py = i / RW % RH, px = i % RW;
        const int64_t oy = oy_base + py, ox = ox_base + px;
        const bool in = oy >= 0 && oy < g.Ho && ox >= 0 && ox < g.Wo;
        dr[i] = in ? d[s * n + (plane * g.Ho + oy) * g.Wo + ox] : T(0);
      }
    } else if (phase == 1) {  // transposed vertical blur at this tile's rows, every region column
      for (int64_t i = t; i < int64_t(kSsimTileH) * RW; i += kSsimThreads) {
        const int64_t sy = i / RW, q = i % RW;
        if (sy0 + sy >= g.H || ox_base + q < 0 || ox_base + q >= g.Wo) continue;
        for (int s = 0; s < 5; ++s) {
          const T* col = dr + s * RH * RW + q;
          tv[(s * kSsimTileH + sy) * RW + q] = ssim_transposed_taps(
              sy0 + sy, g.H, g.Ho, K, g.pad, w, [&](int64_t o) { return col[(o - oy_base) * RW]; });
        }
      }
    } else {  // transposed horizontal blur and the chain rule, per input pixel
      for (int64_t i = t; i < int64_t(kSsimTileH) * kSsimTileW; i += kSsimThreads) {
        const int64_t sy = i / kSsimTileW, sx = i % kSsimTileW;
        if (sy0 + sy >= g.H || sx0 + sx >= g.W) continue;
        auto tr = [&](int s) {
          const T* row = tv + (s * kSsimTileH + sy) * RW;
          return ssim_transposed_taps(sx0 + sx, g.W, g.Wo, K, g.pad, w,
                                      [&](int64_t o) { return row[o - ox_base]; });
        };
        const int64_t p = (plane * g.H + sy0 + sy) * g.W + sx0 + sx;
        const T tmxy = tr(4);
        if (gx) gx[p] = tr(0) + T(2) * x[p] * tr(2) + y[p] * tmxy;
        if (gy) gy[p] = tr(1) + T(2) * y[p] * tr(3) + x[p] * tmxy;
      }
    }
  }
};

}  // namespace logic
}  // namespace derain
