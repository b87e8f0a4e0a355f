// CPU kernels of the total-variation sums (forward and backward).
//
// Per image n of x (N, C, H, W): S[n, 0] = sum |x[c, y+1, x] - x[c, y, x]|^p
// (vertical differences), S[n, 1] = sum |x[c, y, x+1] - x[c, y, x]|^p
// (horizontal), p in {1, 2}. With padding "zeros" the image has a zero row
// above it and a zero column to its left, so the first row adds |x[c, 0, x]|^p
// to S[n, 0] and the first column |x[c, y, 0]|^p to S[n, 1] (SSID-KD's
// zero-padded difference convolutions); "valid" has only the differences
// inside the image. One pass over x. Contiguous inputs are walked as
// C*N planes of H rows of W values; channels-last inputs as N planes of H rows
// of W*C values, horizontal neighbours C apart; other layouts are copied to
// contiguous first. Work is split into (plane, band of rows) tasks whose
// partial sums (in double) are added in a fixed order: deterministic.
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

// How to walk a 4-D tensor as planes of rows with unit stride.
struct Planes {
  at::Tensor t;           // the tensor walked (x or a contiguous copy)
  int64_t planes = 0;     // number of planes
  int64_t per_image = 1;  // planes per image
  int64_t rows = 0;       // H
  int64_t len = 0;        // values per row
  int64_t step = 1;       // distance of horizontal neighbours
  bool channels_last = false;
};

Planes as_planes(const at::Tensor& x) {
  Planes p;
  const int64_t N = x.size(0), C = x.size(1), H = x.size(2), W = x.size(3);
  p.rows = H;
  if (!x.is_contiguous() && x.is_contiguous(at::MemoryFormat::ChannelsLast)) {
    p.t = x;
    p.planes = N;
    p.per_image = 1;
    p.len = W * C;
    p.step = C;
    p.channels_last = true;
  } else {
    p.t = x.contiguous();
    p.planes = N * C;
    p.per_image = C;
    p.len = W;
    p.step = 1;
  }
  return p;
}

// d phi / d d for phi = |d|^p: sign(d) (sign(0) = 0, NaN stays NaN) or 2 d.
template <typename T>
inline T dphi(T d, int64_t p) {
  if (p == 2) return T(2) * d;
  return d > T(0) ? T(1) : (d < T(0) ? T(-1) : d);
}

// Whether the image has the zero border of padding "zeros" ("valid": none).
bool parse_padding(c10::string_view padding, const char* op) {
  if (padding == "zeros") return true;
  TORCH_CHECK(padding == "valid", "derain::", op, ": padding must be 'valid' or 'zeros', got '",
              std::string(padding), "'");
  return false;
}

void check_x(const at::Tensor& x, int64_t p, const char* op) {
  TORCH_CHECK(x.dim() == 4, "derain::", op, ": x must be (N, C, H, W), got ", x.sizes());
  TORCH_CHECK(x.scalar_type() == at::kFloat || x.scalar_type() == at::kDouble,
              "derain::", op, ": x must be float32 or float64, got ", x.scalar_type());
  TORCH_CHECK(p == 1 || p == 2, "derain::", op, ": p must be 1 or 2, got ", p);
}

at::Tensor tv_sums_cpu(const at::Tensor& x, int64_t p, c10::string_view padding) {
  check_x(x, p, "_tv_sums");
  const bool zb = parse_padding(padding, "_tv_sums");
  const int64_t N = x.size(0);
  at::Tensor out = at::zeros({N, 2}, x.options());
  if (x.numel() == 0) return out;
  Planes P = as_planes(x);
  const int64_t bands = (P.rows + kBand - 1) / kBand, tasks = P.planes * bands;
  std::vector<double> part(tasks * 2, 0.0);
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "tv_sums", [&] {
    const scalar_t* xp = P.t.const_data_ptr<scalar_t>();
    const int64_t L = P.len, st = P.step, H = P.rows;
    at::parallel_for(0, tasks, grain_for(P.len), [&](int64_t lo, int64_t hi) {
      for (int64_t t = lo; t < hi; ++t) {
        const int64_t plane = t / bands, y0 = (t % bands) * kBand, y1 = std::min(H, y0 + kBand);
        const scalar_t* base = xp + plane * H * L;
        double sv = 0, sh = 0;
        for (int64_t y = y0; y < y1; ++y) {
          const scalar_t* row = base + y * L;
          scalar_t acc_h = 0, acc_v = 0;
          if (p == 1) {
            _Pragma("omp simd reduction(+:acc_h)")
            for (int64_t i = st; i < L; ++i) acc_h += std::abs(row[i] - row[i - st]);
          } else {
            _Pragma("omp simd reduction(+:acc_h)")
            for (int64_t i = st; i < L; ++i) { scalar_t d = row[i] - row[i - st]; acc_h += d * d; }
          }
          if (y + 1 < H) {
            const scalar_t* next = row + L;
            if (p == 1) {
              _Pragma("omp simd reduction(+:acc_v)")
              for (int64_t i = 0; i < L; ++i) acc_v += std::abs(next[i] - row[i]);
            } else {
              _Pragma("omp simd reduction(+:acc_v)")
              for (int64_t i = 0; i < L; ++i) { scalar_t d = next[i] - row[i]; acc_v += d * d; }
            }
          }
          if (zb) {
            // the zero border: the first column against the column left of the
            // image, the first row against the row above it
            for (int64_t i = 0; i < st && i < L; ++i) acc_h += p == 1 ? std::abs(row[i]) : row[i] * row[i];
            if (y == 0) {
              if (p == 1) {
                _Pragma("omp simd reduction(+:acc_v)")
                for (int64_t i = 0; i < L; ++i) acc_v += std::abs(row[i]);
              } else {
                _Pragma("omp simd reduction(+:acc_v)")
                for (int64_t i = 0; i < L; ++i) acc_v += row[i] * row[i];
              }
            }
          }
          sv += acc_v;
          sh += acc_h;
        }
        part[2 * t] = sv;
        part[2 * t + 1] = sh;
      }
    });
    scalar_t* op = out.data_ptr<scalar_t>();
    for (int64_t t = 0; t < tasks; ++t) {
      const int64_t n = (t / bands) / P.per_image;
      op[2 * n] += part[2 * t];
      op[2 * n + 1] += part[2 * t + 1];
    }
  });
  return out;
}

