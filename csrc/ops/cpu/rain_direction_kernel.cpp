// CPU kernels of the rain-direction sums (UDRDR regularizer), forward and backward.
//
// With d = z - z_gt and, per image b, M kernels k_m (K x K, K odd, r = K // 2):
//   S[b, m] = sum_{c, y, x} |R_m(c, y, x)|,  R_m(y, x) = sum_{i, j} k_m[i, j] d(y + i - r, x + j - r)
// (depthwise cross-correlation as conv2d, zero padding r, "same" size). By
// linearity k * z - k * z_gt = k * d, so one pass computes d once and all M
// responses from it. Backward: dS/dd(p) = sum_m g[b, m] sum_t k_m[t] sign(R_m(p - t)),
// dS/dz = dS/dd, dS/dz_gt = -dS/dd (sign(0) = 0, NaN stays NaN).
//
// Only the non-zero taps of each kernel are visited (a 5x5 line kernel has 5
// to 10), each as a unit-stride multiply-add over a whole row. Contiguous
// inputs are walked as B*C planes of H rows of W values, channels-last inputs
// as B planes of H rows of W*C values (neighbouring columns C apart); other
// layouts are copied to contiguous. Work is split into (plane, band of rows)
// tasks; partial sums (double) are added in a fixed order: deterministic.
#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <algorithm>
#include <cmath>
#include <vector>

#include "../elementwise.h"

