// CPU kernels of the fused self-correcting dilated block:
//   la = relu(conv3x3(x; w1, b1)); e = x - la; out = relu(conv3x3_d(e; w3, b3) + la)
// and its backward. Both run as line-buffer pipelines (conv3x3/pipeline.h) over
// image bands, in parallel over (image, band) on all threads: no intermediate
// full-size map is written. self_correcting_block_backward saves nothing but x
// and out: it recomputes la and e row by row and takes the mask of the final
// ReLU from out. The training pair (self_correcting_block_train, which also
// returns la with the mask [out > 0] in its sign bit, and
// self_correcting_block_backward_la) skips that recompute and does not read out:
// one convolution of the five in the backward and one map less to read.
#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include "common/plane.h"
#include "conv3x3/band_sums.h"
#include "conv3x3/pipeline.h"
#include "output_cache.h"

namespace derain {
namespace {

using conv3x3::Epilogue;
using conv3x3::Kind;
using conv3x3::Layer;
using conv3x3::Pipeline;

void check_block_args(const at::Tensor& x, const at::Tensor& w1, const at::Tensor& b1, const at::Tensor& w3,
                      const at::Tensor& b3, int64_t dilation) {
  TORCH_CHECK(x.dim() == 4, "derain: x must be (N, C, H, W), got ", x.sizes());
  const int64_t C = x.size(1);
  for (const at::Tensor* w : {&w1, &w3})
    TORCH_CHECK(w->dim() == 4 && w->size(0) == C && w->size(1) == C && w->size(2) == 3 && w->size(3) == 3,
                "derain: block weights must be (C, C, 3, 3) with C = ", C, ", got ", w->sizes());
  for (const at::Tensor* b : {&b1, &b3})
    TORCH_CHECK(b->dim() == 1 && b->size(0) == C, "derain: block biases must be (C,), got ", b->sizes());
  for (const at::Tensor* t : {&w1, &b1, &w3, &b3})
    TORCH_CHECK(t->scalar_type() == x.scalar_type(), "derain: parameters must have x's dtype");
  TORCH_CHECK(dilation >= 1, "derain: dilation must be >= 1, got ", dilation);
}

// Channels-last output for a channels-last input, contiguous otherwise
// (mirrored by the fake-tensor rules in derain_kernels/ops/block.py); large ones from the cache of
// freed outputs (output_cache.h).
at::Tensor empty_like_layout(const at::Tensor& x) {
  return output_cache::empty4d(x.sizes(), x.options(), channels_last_output(x));
}

template <typename T>
void block_forward_impl(const at::Tensor& x, const at::Tensor& w1, const at::Tensor& b1, const at::Tensor& w3,
                        const at::Tensor& b3, int64_t d, at::Tensor& out, at::Tensor* la_out = nullptr) {
  const int64_t N = x.size(0), C = x.size(1), H = x.size(2), W = x.size(3);
  const int64_t Cp = conv3x3::padded_channels<T>(C);
  const auto w1r = conv3x3::relayout_weight<T>(w1, C, Cp), w3r = conv3x3::relayout_weight<T>(w3, C, Cp);
  const bool wino = conv3x3::winograd_fits(conv3x3::winograd_cache_bytes(W, 1, C) + conv3x3::winograd_cache_bytes(W, d, C));
  const auto w1g = conv3x3::winograd_weights_for<T>(w1r, C, Cp), w3g = conv3x3::winograd_weights_for<T>(w3r, C, Cp);
  const auto b1r = conv3x3::relayout_bias<T>(b1, Cp), b3r = conv3x3::relayout_bias<T>(b3, Cp);
  const int64_t nb = bands_per_image(N, H, 16);
  at::parallel_for(0, N * nb, 1, [&](int64_t begin, int64_t end) {
    for (int64_t task = begin; task < end; ++task) {
      const int64_t n = task / nb, band = task % nb;
      const int64_t r0 = H * band / nb, r1 = H * (band + 1) / nb;
      Pipeline<T> p(H, W, std::max<int64_t>(d, 1));
      p.allow_winograd(wino);
      const int sx = p.add_store(Cp), sla = p.add_store(Cp), se = p.add_store(Cp);
      Layer<T> load;
      load.kind = Kind::LoadImage;
      load.out = sx;
      load.image = image_view<T>(x, n);
      const int l0 = p.add_layer(load);
      Layer<T> c1;
      c1.epi = Epilogue::ReluSplit;
      c1.in = sx, c1.cin = C, c1.d = 1, c1.w = w1r.data(), c1.b = b1r.data(), c1.coutp = Cp;
      c1.wg_shared = w1g.empty() ? nullptr : w1g.data();
      c1.out = sla, c1.out2 = se, c1.aux = sx;
      c1.deps = {{l0, 1}};
      const int l1 = p.add_layer(c1);
      Layer<T> c3;
      c3.epi = Epilogue::AddReluImage;
      c3.in = se, c3.cin = C, c3.d = d, c3.w = w3r.data(), c3.b = b3r.data(), c3.coutp = Cp;
      c3.wg_shared = w3g.empty() ? nullptr : w3g.data();
      c3.aux = sla;
      c3.image = image_view<T>(out, n);
      // saved for the backward, with the mask [out > 0] in its sign bit
      if (la_out) c3.image2 = image_view<T>(*la_out, n);
      c3.deps = {{l1, d}};
      p.add_layer(c3);
      p.run(r0, r1);
    }
  });
}

at::Tensor block_forward_cpu(const at::Tensor& x, const at::Tensor& w1, const at::Tensor& b1, const at::Tensor& w3,
                             const at::Tensor& b3, int64_t dilation) {
  check_block_args(x, w1, b1, w3, b3, dilation);
  at::Tensor out = empty_like_layout(x);
  if (out.numel() == 0) return out;
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "self_correcting_block", [&] {
    block_forward_impl<scalar_t>(x, w1, b1, w3, b3, dilation, out);
  });
  return out;
}

// Forward for training: (out, la) with |la| = relu(conv3x3(x; w1, b1)) and la's sign bit set where
// out is not > 0 (the mask of the final ReLU; -0.0 where la is 0), for
// self_correcting_block_backward_la. Both have the layout of empty_like_layout(x).
std::tuple<at::Tensor, at::Tensor> block_forward_train_cpu(const at::Tensor& x, const at::Tensor& w1,
                                                           const at::Tensor& b1, const at::Tensor& w3,
                                                           const at::Tensor& b3, int64_t dilation) {
  check_block_args(x, w1, b1, w3, b3, dilation);
  at::Tensor out = empty_like_layout(x);
  at::Tensor la = empty_like_layout(x);
  if (out.numel() == 0) return {out, la};
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "self_correcting_block_train", [&] {
    block_forward_impl<scalar_t>(x, w1, b1, w3, b3, dilation, out, &la);
  });
  return {out, la};
}

