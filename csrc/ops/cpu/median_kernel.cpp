// CPU kernels of median_filter (forward) and median_filter_backward.
//
// Exact for every dtype, any odd kh x kw window, no quantisation of floats, cost
// per pixel nearly independent of k (O(kh) for windows over 65535 elements).
// Per tile of output pixels:
//
//  1. The tile's padded input region (tile + halo; median/tile.h) maps, row by row and column
//     by column, onto a set of distinct source rows and columns (reflection and
//     replication repeat sources; a zero pad is one virtual element). The
//     distinct source elements are numbered in source order (flat index h*W+w;
//     the zero pad first).
//  2. Their order-preserving integer keys (median/keys.h; floats: sign-flipped bits, -0 -> +0,
//     NaN above +inf) are radix-sorted, stably, so equal values keep source
//     order: element -> rank is a bijection onto 0..E-1 ordered by
//     (value, source index), the selection rule shared with the reference.
//  3. The window's median rank, by one of four paths (chosen in median/median_tile.h):
//     - windows of at most 49 elements: nth_element over the window's ranks
//       (median/small_window.h);
//     - windows of at most 65535 elements whose tile region is at most 255 columns
//       wide (kw <= 192): median tracking (median/tracking.h) over position ranks (every
//       region position its own rank; copies of an element, the zero pad included,
//       take consecutive ones). The last output's median rank m and the count L of
//       window ranks below it are carried along a snake path; a step updates L by
//       comparing the entering / leaving column's ranks with m, and the new median is
//       found among the 256 ranks around m by one 8-bit in-window test per rank (64
//       ranks per AVX-512 compare) and a pdep select; longer moves scan on in blocks
//       of 64 ranks (config median_tracking=False turns this path off);
//     - other windows of at most 65535 elements: Perreault-Hebert over rank
//       (median/perreault_hebert.h)
//       bins (2048 bins of 2^shift ranks; 16-bit column histograms updated by one
//       element per column and row, the window's coarse histogram sliding by vector
//       adds, fine segments updated lazily, AVX-512 prefix searches with a scalar
//       fallback), then the exact rank inside the median's bin by counting each
//       of its (at most 2^shift) ranks' copies in the window: time nearly flat in k;
//     - larger windows: a Huang sweep (median/huang.h; snake order) over a histogram of 32-rank
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
#include <limits>
#include <vector>

#include "common/padding.h"
#include "common/plane.h"
#include "median/median_tile.h"

namespace derain {
namespace {

using median::Geometry;
using median::KeyInfo;
using median::kSmallWindow;
using median::median_tile;
using median::Workspace;

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
  g.pad = parse_padding(padding, {Padding::Reflect, Padding::Replicate, Padding::Zeros},
                        "derain: padding must be one of 'reflect', 'replicate', 'zeros'");
  TORCH_CHECK(g.kh * g.kw < (int64_t(1) << 31), "derain: kernel_size too large");
  return g;
}

// Tile side: large tiles amortise the halo; the region (tile + halo) stays small
// enough for the rank map and histogram to live in L2.
inline int64_t tile_height(int64_t k) {
  return k <= 63 ? 128 : std::max<int64_t>(32, 192 - k);
}
// The Perreault-Hebert path keeps a 4 KiB histogram per region column: narrow tiles.
inline int64_t tile_width(int64_t k, bool column_histograms) {
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

// The output and each output's selected source h * W + w (-1: a zero pad or a NaN window).
std::tuple<at::Tensor, at::Tensor> median_filter_with_index_cpu(const at::Tensor& x, at::IntArrayRef kernel_size,
                                                                c10::string_view padding) {
  const Geometry g = make_geometry(x, kernel_size, padding);
  TORCH_CHECK(g.H * g.W < (int64_t(1) << 31), "derain: median_filter's selected index needs H * W < 2**31");
  at::Tensor out = at::empty_like(x, at::MemoryFormat::Preserve);
  at::Tensor index = at::empty(x.sizes(), x.options().dtype(at::kInt));
  if (x.numel() == 0) return {out, index};
  const at::Tensor xc = x.contiguous();  // sources as flat indices h * W + w are then offsets too
  AT_DISPATCH_FLOATING_TYPES_AND3(at::kHalf, at::kBFloat16, at::kByte, x.scalar_type(), "median_filter", [&] {
    const auto out_offs = plane_offsets(out);
    scalar_t* od = out.mutable_data_ptr<scalar_t>();
    int32_t* id = index.mutable_data_ptr<int32_t>();
    const scalar_t* xd = xc.const_data_ptr<scalar_t>();
    const int64_t oH = out.stride(-2), oW = out.stride(-1), W = g.W, HW = g.H * g.W;
    const scalar_t nan_value = std::numeric_limits<scalar_t>::quiet_NaN();
    for_each_selection<scalar_t>(xc, g, false, [&](int64_t p, int64_t y0, int64_t x0) {
      scalar_t* o = od + out_offs[p] + y0 * oH + x0 * oW;
      int32_t* s = id + p * HW + y0 * W + x0;
      const scalar_t* xp = xd + p * HW;
      return [=](int64_t y, int64_t xx, int64_t src) {
        o[y * oH + xx * oW] = src >= 0 ? xp[src] : (src == -1 ? scalar_t(0) : nan_value);
        s[y * W + xx] = static_cast<int32_t>(src >= 0 ? src : -1);
      };
    });
  });
  return {out, index};
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
  m.impl("_median_filter_backward", &median_filter_backward_cpu);
  m.impl("_median_filter_with_index", &median_filter_with_index_cpu);
}

}  // namespace derain