namespace derain {
namespace {

constexpr int64_t kBand = 32;

// Tasks per thread chunk: small inputs run on the calling thread (waking the
// pool costs more than the work below ~32K values).
inline int64_t grain_for(int64_t rowlen) {
  return std::max<int64_t>(1, (int64_t(1) << 15) / std::max<int64_t>(1, kBand * rowlen));
}

template <typename T>
struct Tap {
  int64_t dy, dx;
  T w;
};

template <typename T>
inline T sign_of(T v) {
  return v > T(0) ? T(1) : (v < T(0) ? T(-1) : v);
}

struct Layout {
  at::Tensor z, zg;
  int64_t planes, per_image, H, W, ci;  // ci: values per column (1 or C)
  bool channels_last;
};

Layout layout_of(const at::Tensor& z, const at::Tensor& z_gt) {
  Layout l;
  const int64_t B = z.size(0), C = z.size(1);
  l.H = z.size(2);
  l.W = z.size(3);
  const bool cl = !z.is_contiguous() && z.is_contiguous(at::MemoryFormat::ChannelsLast);
  if (cl) {
    l.z = z;
    l.zg = z_gt.contiguous(at::MemoryFormat::ChannelsLast);
    l.planes = B; l.per_image = 1; l.ci = C; l.channels_last = true;
  } else {
    l.z = z.contiguous();
    l.zg = z_gt.contiguous();
    l.planes = B * C; l.per_image = C; l.ci = 1; l.channels_last = false;
  }
  return l;
}

void check_args(const at::Tensor& z, const at::Tensor& z_gt, const at::Tensor& k, const char* op) {
  TORCH_CHECK(z.dim() == 4, "derain::", op, ": z must be (B, C, H, W), got ", z.sizes());
  TORCH_CHECK(z_gt.sizes().equals(z.sizes()), "derain::", op, ": z_gt must have z's shape");
  TORCH_CHECK(z.scalar_type() == at::kFloat || z.scalar_type() == at::kDouble,
              "derain::", op, ": z must be float32 or float64");
  TORCH_CHECK(z_gt.scalar_type() == z.scalar_type() && k.scalar_type() == z.scalar_type(),
              "derain::", op, ": z, z_gt and kernels must have the same dtype");
  TORCH_CHECK(k.dim() == 4 && k.size(0) == z.size(0) && k.size(2) == k.size(3) && k.size(2) % 2 == 1,
              "derain::", op, ": kernels must be (B, M, K, K) with K odd, got ", k.sizes());
}

// Non-zero taps of every (image, kernel), as offsets (dy, dx) from the centre.
template <typename T>
std::vector<std::vector<Tap<T>>> taps_of(const at::Tensor& kernels) {
  at::Tensor k = kernels.contiguous();
  const int64_t B = k.size(0), M = k.size(1), K = k.size(2), r = K / 2;
  const T* kp = k.const_data_ptr<T>();
  std::vector<std::vector<Tap<T>>> taps(B * M);
  for (int64_t bm = 0; bm < B * M; ++bm)
    for (int64_t i = 0; i < K; ++i)
      for (int64_t j = 0; j < K; ++j) {
        const T w = kp[(bm * K + i) * K + j];
        if (w != T(0)) taps[bm].push_back({i - r, j - r, w});
      }
  return taps;
}

// d = z - z_gt for rows [ya, yb) of a plane into buf (rows of (W + 2 pad) * ci,
// zero outside the image).
template <typename T>
void fill_diff(const T* z, const T* zg, int64_t H, int64_t rowlen, int64_t ya, int64_t yb,
               int64_t padl, T* buf) {
  const int64_t bl = rowlen + 2 * padl;
  for (int64_t y = ya; y < yb; ++y) {
    T* o = buf + (y - ya) * bl;
    if (y < 0 || y >= H) {
      std::fill(o, o + bl, T(0));
      continue;
    }
    std::fill(o, o + padl, T(0));
    std::fill(o + padl + rowlen, o + bl, T(0));
    const T* a = z + y * rowlen;
    const T* b = zg + y * rowlen;
DERAIN_SIMD
    for (int64_t i = 0; i < rowlen; ++i) o[padl + i] = a[i] - b[i];
  }
}

at::Tensor rain_direction_sums_cpu(const at::Tensor& z, const at::Tensor& z_gt, const at::Tensor& kernels) {
  check_args(z, z_gt, kernels, "_rain_direction_sums");
  const int64_t B = z.size(0), M = kernels.size(1), r = kernels.size(2) / 2;
  at::Tensor out = at::zeros({B, M}, z.options());
  if (z.numel() == 0 || M == 0) return out;
  Layout l = layout_of(z, z_gt);
  const int64_t rowlen = l.W * l.ci, padl = r * l.ci, bl = rowlen + 2 * padl;
  const int64_t bands = (l.H + kBand - 1) / kBand, tasks = l.planes * bands;
  std::vector<double> part(tasks * M, 0.0);
  AT_DISPATCH_FLOATING_TYPES(z.scalar_type(), "rain_direction_sums", [&] {
    auto taps = taps_of<scalar_t>(kernels);
    const scalar_t* zp = l.z.const_data_ptr<scalar_t>();
    const scalar_t* gp = l.zg.const_data_ptr<scalar_t>();
    const int64_t plane_size = l.H * rowlen, ci = l.ci;
    at::parallel_for(0, tasks, grain_for(rowlen), [&](int64_t lo, int64_t hi) {
      std::vector<scalar_t> buf((kBand + 2 * r) * bl), acc(rowlen);
      for (int64_t t = lo; t < hi; ++t) {
        const int64_t plane = t / bands, y0 = (t % bands) * kBand, y1 = std::min(l.H, y0 + kBand);
        const int64_t b = plane / l.per_image;
        fill_diff(zp + plane * plane_size, gp + plane * plane_size, l.H, rowlen, y0 - r, y1 + r, padl, buf.data());
        for (int64_t m = 0; m < M; ++m) {
          const auto& tp = taps[b * M + m];
          double s = 0;
          for (int64_t y = y0; y < y1; ++y) {
            std::fill(acc.begin(), acc.end(), scalar_t(0));
            scalar_t* a = acc.data();
            for (const auto& tap : tp) {
              const scalar_t* src = buf.data() + (y - y0 + r + tap.dy) * bl + padl + tap.dx * ci;
              const scalar_t w = tap.w;
DERAIN_SIMD
              for (int64_t i = 0; i < rowlen; ++i) a[i] += w * src[i];
            }
            scalar_t rs = 0;
            _Pragma("omp simd reduction(+:rs)")
            for (int64_t i = 0; i < rowlen; ++i) rs += std::abs(a[i]);
            s += rs;
          }
          part[t * M + m] = s;
        }
      }
    });
    scalar_t* op = out.data_ptr<scalar_t>();
    std::vector<double> tot(B * M, 0.0);
    for (int64_t t = 0; t < tasks; ++t) {
      const int64_t b = (t / bands) / l.per_image;
      for (int64_t m = 0; m < M; ++m) tot[b * M + m] += part[t * M + m];
    }
    for (int64_t i = 0; i < B * M; ++i) op[i] = static_cast<scalar_t>(tot[i]);
  });
  return out;
}

at::Tensor rain_direction_sums_backward_cpu(const at::Tensor& grad, const at::Tensor& z, const at::Tensor& z_gt,
                                            const at::Tensor& kernels) {
  check_args(z, z_gt, kernels, "_rain_direction_sums_backward");
  const int64_t B = z.size(0), M = kernels.size(1), r = kernels.size(2) / 2;
  TORCH_CHECK(grad.dim() == 2 && grad.size(0) == B && grad.size(1) == M,
              "derain::_rain_direction_sums_backward: grad must be (B, M)");
  TORCH_CHECK(grad.scalar_type() == z.scalar_type(), "derain::_rain_direction_sums_backward: grad dtype");
  Layout l = layout_of(z, z_gt);
  at::Tensor gz = at::empty_like(l.z);
  if (z.numel() == 0) return gz;
  if (M == 0) return gz.zero_();
  at::Tensor g = grad.contiguous();
  const int64_t rowlen = l.W * l.ci, padl = r * l.ci, bl = rowlen + 2 * padl;
  const int64_t bands = (l.H + kBand - 1) / kBand, tasks = l.planes * bands;
  AT_DISPATCH_FLOATING_TYPES(z.scalar_type(), "rain_direction_sums_backward", [&] {
    auto taps = taps_of<scalar_t>(kernels);
    const scalar_t* zp = l.z.const_data_ptr<scalar_t>();
    const scalar_t* gtp = l.zg.const_data_ptr<scalar_t>();
    const scalar_t* gp = g.const_data_ptr<scalar_t>();
    scalar_t* op = gz.data_ptr<scalar_t>();
    const int64_t plane_size = l.H * rowlen, ci = l.ci;
    at::parallel_for(0, tasks, grain_for(rowlen), [&](int64_t lo, int64_t hi) {
      // d for rows [y0 - 2r, y1 + 2r); g_m * sign(R_m) for rows [y0 - r, y1 + r).
      std::vector<scalar_t> dbuf((kBand + 4 * r) * bl), sbuf((kBand + 2 * r) * bl), acc(rowlen);
      for (int64_t t = lo; t < hi; ++t) {
        const int64_t plane = t / bands, y0 = (t % bands) * kBand, y1 = std::min(l.H, y0 + kBand);
        const int64_t b = plane / l.per_image;
        fill_diff(zp + plane * plane_size, gtp + plane * plane_size, l.H, rowlen, y0 - 2 * r, y1 + 2 * r, padl,
                  dbuf.data());
        scalar_t* out_plane = op + plane * plane_size;
        for (int64_t y = y0; y < y1; ++y)
          std::fill(out_plane + y * rowlen, out_plane + (y + 1) * rowlen, scalar_t(0));
        for (int64_t m = 0; m < M; ++m) {
          const auto& tp = taps[b * M + m];
          const scalar_t gm = gp[b * M + m];
          std::fill(sbuf.begin(), sbuf.end(), scalar_t(0));
          for (int64_t y = y0 - r; y < y1 + r; ++y) {
            if (y < 0 || y >= l.H) continue;  // responses exist only inside the image
            std::fill(acc.begin(), acc.end(), scalar_t(0));
            scalar_t* a = acc.data();
            for (const auto& tap : tp) {
              const scalar_t* src = dbuf.data() + (y - (y0 - 2 * r) + tap.dy) * bl + padl + tap.dx * ci;
              const scalar_t w = tap.w;
DERAIN_SIMD
              for (int64_t i = 0; i < rowlen; ++i) a[i] += w * src[i];
            }
            scalar_t* s = sbuf.data() + (y - (y0 - r)) * bl + padl;
DERAIN_SIMD
            for (int64_t i = 0; i < rowlen; ++i) s[i] = gm * sign_of(a[i]);
          }
          // gd(p) += sum_t w_t s(p - t)
          for (int64_t y = y0; y < y1; ++y) {
            scalar_t* o = out_plane + y * rowlen;
            for (const auto& tap : tp) {
              const scalar_t* src = sbuf.data() + (y - (y0 - r) - tap.dy) * bl + padl - tap.dx * ci;
              const scalar_t w = tap.w;
DERAIN_SIMD
              for (int64_t i = 0; i < rowlen; ++i) o[i] += w * src[i];
            }
          }
        }
      }
    });
  });
  return gz;
}

}  // namespace

TORCH_LIBRARY_IMPL(derain, CPU, m) {
  m.impl("_rain_direction_sums", &rain_direction_sums_cpu);
  m.impl("_rain_direction_sums_backward", &rain_direction_sums_backward_cpu);
}

}  // namespace derain
