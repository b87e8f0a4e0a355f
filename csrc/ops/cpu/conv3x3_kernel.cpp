// CPU kernels of conv3x3 (docs/ops/conv3x3.md) for few output channels (Cout <= 4: an RGB output
// layer), where the block engine's vectors over 16 output channels would be mostly padding and
// oneDNN runs far below its 16-channel speed. Vectors run over the input channels of channels-last
// pixels instead: the forward accumulates one vector per output channel over the 9 taps and
// reduces it once per pixel; the backward computes the input gradient (a vector per pixel) and
// the weight gradient (9 x Cout vectors per task, added in double over tasks in a fixed order:
// deterministic) in one pass. The activation is applied in the store, and its derivative taken
// from the saved output. float32 with 16 channels runs rows of AVX-512 or AVX2 + FMA vectors;
// other channel counts and float64 run portable loops; more than 4 output channels run the ATen
// ops (common/conv3x3_impl.h).
#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <cmath>
#include <vector>

#if defined(__AVX512F__) || (defined(__AVX2__) && defined(__FMA__))
#include <immintrin.h>
#define DERAIN_CONV3X3_V16 1  // the 16-channel rows below: one zmm, or two ymm, per pixel
#endif

#include "../common/conv3x3_impl.h"

namespace derain {
namespace {

using conv3x3_impl::Activation;
constexpr int64_t kMaxCout = 4;
constexpr int64_t kBandRows = 16;  // rows per task of the backward (fixed: results do not depend on threads)

bool takes(const at::Tensor& x, const at::Tensor& w) {
  return (x.scalar_type() == at::kFloat || x.scalar_type() == at::kDouble) && w.size(0) <= kMaxCout &&
         x.numel() > 0 && x.size(1) >= 1;
}

template <typename T>
inline T activate(T z, Activation a) {
  return a == Activation::Relu ? (z > T(0) ? z : (std::isnan(z) ? z : T(0))) : a == Activation::Tanh ? std::tanh(z) : z;
}

// weight (Cout, C, 3, 3) as [tap][co][ci]
template <typename T>
std::vector<T> taps_first(const at::Tensor& w) {
  const at::Tensor wc = w.contiguous();
  const T* s = wc.const_data_ptr<T>();
  const int64_t co_n = w.size(0), c = w.size(1);
  std::vector<T> r(9 * co_n * c);
  for (int64_t co = 0; co < co_n; ++co)
    for (int64_t ci = 0; ci < c; ++ci)
      for (int t = 0; t < 9; ++t) r[(t * co_n + co) * c + ci] = s[(co * c + ci) * 9 + t];
  return r;
}

// The 9 input pixels (channels-last rows of C values) a 3x3 window at (y, x) reads; `zero` outside.
template <typename T>
inline void window(const T* img, int64_t H, int64_t W, int64_t C, int64_t y, int64_t x, const T* zero,
                   const T* taps[9]) {
  for (int ky = 0; ky < 3; ++ky)
    for (int kx = 0; kx < 3; ++kx) {
      const int64_t yy = y + ky - 1, xx = x + kx - 1;
      taps[ky * 3 + kx] = (yy >= 0 && yy < H && xx >= 0 && xx < W) ? img + (yy * W + xx) * C : zero;
    }
}

// One output pixel: out[co] = act(bias[co] + sum over taps and ci of x(tap)[ci] w[tap][co][ci]).
// With the channel count known at compile time (CC) the Cout accumulators are registers.
template <typename T, int CC>
inline void pixel(const T* const taps[9], const T* wr, const T* bias, int64_t C, int64_t Co, T* acc, T* res) {
  constexpr int64_t kC = CC ? CC : 1;
  T local[CC ? kMaxCout : 1][kC];
  for (int64_t co = 0; co < Co; ++co) {
    T* av = CC ? local[co] : acc + co * C;
#pragma omp simd
    for (int64_t ci = 0; ci < (CC ? CC : C); ++ci) av[ci] = T(0);
    for (int t = 0; t < 9; ++t) {
      const T* xt = taps[t];
      const T* wt = wr + (t * Co + co) * C;
#pragma omp simd
      for (int64_t ci = 0; ci < (CC ? CC : C); ++ci) av[ci] += xt[ci] * wt[ci];
    }
    T s = T(0);
#pragma omp simd reduction(+ : s)
    for (int64_t ci = 0; ci < (CC ? CC : C); ++ci) s += av[ci];
    res[co] = s + bias[co];
  }
}

#if defined(DERAIN_CONV3X3_V16)
// 16 floats (a pixel's 16 channels): one zmm with AVX-512, two ymm with AVX2 + FMA.
// (GCC 12 warns about the undefined pass-through operand inside _mm512_reduce_add_ps: a false
// positive, as in conv3x3/kernels_avx512_winograd.h.)
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#if defined(__AVX512F__)
struct V16 {
  __m512 v;
};
inline V16 vload(const float* p) { return {_mm512_loadu_ps(p)}; }
inline void vstore(float* p, V16 a) { _mm512_storeu_ps(p, a.v); }
inline V16 vzero() { return {_mm512_setzero_ps()}; }
inline V16 vset1(float s) { return {_mm512_set1_ps(s)}; }
inline V16 vfma(V16 a, V16 b, V16 c) { return {_mm512_fmadd_ps(a.v, b.v, c.v)}; }
inline V16 vadd(V16 a, V16 b) { return {_mm512_add_ps(a.v, b.v)}; }
inline float vsum(V16 a) { return _mm512_reduce_add_ps(a.v); }
#else
struct V16 {
  __m256 lo, hi;
};
inline V16 vload(const float* p) { return {_mm256_loadu_ps(p), _mm256_loadu_ps(p + 8)}; }
inline void vstore(float* p, V16 a) { _mm256_storeu_ps(p, a.lo), _mm256_storeu_ps(p + 8, a.hi); }
inline V16 vzero() { return {_mm256_setzero_ps(), _mm256_setzero_ps()}; }
inline V16 vset1(float s) { return {_mm256_set1_ps(s), _mm256_set1_ps(s)}; }
inline V16 vfma(V16 a, V16 b, V16 c) { return {_mm256_fmadd_ps(a.lo, b.lo, c.lo), _mm256_fmadd_ps(a.hi, b.hi, c.hi)}; }
inline V16 vadd(V16 a, V16 b) { return {_mm256_add_ps(a.lo, b.lo), _mm256_add_ps(a.hi, b.hi)}; }
inline float vsum(V16 a) {
  const __m256 s = _mm256_add_ps(a.lo, a.hi);
  __m128 t = _mm_add_ps(_mm256_castps256_ps128(s), _mm256_extractf128_ps(s, 1));
  t = _mm_add_ps(t, _mm_movehl_ps(t, t));
  return _mm_cvtss_f32(_mm_add_ss(t, _mm_movehdup_ps(t)));
}
#endif

// float, 16 input channels: one V16 per pixel. Forward of output row y for all x: two pixels at a
// time (2 x CO independent FMA chains, the weights loaded once for both).
template <int CO>
void forward_row16(const float* img, int64_t H, int64_t W, int64_t y, const float* wr, const float* bias,
                   const float* zero, float* res /* W x CO */) {
  auto load = [&](int64_t yy, int64_t xx) {
    return (yy >= 0 && yy < H && xx >= 0 && xx < W) ? vload(img + (yy * W + xx) * 16)
                                                    : vload(zero);
  };
  int64_t x = 0;
  for (; x < W; x += 2) {
    const bool two = x + 1 < W;
    V16 a0[CO], a1[CO];
    for (int co = 0; co < CO; ++co) a0[co] = a1[co] = vzero();
    for (int ky = 0; ky < 3; ++ky) {
      const V16 u0 = load(y + ky - 1, x - 1), u1 = load(y + ky - 1, x), u2 = load(y + ky - 1, x + 1),
                   u3 = two ? load(y + ky - 1, x + 2) : vzero();
      for (int co = 0; co < CO; ++co) {
        const float* wk = wr + ((ky * 3) * CO + co) * 16;
        const V16 w0 = vload(wk), w1 = vload(wk + CO * 16),
                     w2 = vload(wk + 2 * CO * 16);
        a0[co] = vfma(u0, w0, vfma(u1, w1, vfma(u2, w2, a0[co])));
        a1[co] = vfma(u1, w0, vfma(u2, w1, vfma(u3, w2, a1[co])));
      }
    }
    for (int co = 0; co < CO; ++co) {
      res[x * CO + co] = vsum(a0[co]) + bias[co];
      if (two) res[(x + 1) * CO + co] = vsum(a1[co]) + bias[co];
    }
  }
}

// Backward over the pixels of row y: the weight gradient's 9 x CO vectors accumulate in memory
// (gw, [tap][co][16]) per tap row (3 x CO registers across the row); the input gradient of each
// pixel is 3 independent chains (one per tap row).
template <int CO>
void backward_row16(const float* img, const float* gzn, int64_t H, int64_t W, int64_t y, const float* wr,
                    const float* zero, float* gw, double* gb, float* gx, int64_t gx_px /* pixel stride */) {
  auto load = [&](int64_t yy, int64_t xx) {
    return (yy >= 0 && yy < H && xx >= 0 && xx < W) ? vload(img + (yy * W + xx) * 16)
                                                    : vload(zero);
  };
  const float* g = gzn + y * W * CO;
  for (int ky = 0; ky < 3; ++ky) {
    V16 acc[3][CO];
    for (int kx = 0; kx < 3; ++kx)
      for (int co = 0; co < CO; ++co) acc[kx][co] = vzero();
    const int64_t yy = y + ky - 1;
    if (yy >= 0 && yy < H)
      for (int64_t x = 0; x < W; ++x) {
        const V16 u0 = load(yy, x - 1), u1 = vload(img + (yy * W + x) * 16), u2 = load(yy, x + 1);
        for (int co = 0; co < CO; ++co) {
          const V16 gv = vset1(g[x * CO + co]);
          acc[0][co] = vfma(gv, u0, acc[0][co]);
          acc[1][co] = vfma(gv, u1, acc[1][co]);
          acc[2][co] = vfma(gv, u2, acc[2][co]);
        }
      }
    for (int kx = 0; kx < 3; ++kx)
      for (int co = 0; co < CO; ++co) {
        float* dst = gw + ((ky * 3 + kx) * CO + co) * 16;
        vstore(dst, vadd(vload(dst), acc[kx][co]));
      }
  }
  for (int64_t x = 0; x < W; ++x)
    for (int co = 0; co < CO; ++co) gb[co] += g[x * CO + co];
  if (gx == nullptr) return;
  for (int64_t x = 0; x < W; ++x) {
    V16 r[3];
    for (int ky = 0; ky < 3; ++ky) {
      r[ky] = vzero();
      const int64_t yy = y - ky + 1;
      if (yy < 0 || yy >= H) continue;
      for (int kx = 0; kx < 3; ++kx) {
        const int64_t xx = x - kx + 1;
        if (xx < 0 || xx >= W) continue;
        const float* gs = gzn + (yy * W + xx) * CO;
        for (int co = 0; co < CO; ++co)
          r[ky] = vfma(vset1(gs[co]), vload(wr + ((ky * 3 + kx) * CO + co) * 16),
                                  r[ky]);
      }
    }
    vstore(gx + x * gx_px, vadd(vadd(r[0], r[1]), r[2]));
  }
}

template <typename F>
void with_cout(int64_t co, F&& f) {
  switch (co) {
    case 1: f(std::integral_constant<int, 1>()); break;
    case 2: f(std::integral_constant<int, 2>()); break;
    case 3: f(std::integral_constant<int, 3>()); break;
    default: f(std::integral_constant<int, 4>());
  }
}
#pragma GCC diagnostic pop
#endif

template <typename T, int CC>  // CC: the channel count at compile time (0: at run time)
void forward_impl(const at::Tensor& xcl, const at::Tensor& w, const at::Tensor& b, Activation a, at::Tensor& out) {
  const int64_t N = xcl.size(0), C = CC ? CC : xcl.size(1), H = xcl.size(2), W = xcl.size(3), Co = w.size(0);
  const std::vector<T> wr = taps_first<T>(w);
  const at::Tensor bc = b.contiguous();
  const T* bias = bc.const_data_ptr<T>();
  const T* X = xcl.const_data_ptr<T>();
  T* O = out.data_ptr<T>();
  const int64_t sn = out.stride(0), sc = out.stride(1), sy = out.stride(2), sx = out.stride(3);
  const std::vector<T> zero(C, T(0));
  at::parallel_for(0, N * H, 1, [&](int64_t begin, int64_t end) {
    std::vector<T> acc(kMaxCout * C), rowbuf(W * kMaxCout);
    for (int64_t row = begin; row < end; ++row) {
      const int64_t n = row / H, y = row % H;
      const T* img = X + n * H * W * C;
#if defined(DERAIN_CONV3X3_V16)
      if constexpr (std::is_same<T, float>::value && CC == 16) {
        with_cout(Co, [&](auto co_n) {
          forward_row16<decltype(co_n)::value>(img, H, W, y, wr.data(), bias, zero.data(), rowbuf.data());
        });
        for (int64_t x = 0; x < W; ++x)
          for (int64_t co = 0; co < Co; ++co) {
            const T v = rowbuf[x * Co + co];  // tanh: one vectorised pass over the output afterwards
            O[n * sn + co * sc + y * sy + x * sx] = a == Activation::Relu ? activate(v, a) : v;
          }
        continue;
      }
#endif
      for (int64_t x = 0; x < W; ++x) {
        const T* taps[9];
        window(img, H, W, C, y, x, zero.data(), taps);
        T res[kMaxCout];
        pixel<T, CC>(taps, wr.data(), bias, C, Co, acc.data(), res);
        for (int64_t co = 0; co < Co; ++co)  // tanh: one vectorised pass over the output afterwards
          O[n * sn + co * sc + y * sy + x * sx] = a == Activation::Relu ? activate(res[co], a) : res[co];
      }
    }
  });
  if (a == Activation::Tanh) out.tanh_();
}

template <typename T, int CC>
void backward_impl(const at::Tensor& grad, const at::Tensor& out, const at::Tensor& xcl, const at::Tensor& w,
                   Activation a, bool input_grad, at::Tensor& gx, at::Tensor& gw, at::Tensor& gb) {
  const int64_t N = xcl.size(0), C = CC ? CC : xcl.size(1), H = xcl.size(2), W = xcl.size(3), Co = w.size(0);
  const std::vector<T> wr = taps_first<T>(w);
  const T* X = xcl.const_data_ptr<T>();
  // gz = grad * activation'(out), channels-last (N, H, W, Co)
  std::vector<T> gz(N * H * W * Co);
  {
    const T* G = grad.const_data_ptr<T>();
    const T* O = out.const_data_ptr<T>();
    const int64_t gs[4] = {grad.stride(0), grad.stride(1), grad.stride(2), grad.stride(3)};
    const int64_t os[4] = {out.stride(0), out.stride(1), out.stride(2), out.stride(3)};
    at::parallel_for(0, N * H, 16, [&](int64_t begin, int64_t end) {
      for (int64_t row = begin; row < end; ++row) {
        const int64_t n = row / H, y = row % H;
        for (int64_t x = 0; x < W; ++x)
          for (int64_t co = 0; co < Co; ++co) {
            const T g = G[n * gs[0] + co * gs[1] + y * gs[2] + x * gs[3]];
            const T o = O[n * os[0] + co * os[1] + y * os[2] + x * os[3]];
            gz[((n * H + y) * W + x) * Co + co] =
                a == Activation::Relu ? (o > T(0) ? g : T(0)) : a == Activation::Tanh ? g * (T(1) - o * o) : g;
          }
      }
    });
  }
  const int64_t nb = (H + kBandRows - 1) / kBandRows, ntasks = N * nb, wsize = 9 * Co * C;
  std::vector<std::vector<double>> parts(ntasks);
  T* GX = input_grad ? gx.data_ptr<T>() : nullptr;
  const int64_t xs[4] = {input_grad ? gx.stride(0) : 0, input_grad ? gx.stride(1) : 0,
                         input_grad ? gx.stride(2) : 0, input_grad ? gx.stride(3) : 0};
  const std::vector<T> zero(C, T(0));
  at::parallel_for(0, ntasks, 1, [&](int64_t begin, int64_t end) {
    std::vector<T> gwl(wsize), gxv(C);
    for (int64_t task = begin; task < end; ++task) {
      const int64_t n = task / nb, band = task % nb;
      const T* img = X + n * H * W * C;
      const T* gzn = gz.data() + n * H * W * Co;
      std::fill(gwl.begin(), gwl.end(), T(0));
      std::vector<double> gbl(Co, 0.0);
#if defined(DERAIN_CONV3X3_V16)
      if constexpr (std::is_same<T, float>::value && CC == 16) {
        const bool dense = !input_grad || xs[1] == 1;  // channels-last gx: a pixel is one vector
        if (dense) {
          for (int64_t y = band * kBandRows; y < std::min(H, (band + 1) * kBandRows); ++y)
            with_cout(Co, [&](auto co_n) {
              backward_row16<decltype(co_n)::value>(img, gzn, H, W, y, wr.data(), zero.data(), gwl.data(),
                                                    gbl.data(), input_grad ? GX + n * xs[0] + y * xs[2] : nullptr,
                                                    xs[3]);
            });
          std::vector<double>& part = parts[task];
          part.assign(gwl.begin(), gwl.end());
          part.insert(part.end(), gbl.begin(), gbl.end());
          continue;
        }
      }
#endif
      for (int64_t y = band * kBandRows; y < std::min(H, (band + 1) * kBandRows); ++y)
        for (int64_t x = 0; x < W; ++x) {
          const T* taps[9];
          window(img, H, W, C, y, x, zero.data(), taps);
          const T* g = gzn + (y * W + x) * Co;
          for (int t = 0; t < 9; ++t)  // weight gradient: gw[t][co] += gz(y, x)[co] * x(window tap t)
            for (int64_t co = 0; co < Co; ++co) {
              const T gv = g[co];
              T* acc = gwl.data() + (t * Co + co) * C;
              const T* xt = taps[t];
#pragma omp simd
              for (int64_t ci = 0; ci < C; ++ci) acc[ci] += gv * xt[ci];
            }
          for (int64_t co = 0; co < Co; ++co) gbl[co] += g[co];
          if (!input_grad) continue;
          // input gradient at (y, x): sum over taps of gz(y - ky + 1, x - kx + 1) * w[tap]
#pragma omp simd
          for (int64_t ci = 0; ci < C; ++ci) gxv[ci] = T(0);
          for (int ky = 0; ky < 3; ++ky)
            for (int kx = 0; kx < 3; ++kx) {
              const int64_t yy = y - ky + 1, xx = x - kx + 1;
              if (yy < 0 || yy >= H || xx < 0 || xx >= W) continue;
              const T* gs = gzn + (yy * W + xx) * Co;
              for (int64_t co = 0; co < Co; ++co) {
                const T gv = gs[co];
                const T* wt = wr.data() + ((ky * 3 + kx) * Co + co) * C;
#pragma omp simd
                for (int64_t ci = 0; ci < C; ++ci) gxv[ci] += gv * wt[ci];
              }
            }
          T* dst = GX + n * xs[0] + y * xs[2] + x * xs[3];
          for (int64_t ci = 0; ci < C; ++ci) dst[ci * xs[1]] = gxv[ci];
        }
      std::vector<double>& part = parts[task];
      part.assign(gwl.begin(), gwl.end());
      part.insert(part.end(), gbl.begin(), gbl.end());
    }
  });
  std::vector<double> total(wsize + Co, 0.0);
  for (const auto& part : parts)  // task order: deterministic
    for (int64_t i = 0; i < wsize + Co; ++i) total[i] += part[i];
  T* GW = gw.data_ptr<T>();  // (Co, C, 3, 3) contiguous
  for (int64_t co = 0; co < Co; ++co)
    for (int64_t ci = 0; ci < C; ++ci)
      for (int t = 0; t < 9; ++t) GW[(co * C + ci) * 9 + t] = static_cast<T>(total[(t * Co + co) * C + ci]);
  for (int64_t co = 0; co < Co; ++co) gb.data_ptr<T>()[co] = static_cast<T>(total[wsize + co]);
}

template <typename F>
void with_channels(int64_t c, F&& f) {  // the network's 16-channel maps at compile time
  if (c == 16)
    f(std::integral_constant<int, 16>());
  else
    f(std::integral_constant<int, 0>());
}

void check_args(const at::Tensor& x, const at::Tensor& w, const at::Tensor& b) {
  TORCH_CHECK(x.dim() == 4, "derain: x must be (N, C, H, W), got ", x.sizes());
  TORCH_CHECK(w.dim() == 4 && w.size(1) == x.size(1) && w.size(2) == 3 && w.size(3) == 3,
              "derain: weight must be (Cout, ", x.size(1), ", 3, 3), got ", w.sizes());
  TORCH_CHECK(b.dim() == 1 && b.size(0) == w.size(0), "derain: bias must be (", w.size(0), ",), got ", b.sizes());
  TORCH_CHECK(w.scalar_type() == x.scalar_type() && b.scalar_type() == x.scalar_type(),
              "derain: x, weight and bias must have one dtype");
}

at::Tensor conv3x3_cpu(const at::Tensor& x, const at::Tensor& w, const at::Tensor& b, c10::string_view activation) {
  check_args(x, w, b);
  const Activation a = conv3x3_impl::parse_activation(activation);
  if (!takes(x, w)) return conv3x3_impl::forward(x, w, b, activation);
  const at::Tensor xcl = x.contiguous(at::MemoryFormat::ChannelsLast);
  at::Tensor out = at::empty({x.size(0), w.size(0), x.size(2), x.size(3)},
                             x.options().memory_format(conv3x3_impl::out_format(x)));
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "conv3x3", [&] {
    with_channels(x.size(1), [&](auto cc) { forward_impl<scalar_t, decltype(cc)::value>(xcl, w, b, a, out); });
  });
  return out;
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> conv3x3_backward_cpu(const at::Tensor& grad, const at::Tensor& out,
                                                                   const at::Tensor& x, const at::Tensor& w,
                                                                   c10::string_view activation, bool input_grad) {
  TORCH_CHECK(x.dim() == 4 && w.dim() == 4, "derain: x and weight must be 4-D");
  const std::vector<int64_t> out_shape{x.size(0), w.size(0), x.size(2), x.size(3)};
  TORCH_CHECK(grad.sizes().equals(out_shape) && out.sizes().equals(out_shape),
              "derain: grad and out must be (N, Cout, H, W) = ", at::IntArrayRef(out_shape), ", got ", grad.sizes(),
              " and ", out.sizes());
  TORCH_CHECK(grad.scalar_type() == x.scalar_type() && out.scalar_type() == x.scalar_type(),
              "derain: grad and out must have x's dtype");
  const Activation a = conv3x3_impl::parse_activation(activation);
  if (!takes(x, w)) return conv3x3_impl::backward(grad, out, x, w, activation, input_grad);
  const at::Tensor xcl = x.contiguous(at::MemoryFormat::ChannelsLast);
  at::Tensor gx = input_grad ? at::empty(x.sizes(), x.options().memory_format(conv3x3_impl::out_format(x)))
                             : at::empty({0}, x.options());
  at::Tensor gw = at::empty(w.sizes(), w.options());
  at::Tensor gb = at::empty({w.size(0)}, w.options());
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "conv3x3_backward", [&] {
    with_channels(x.size(1), [&](auto cc) {
      backward_impl<scalar_t, decltype(cc)::value>(grad, out, xcl, w, a, input_grad, gx, gw, gb);
    });
  });
  return {gx, gw, gb};
}

}  // namespace

TORCH_LIBRARY_IMPL(derain, CPU, m) {
  m.impl("conv3x3", &conv3x3_cpu);
  m.impl("_conv3x3_backward", &conv3x3_backward_cpu);
}

}  // namespace derain
