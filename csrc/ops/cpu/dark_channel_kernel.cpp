// CPU kernels of dark_channel (forward with arg-min indices, and backward).
//
// D(x)(y, x) = min over the patch x patch window centred at (y, x) of the
// minimum over channels, with mirror ("reflect", scipy 'mirror') borders,
// periodically repeated when the patch is larger than the image. Every value
// is carried with its code (row * W + col) * C + channel, and elements are
// ordered by (value, code): ties go to the first element in raster order, then
// the first channel; NaN orders before every number (so it propagates).
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

namespace derain {
namespace {

// (a, ka) strictly before (b, kb) in the (value, code) order, NaN first.
template <typename T>
inline bool before(T a, int64_t ka, T b, int64_t kb) {
  const bool an = a != a, bn = b != b;
  if (an || bn) return an && (!bn || ka < kb);
  return a < b || (a == b && ka < kb);
}

// Mirror index (no edge repeat) of i into [0, n) for |i| <= 2 (n - 1).
inline int64_t mirror(int64_t i, int64_t n) {
  if (i < 0) return -i;
  if (i >= n) return 2 * (n - 1) - i;
  return i;
}

// Scratch of the 1-D running minimum.
template <typename T>
struct Line {
  std::vector<T> ev, gv, hv;
  std::vector<int64_t> ek, gk, hk;
  void reserve(int64_t L) {
    ev.resize(L); gv.resize(L); hv.resize(L);
    ek.resize(L); gk.resize(L); hk.resize(L);
  }
};

// Window minimum of radius r over the mirrored line (v, k)[0..n); writes n
// results to (ov, ok) with stride os. r must be <= n - 1 (callers clamp it:
// a window of 2(n - 1) + 1 already covers a whole mirror period).
template <typename T>
void running_min(const T* v, const int64_t* k, int64_t n, int64_t r, T* ov, int64_t* ok,
                 int64_t os, Line<T>& s) {
  if (r == 0) {
    for (int64_t i = 0; i < n; ++i) { ov[i * os] = v[i]; ok[i * os] = k[i]; }
    return;
  }
  const int64_t w = 2 * r + 1, L = n + 2 * r;
  s.reserve(L);
  for (int64_t j = 0; j < L; ++j) {
    const int64_t m = mirror(j - r, n);
    s.ev[j] = v[m];
    s.ek[j] = k[m];
  }
  // g: running minimum from the start of each block of w; h: to its end.
  for (int64_t j = 0; j < L; ++j) {
    if (j % w == 0 || before(s.ev[j], s.ek[j], s.gv[j - 1], s.gk[j - 1])) {
      s.gv[j] = s.ev[j]; s.gk[j] = s.ek[j];
    } else {
      s.gv[j] = s.gv[j - 1]; s.gk[j] = s.gk[j - 1];
    }
  }
  for (int64_t j = L - 1; j >= 0; --j) {
    if (j == L - 1 || (j + 1) % w == 0 || before(s.ev[j], s.ek[j], s.hv[j + 1], s.hk[j + 1])) {
      s.hv[j] = s.ev[j]; s.hk[j] = s.ek[j];
    } else {
      s.hv[j] = s.hv[j + 1]; s.hk[j] = s.hk[j + 1];
    }
  }
  for (int64_t i = 0; i < n; ++i) {
    const int64_t e = i + w - 1;
    const bool take_g = before(s.gv[e], s.gk[e], s.hv[i], s.hk[i]);
    ov[i * os] = take_g ? s.gv[e] : s.hv[i];
    ok[i * os] = take_g ? s.gk[e] : s.hk[i];
  }
}

std::tuple<at::Tensor, at::Tensor> dark_channel_cpu(const at::Tensor& x, int64_t patch) {
  TORCH_CHECK(x.dim() == 4, "derain::dark_channel: x must be (B, C, H, W), got ", x.sizes());
  TORCH_CHECK(x.scalar_type() == at::kFloat || x.scalar_type() == at::kDouble,
              "derain::dark_channel: x must be float32 or float64, got ", x.scalar_type());
  TORCH_CHECK(patch >= 1 && patch % 2 == 1, "derain::dark_channel: patch must be odd and >= 1, got ", patch);
  const int64_t B = x.size(0), C = x.size(1), H = x.size(2), W = x.size(3);
  TORCH_CHECK(C >= 1, "derain::dark_channel: x must have at least one channel");
  at::Tensor out = at::empty({B, 1, H, W}, x.options());
  at::Tensor index = at::empty({B, 1, H, W}, x.options().dtype(at::kLong));
  if (B == 0 || H == 0 || W == 0) return {out, index};
  const int64_t r = patch / 2;
  const int64_t rx = std::min(r, W - 1), ry = std::min(r, H - 1);
  const int64_t s0 = x.stride(0), s1 = x.stride(1), s2 = x.stride(2), s3 = x.stride(3);
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "dark_channel", [&] {
    const scalar_t* xp = x.const_data_ptr<scalar_t>();
    // Row pass result, (B, H, W) contiguous.
    std::vector<scalar_t> rv(B * H * W);
    std::vector<int64_t> rk(B * H * W);
    at::parallel_for(0, B * H, std::max<int64_t>(1, 4096 / std::max<int64_t>(W * C, 1)), [&](int64_t lo, int64_t hi) {
      std::vector<scalar_t> cv(W);
      std::vector<int64_t> ck(W);
      Line<scalar_t> scratch;
      for (int64_t row = lo; row < hi; ++row) {
        const int64_t b = row / H, y = row % H;
        const scalar_t* base = xp + b * s0 + y * s2;
        for (int64_t i = 0; i < W; ++i) { cv[i] = base[i * s3]; ck[i] = (y * W + i) * C; }
        for (int64_t c = 1; c < C; ++c) {
          const scalar_t* bc = base + c * s1;
          for (int64_t i = 0; i < W; ++i) {
            const scalar_t v = bc[i * s3];
            const int64_t kk = (y * W + i) * C + c;
            if (before(v, kk, cv[i], ck[i])) { cv[i] = v; ck[i] = kk; }
          }
        }
        running_min(cv.data(), ck.data(), W, rx, rv.data() + row * W, rk.data() + row * W, 1, scratch);
      }
    });
    scalar_t* op = out.data_ptr<scalar_t>();
    int64_t* ip = index.data_ptr<int64_t>();
    at::parallel_for(0, B * W, std::max<int64_t>(1, 4096 / std::max<int64_t>(H, 1)), [&](int64_t lo, int64_t hi) {
      std::vector<scalar_t> cv(H);
      std::vector<int64_t> ck(H);
      Line<scalar_t> scratch;
      for (int64_t col = lo; col < hi; ++col) {
        const int64_t b = col / W, i = col % W;
        const int64_t off = b * H * W + i;
        for (int64_t y = 0; y < H; ++y) { cv[y] = rv[off + y * W]; ck[y] = rk[off + y * W]; }
        running_min(cv.data(), ck.data(), H, ry, op + off, ip + off, W, scratch);
      }
    });
  });
  return {out, index};
}

at::Tensor dark_channel_backward_cpu(const at::Tensor& grad, const at::Tensor& index, int64_t channels) {
  TORCH_CHECK(grad.dim() == 4 && grad.size(1) == 1, "derain::dark_channel_backward: grad must be (B, 1, H, W)");
  TORCH_CHECK(index.sizes().equals(grad.sizes()) && index.scalar_type() == at::kLong,
              "derain::dark_channel_backward: index must be int64 with grad's shape");
  TORCH_CHECK(channels >= 1, "derain::dark_channel_backward: channels must be >= 1");
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
          TORCH_CHECK(code >= 0 && code < C * HW, "derain::dark_channel_backward: index out of range");
          ob[(code % C) * HW + code / C] += gp[p];
        }
      }
    });
  });
  return gx;
}

}  // namespace

TORCH_LIBRARY_IMPL(derain, CPU, m) {
  m.impl("dark_channel", &dark_channel_cpu);
  m.impl("dark_channel_backward", &dark_channel_backward_cpu);
}

}  // namespace derain