// Gradients (gx, gw1, gb1, gw3, gb3). With q = conv_d(e) + b3 + la, p = conv(x) + b1:
//   gq = grad * [out > 0]; ge = conv_d^T(gq); gp = (gq - ge) * [p > 0];
//   gx = ge + conv^T(gp); gw3 = e (*) gq; gw1 = x (*) gp; gb = sums.
// la_saved: la from self_correcting_block_train (undefined: recompute it from x, w1, b1).
template <typename T>
void block_backward_impl(const at::Tensor& grad, const at::Tensor& x, const at::Tensor& out, const at::Tensor& w1,
                         const at::Tensor& b1, const at::Tensor& w3, int64_t d, at::Tensor& gx, at::Tensor& gw1, at::Tensor& gb1,
                         at::Tensor& gw3, at::Tensor& gb3, const at::Tensor& la_saved = at::Tensor()) {
  const int64_t N = x.size(0), C = x.size(1), H = x.size(2), W = x.size(3);
  const int64_t Cp = conv3x3::padded_channels<T>(C);
  const auto w1r = la_saved.defined() ? std::vector<T>() : conv3x3::relayout_weight<T>(w1, C, Cp);
  const auto w1t = conv3x3::relayout_weight<T>(w1, C, Cp, /*transposed=*/true);
  const auto w3t = conv3x3::relayout_weight<T>(w3, C, Cp, /*transposed=*/true);
  const auto w1rg = conv3x3::winograd_weights_for<T>(w1r, C, Cp);  // empty when la is saved (w1r empty)
  const auto w1tg = conv3x3::winograd_weights_for<T>(w1t, C, Cp), w3tg = conv3x3::winograd_weights_for<T>(w3t, C, Cp);
  const auto b1r = la_saved.defined() ? std::vector<T>() : conv3x3::relayout_bias<T>(b1, Cp);
  const std::vector<T> zero_bias(Cp, T(0));
  const int64_t nb = bands_per_image(N, H, 16);
  const int64_t ntasks = N * nb;
  const int64_t wsize = 9 * C * Cp;
  // Weight gradients as Winograd F(4,3) point sums ([3][6][C][Cp] per conv, after the direct
  // parts) where the kernel supports it (float, AVX-512, C % 16 == 0, d <= 3; config wgrad_winograd=False
  // turns it off); converted to taps once, after the band sums.
  // all five Winograd layers of the backward (three convolutions, two weight gradients) share one cache
  // budget: past it (very wide rows) everything runs direct
  const bool wino = conv3x3::winograd_fits(3 * conv3x3::winograd_cache_bytes(W, 1, C) + 2 * conv3x3::winograd_cache_bytes(W, d, C));
  const bool wino1 = wino && conv3x3::wgrad_winograd_applies<T>(C, 1);
  const bool wino3 = wino && conv3x3::wgrad_winograd_applies<T>(C, d);
  // [3][6] point sums, then the [4][6] row-pair sums (wgrad_rows_pair_winograd_avx512)
  const int64_t psize = (18 + 24) * C * Cp;
  const int64_t p1_off = 2 * wsize + 2 * Cp, p3_off = p1_off + (wino1 ? psize : 0);
  const int64_t part_size = p3_off + (wino3 ? psize : 0);
  const bool la_direct = la_saved.defined() && C == Cp && la_saved.stride(1) == 1 && la_saved.stride(3) == C;
  std::vector<std::vector<T>> parts(ntasks);
  std::vector<int64_t> pshift(ntasks, 0);  // Winograd points start on a cache line of each part
  at::parallel_for(0, ntasks, 1, [&](int64_t begin, int64_t end) {
    for (int64_t task = begin; task < end; ++task) {
      const int64_t n = task / nb, band = task % nb;
      const int64_t r0 = H * band / nb, r1 = H * (band + 1) / nb;
      std::vector<T>& part = parts[task];
      part.assign(part_size + 16, T(0));  // gw1, gw3, gb1, gb3 (taps), then Winograd points of conv1, conv3
      const int64_t shift = pshift[task] = conv3x3::cache_line_shift(part.data() + p1_off);
      Pipeline<T> p(H, W, std::max<int64_t>(d, 1));
      p.allow_winograd(wino);
      // la saved in dense channels-last rows without padding channels: the backward epilogue reads
      // it straight from the tensor (no ring of |la| rows to write: the step ~1 % faster)
      const int sx = p.add_store(Cp), sla = la_direct ? -1 : p.add_store(Cp), se = p.add_store(Cp);
      const int sq = p.add_store(Cp), sge = p.add_store(Cp), sgp = p.add_store(Cp);
      Layer<T> load;
      load.kind = Kind::LoadImage;
      load.out = sx;
      load.image = image_view<T>(x, n);
      const int l_load = p.add_layer(load);
      Layer<T> c1;
      if (la_saved.defined()) {  // la loaded, e = x - la
        c1.kind = Kind::LoadSplit;
        c1.image = image_view<T>(la_saved, n);
        c1.deps = {{l_load, 0}};
      } else {  // la recomputed
        c1.epi = Epilogue::ReluSplit;
        c1.in = sx, c1.cin = C, c1.d = 1, c1.w = w1r.data(), c1.b = b1r.data(), c1.coutp = Cp;
        c1.wg_shared = w1rg.empty() ? nullptr : w1rg.data();
        c1.deps = {{l_load, 1}};
      }
      c1.out = sla, c1.out2 = se, c1.aux = sx;
      const int l_c1 = p.add_layer(c1);
      Layer<T> gq;
      gq.kind = Kind::LoadGradMask;
      gq.out = sq;
      gq.image = image_view<T>(grad, n);
      // mask of the final ReLU: out > 0, or the saved la's sign bit clear
      gq.image2 = image_view<T>(la_saved.defined() ? la_saved : out, n);
      gq.sign_mask = la_saved.defined();
      const int l_gq = p.add_layer(gq);
      Layer<T> ge;
      ge.epi = Epilogue::BackwardE;
      ge.in = sq, ge.cin = C, ge.d = d, ge.w = w3t.data(), ge.b = zero_bias.data(), ge.coutp = Cp;
      ge.wg_shared = w3tg.empty() ? nullptr : w3tg.data();
      ge.out = sge, ge.out2 = sgp, ge.aux = sq, ge.aux2 = sla;
      if (la_direct) ge.image2 = image_view<T>(la_saved, n);
      ge.deps = {{l_gq, d}, {l_c1, 0}};
      const int l_ge = p.add_layer(ge);
      Layer<T> gxl;
      gxl.epi = Epilogue::AddImage;
      gxl.in = sgp, gxl.cin = C, gxl.d = 1, gxl.w = w1t.data(), gxl.b = zero_bias.data(), gxl.coutp = Cp;
      gxl.wg_shared = w1tg.empty() ? nullptr : w1tg.data();
      gxl.aux = sge;
      gxl.image = image_view<T>(gx, n);
      gxl.deps = {{l_ge, 1}};
      p.add_layer(gxl);
      Layer<T> g3;
      g3.kind = Kind::WeightGrad;
      g3.in = se, g3.cin = C, g3.d = d, g3.aux = sq, g3.coutp = Cp;
      g3.gw = part.data() + wsize, g3.gb = part.data() + 2 * wsize + Cp;
      if (wino3) g3.gwp = part.data() + p3_off + shift, g3.gwq = g3.gwp + 18 * C * Cp;
      g3.deps = {{l_c1, d}, {l_gq, 0}};
      p.add_layer(g3);
      Layer<T> g1;
      g1.kind = Kind::WeightGrad;
      g1.in = sx, g1.cin = C, g1.d = 1, g1.aux = sgp, g1.coutp = Cp;
      g1.gw = part.data(), g1.gb = part.data() + 2 * wsize;
      if (wino1) g1.gwp = part.data() + p1_off + shift, g1.gwq = g1.gwp + 18 * C * Cp;
      g1.deps = {{l_load, 1}, {l_ge, 0}};
      p.add_layer(g1);
      p.run(r0, r1);
    }
  });
  // Sum the band partials in a fixed order (deterministic: every value sums the tasks in task order,
  // whichever thread does it; split over the threads, it was ~0.1 ms of serial time per step at
  // 8x16x128^2), then lay out as (C, C, 3, 3).
  std::vector<double> total = conv3x3::sum_band_parts(parts, pshift, p1_off, part_size);
  for (const auto& [on, off, taps] : {std::tuple<bool, int64_t, int64_t>{wino1, p1_off, 0}, {wino3, p3_off, wsize}}) {
    if (!on) continue;
    conv3x3::wino_fold_row_pairs(total.data() + off, C, Cp);
    conv3x3::wino_points_to_taps(total.data() + off, C * Cp, total.data() + taps);
  }
  T* g1p = gw1.data_ptr<T>();
  T* g3p = gw3.data_ptr<T>();
  for (int64_t co = 0; co < C; ++co)
    for (int64_t ci = 0; ci < C; ++ci)
      for (int t = 0; t < 9; ++t) {
        g1p[(co * C + ci) * 9 + t] = static_cast<T>(total[(t * C + ci) * Cp + co]);
        g3p[(co * C + ci) * 9 + t] = static_cast<T>(total[wsize + (t * C + ci) * Cp + co]);
      }
  for (int64_t c = 0; c < C; ++c) {
    gb1.data_ptr<T>()[c] = static_cast<T>(total[2 * wsize + c]);
    gb3.data_ptr<T>()[c] = static_cast<T>(total[2 * wsize + Cp + c]);
  }
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor> block_backward_cpu(
    const at::Tensor& grad, const at::Tensor& x, const at::Tensor& out, const at::Tensor& w1, const at::Tensor& b1,
    const at::Tensor& w3, const at::Tensor& b3, int64_t dilation) {
  check_block_args(x, w1, b1, w3, b3, dilation);
  TORCH_CHECK(grad.sizes() == x.sizes() && out.sizes() == x.sizes(), "derain: grad and out must have x's shape");
  TORCH_CHECK(grad.scalar_type() == x.scalar_type() && out.scalar_type() == x.scalar_type(),
              "derain: grad and out must have x's dtype");
  at::Tensor gx = empty_like_layout(x);
  at::Tensor gw1 = at::zeros(w1.sizes(), w1.options());
  at::Tensor gb1 = at::zeros(b1.sizes(), b1.options());
  at::Tensor gw3 = at::zeros(w3.sizes(), w3.options());
  at::Tensor gb3 = at::zeros(b3.sizes(), b3.options());
  if (x.numel() == 0) return {gx, gw1, gb1, gw3, gb3};
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "self_correcting_block_backward", [&] {
    block_backward_impl<scalar_t>(grad, x, out, w1, b1, w3, dilation, gx, gw1, gb1, gw3, gb3);
  });
  return {gx, gw1, gb1, gw3, gb3};
}

