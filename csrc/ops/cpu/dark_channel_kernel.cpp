// CPU kernels of dark_channel (forward with arg-min indices, and backward).
//
// D(x)(y, x) = min over the patch x patch window centred at (y, x) of the
// minimum over channels, with mirror ("reflect", scipy 'mirror') borders,
// periodically repeated when the patch is larger than the image. Every value
// is carried with its code channel * H * W + row * W + col (its flat index in
// the (C, H, W) image), and elements are ordered by (value, code): ties go to
// the first element in channel-then-raster order; NaN orders before every
// number (so it propagates). Any injective code works with the separable
// passes: the minimum of the minima of a partition is the minimum.
//
// Separable and independent of the patch size: minimum over channels, then a
// van Herk / Gil-Werman running minimum along each row, then along each column
// (three comparisons per element and pass, whatever the patch).
#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <algorithm>
#include <vector>

#include "../elementwise.h"

namespace derain {
namespace {

// (a, ka) strictly before (b, kb) in the (value, code) order, NaN first.
// Written without short-circuits so that loops over lanes vectorise.
// (Comparisons with a NaN are false, so the numeric part is false whenever
// either is NaN; the second part decides then.)
template <typename T>
inline bool before(T a, int64_t ka, T b, int64_t kb) {
  return (a < b) | ((a == b) & (ka < kb)) | ((a != a) & ((b == b) | (ka < kb)));
}

// Mirror index (no edge repeat) of i into [0, n) for |i| <= 2 (n - 1).
inline int64_t mirror(int64_t i, int64_t n) {
  if (i < 0) return -i;
  if (i >= n) return 2 * (n - 1) - i;
  return i;
}

// Lines processed together by the running minimum (one vector lane each).
constexpr int64_t kLanes = 16;

// A tile of kLanes lines of the mirror-extended sequence, stored [j][lane].
template <typename T>
struct Tile {
  std::vector<T> ev, gv, hv;
  std::vector<int64_t> ek, gk, hk;
  void resize(int64_t L) {
    const size_t n = static_cast<size_t>(L * kLanes);
    if (ev.size() < n) {
      ev.resize(n); gv.resize(n); hv.resize(n);
      ek.resize(n); gk.resize(n); hk.resize(n);
    }
  }
};

// van Herk / Gil-Werman: window minimum of width w over each lane of the tile
// (extended length L); results for windows starting at 0..n-1 are written to
// rows 0..n-1 of (ev, ek). g runs forwards from the start of each block of w,
// h backwards from its end; window [i, i + w) = h[i] combined with g[i + w - 1].
template <typename T>
void tile_running_min(Tile<T>& t, int64_t L, int64_t w, int64_t n) {
  T* ev = t.ev.data(); T* gv = t.gv.data(); T* hv = t.hv.data();
  int64_t* ek = t.ek.data(); int64_t* gk = t.gk.data(); int64_t* hk = t.hk.data();
  for (int64_t j0 = 0; j0 < L; j0 += w) {
    const int64_t j1 = std::min(L, j0 + w);
    for (int64_t l = 0; l < kLanes; ++l) {
      gv[j0 * kLanes + l] = ev[j0 * kLanes + l]; gk[j0 * kLanes + l] = ek[j0 * kLanes + l];
      hv[(j1 - 1) * kLanes + l] = ev[(j1 - 1) * kLanes + l]; hk[(j1 - 1) * kLanes + l] = ek[(j1 - 1) * kLanes + l];
    }
    for (int64_t j = j0 + 1; j < j1; ++j) {
      const T* e = ev + j * kLanes; const int64_t* ke = ek + j * kLanes;
      const T* p = gv + (j - 1) * kLanes; const int64_t* kp = gk + (j - 1) * kLanes;
      T* o = gv + j * kLanes; int64_t* ko = gk + j * kLanes;
DERAIN_SIMD
      for (int64_t l = 0; l < kLanes; ++l) {
        const bool take = before(e[l], ke[l], p[l], kp[l]);
        o[l] = take ? e[l] : p[l];
        ko[l] = take ? ke[l] : kp[l];
      }
    }
    for (int64_t j = j1 - 2; j >= j0; --j) {
      const T* e = ev + j * kLanes; const int64_t* ke = ek + j * kLanes;
      const T* p = hv + (j + 1) * kLanes; const int64_t* kp = hk + (j + 1) * kLanes;
      T* o = hv + j * kLanes; int64_t* ko = hk + j * kLanes;
DERAIN_SIMD
      for (int64_t l = 0; l < kLanes; ++l) {
        const bool take = before(e[l], ke[l], p[l], kp[l]);
        o[l] = take ? e[l] : p[l];
        ko[l] = take ? ke[l] : kp[l];
      }
    }
  }
  for (int64_t i = 0; i < n; ++i) {
    const T* a = gv + (i + w - 1) * kLanes; const int64_t* ka = gk + (i + w - 1) * kLanes;
    const T* b = hv + i * kLanes; const int64_t* kb = hk + i * kLanes;
    T* o = ev + i * kLanes; int64_t* ko = ek + i * kLanes;
DERAIN_SIMD
    for (int64_t l = 0; l < kLanes; ++l) {
      const bool take = before(a[l], ka[l], b[l], kb[l]);
      o[l] = take ? a[l] : b[l];
      ko[l] = take ? ka[l] : kb[l];
    }
  }
}

std::tuple<at::Tensor, at::Tensor> dark_channel_cpu(const at::Tensor& x, int64_t patch) {
  TORCH_CHECK(x.dim() == 4, "derain::_dark_channel: x must be (B, C, H, W), got ", x.sizes());
  TORCH_CHECK(x.scalar_type() == at::kFloat || x.scalar_type() == at::kDouble,
              "derain::_dark_channel: x must be float32 or float64, got ", x.scalar_type());
  TORCH_CHECK(patch >= 1 && patch % 2 == 1, "derain::_dark_channel: patch must be odd and >= 1, got ", patch);
  const int64_t B = x.size(0), C = x.size(1), H = x.size(2), W = x.size(3);
  TORCH_CHECK(C >= 1, "derain::_dark_channel: x must have at least one channel");
  at::Tensor out = at::empty({B, 1, H, W}, x.options());
  at::Tensor index = at::empty({B, 1, H, W}, x.options().dtype(at::kLong));
  if (B == 0 || H == 0 || W == 0) return {out, index};
  const int64_t r = patch / 2, HW = H * W;
  const int64_t rx = std::min(r, W - 1), ry = std::min(r, H - 1);
  const int64_t s0 = x.stride(0), s1 = x.stride(1), s2 = x.stride(2), s3 = x.stride(3);
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "dark_channel", [&] {
    const scalar_t* xp = x.const_data_ptr<scalar_t>();
    // Row pass result, (B, H, W) contiguous.
    std::vector<scalar_t> rv(B * H * W);
    std::vector<int64_t> rk(B * H * W);
    // 1. minimum over channels and 2. running minimum along rows, kLanes rows at a time.
    const int64_t row_groups = (B * H + kLanes - 1) / kLanes;
    const int64_t Lx = W + 2 * rx, wx = 2 * rx + 1;
    at::parallel_for(0, row_groups, std::max<int64_t>(1, 8192 / (kLanes * W * C)), [&](int64_t lo, int64_t hi) {
      Tile<scalar_t> t;
      t.resize(Lx);
      std::vector<scalar_t> cv(W);
      std::vector<int32_t> cc(W);
      for (int64_t grp = lo; grp < hi; ++grp) {
        const int64_t row0 = grp * kLanes, nl = std::min(kLanes, B * H - row0);
        for (int64_t l = 0; l < kLanes; ++l) {
          const int64_t row = row0 + std::min(l, nl - 1);  // spare lanes repeat the last row
          const int64_t b = row / H, y = row % H;
          const scalar_t* base = xp + b * s0 + y * s2;
          // Minimum over channels: a later channel wins only if strictly smaller (or
          // the first NaN), which is the (value, code) order within a pixel. The
          // channel is kept as int32 beside the value so the loop vectorises.
          for (int64_t i = 0; i < W; ++i) { cv[i] = base[i * s3]; cc[i] = 0; }
          for (int64_t c = 1; c < C; ++c) {
            const scalar_t* bc = base + c * s1;
            const int32_t ci = static_cast<int32_t>(c);
            if (s3 == 1) {
DERAIN_SIMD
              for (int64_t i = 0; i < W; ++i) {
                const scalar_t v = bc[i], o = cv[i];
                const bool take = (v < o) | ((v != v) & (o == o));
                cv[i] = take ? v : o;
                cc[i] = take ? ci : cc[i];
              }
            } else {
DERAIN_SIMD
              for (int64_t i = 0; i < W; ++i) {
                const scalar_t v = bc[i * s3], o = cv[i];
                const bool take = (v < o) | ((v != v) & (o == o));
                cv[i] = take ? v : o;
                cc[i] = take ? ci : cc[i];
              }
            }
          }
          for (int64_t j = 0; j < Lx; ++j) {
            const int64_t m = mirror(j - rx, W);
            t.ev[j * kLanes + l] = cv[m];
            t.ek[j * kLanes + l] = cc[m] * HW + y * W + m;
          }
        }
        tile_running_min(t, Lx, wx, W);
        for (int64_t l = 0; l < nl; ++l) {
          scalar_t* ov = rv.data() + (row0 + l) * W;
          int64_t* ok = rk.data() + (row0 + l) * W;
          for (int64_t i = 0; i < W; ++i) { ov[i] = t.ev[i * kLanes + l]; ok[i] = t.ek[i * kLanes + l]; }
        }
      }
    });
    // 3. running minimum along columns, kLanes neighbouring columns at a time.
    scalar_t* op = out.data_ptr<scalar_t>();
    int64_t* ip = index.data_ptr<int64_t>();
    const int64_t col_groups = (W + kLanes - 1) / kLanes;
    const int64_t Ly = H + 2 * ry, wy = 2 * ry + 1;
    at::parallel_for(0, B * col_groups, std::max<int64_t>(1, 8192 / (kLanes * H)), [&](int64_t lo, int64_t hi) {
      Tile<scalar_t> t;
      t.resize(Ly);
      for (int64_t task = lo; task < hi; ++task) {
        const int64_t b = task / col_groups, x0 = (task % col_groups) * kLanes;
        const int64_t nl = std::min(kLanes, W - x0);
        for (int64_t j = 0; j < Ly; ++j) {
          const int64_t src = (b * H + mirror(j - ry, H)) * W + x0;
          for (int64_t l = 0; l < kLanes; ++l) {
            const int64_t ll = std::min(l, nl - 1);
            t.ev[j * kLanes + l] = rv[src + ll];
            t.ek[j * kLanes + l] = rk[src + ll];
          }
        }
        tile_running_min(t, Ly, wy, H);
        for (int64_t y = 0; y < H; ++y) {
          scalar_t* ov = op + (b * H + y) * W + x0;
          int64_t* ok = ip + (b * H + y) * W + x0;
          for (int64_t l = 0; l < nl; ++l) { ov[l] = t.ev[y * kLanes + l]; ok[l] = t.ek[y * kLanes + l]; }
        }
      }
    });
  });
  return {out, index};
}

at::Tensor dark_channel_backward_cpu(const at::Tensor& grad, const at::Tensor& index, int64_t channels) {
  TORCH_CHECK(grad.dim() == 4 && grad.size(1) == 1, "derain::_dark_channel_backward: grad must be (B, 1, H, W)");
  TORCH_CHECK(index.sizes().equals(grad.sizes()) && index.scalar_type() == at::kLong,
              "derain::_dark_channel_backward: index must be int64 with grad's shape");
  TORCH_CHECK(channels >= 1, "derain::_dark_channel_backward: channels must be >= 1");
  const int64_t B = grad.size(0), H = grad.size(2), W = grad.size(3), C = channels;
  at::Tensor gx = at::zeros({B, C, H, W}, grad.options());
  if (gx.numel() == 0) return gx;
  at::Tensor g = grad.contiguous();
  at::Tensor idx = index.contiguous();
  const int64_t HW = H * W;
  AT_DISPATCH_FLOATING_TYPES(grad.scalar_type(), "dark_channel_backward", [&] {
    const scalar_t* gp = g.const_data_ptr<scalar_t>();
    const int64_t* ip = idx.const_data_ptr<int64_t>();
    scalar_t* op = gx.data_ptr<scalar_t>();
    at::parallel_for(0, B, 1, [&](int64_t lo, int64_t hi) {
      for (int64_t b = lo; b < hi; ++b) {
        scalar_t* ob = op + b * C * HW;
        for (int64_t p = b * HW; p < (b + 1) * HW; ++p) {
          const int64_t code = ip[p];
          TORCH_CHECK(code >= 0 && code < C * HW, "derain::_dark_channel_backward: index out of range");
          ob[code] += gp[p];
        }
      }
    });
  });
  return gx;
}

}  // namespace

TORCH_LIBRARY_IMPL(derain, CPU, m) {
  m.impl("_dark_channel", &dark_channel_cpu);
  m.impl("_dark_channel_backward", &dark_channel_backward_cpu);
}

}  // namespace derain