at::Tensor tv_sums_backward_cpu(const at::Tensor& grad, const at::Tensor& x, int64_t p,
                                c10::string_view padding) {
  check_x(x, p, "_tv_sums_backward");
  const bool zb = parse_padding(padding, "_tv_sums_backward");
  TORCH_CHECK(grad.dim() == 2 && grad.size(0) == x.size(0) && grad.size(1) == 2,
              "derain::_tv_sums_backward: grad must be (N, 2)");
  TORCH_CHECK(grad.scalar_type() == x.scalar_type(), "derain::_tv_sums_backward: grad and x dtypes differ");
  Planes P = as_planes(x);
  at::Tensor gx = at::empty_like(P.t);
  if (x.numel() == 0) return gx;
  at::Tensor g = grad.contiguous();
  const int64_t bands = (P.rows + kBand - 1) / kBand, tasks = P.planes * bands;
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "tv_sums_backward", [&] {
    const scalar_t* xp = P.t.const_data_ptr<scalar_t>();
    const scalar_t* gp = g.const_data_ptr<scalar_t>();
    scalar_t* op = gx.data_ptr<scalar_t>();
    const int64_t L = P.len, st = P.step, H = P.rows;
    at::parallel_for(0, tasks, grain_for(P.len), [&](int64_t lo, int64_t hi) {
      for (int64_t t = lo; t < hi; ++t) {
        const int64_t plane = t / bands, y0 = (t % bands) * kBand, y1 = std::min(H, y0 + kBand);
        const int64_t n = plane / P.per_image;
        const scalar_t gv = gp[2 * n], gh = gp[2 * n + 1];
        const scalar_t* base = xp + plane * H * L;
        scalar_t* obase = op + plane * H * L;
        for (int64_t y = y0; y < y1; ++y) {
          const scalar_t* row = base + y * L;
          scalar_t* o = obase + y * L;
DERAIN_SIMD
          for (int64_t i = 0; i < L; ++i) o[i] = scalar_t(0);
          if (y > 0) {
            const scalar_t* prev = row - L;
DERAIN_SIMD
            for (int64_t i = 0; i < L; ++i) o[i] += gv * dphi(row[i] - prev[i], p);
          } else if (zb) {
DERAIN_SIMD
            for (int64_t i = 0; i < L; ++i) o[i] += gv * dphi(row[i], p);
          }
          if (y + 1 < H) {
            const scalar_t* next = row + L;
DERAIN_SIMD
            for (int64_t i = 0; i < L; ++i) o[i] -= gv * dphi(next[i] - row[i], p);
          }
DERAIN_SIMD
          for (int64_t i = st; i < L; ++i) o[i] += gh * dphi(row[i] - row[i - st], p);
          if (zb)
            for (int64_t i = 0; i < st && i < L; ++i) o[i] += gh * dphi(row[i], p);
DERAIN_SIMD
          for (int64_t i = 0; i < L - st; ++i) o[i] -= gh * dphi(row[i + st] - row[i], p);
        }
      }
    });
  });
  return gx;
}

}  // namespace

TORCH_LIBRARY_IMPL(derain, CPU, m) {
  m.impl("_tv_sums", &tv_sums_cpu);
  m.impl("_tv_sums_backward", &tv_sums_backward_cpu);
}

}  // namespace derain