// Backward of self_correcting_block_train: la is its second output (la with the final ReLU's mask
// in the sign bit), read instead of recomputed; the output itself is not needed.
std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor> block_backward_la_cpu(
    const at::Tensor& grad, const at::Tensor& x, const at::Tensor& la, const at::Tensor& w1, const at::Tensor& w3,
    int64_t dilation) {
  TORCH_CHECK(w1.dim() == 4 && x.dim() == 4, "derain: x must be (N, C, H, W) and w1 (C, C, 3, 3)");
  const at::Tensor b = at::empty({x.size(1)}, x.options());  // shapes only: biases are not needed
  check_block_args(x, w1, b, w3, b, dilation);
  TORCH_CHECK(grad.sizes() == x.sizes() && la.sizes() == x.sizes(), "derain: grad and la must have x's shape");
  TORCH_CHECK(grad.scalar_type() == x.scalar_type() && la.scalar_type() == x.scalar_type(),
              "derain: grad and la must have x's dtype");
  at::Tensor gx = empty_like_layout(x);
  at::Tensor gw1 = at::zeros(w1.sizes(), w1.options());
  at::Tensor gb1 = at::zeros({x.size(1)}, x.options());
  at::Tensor gw3 = at::zeros(w3.sizes(), w3.options());
  at::Tensor gb3 = at::zeros({x.size(1)}, x.options());
  if (x.numel() == 0) return {gx, gw1, gb1, gw3, gb3};
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "self_correcting_block_backward_la", [&] {
    block_backward_impl<scalar_t>(grad, x, at::Tensor(), w1, b, w3, dilation, gx, gw1, gb1, gw3, gb3, la);
  });
  return {gx, gw1, gb1, gw3, gb3};
}

}  // namespace

TORCH_LIBRARY_IMPL(derain, CPU, m) {
  m.impl("self_correcting_block", &block_forward_cpu);
  m.impl("_self_correcting_block_backward", &block_backward_cpu);
  m.impl("_self_correcting_block_train", &block_forward_train_cpu);
  m.impl("_self_correcting_block_backward_la", &block_backward_la_cpu);
}

}  // namespace derain
