// CPU kernel of the fused inference of the Rain O'er Me network G (docs/method.md#network-g):
//   Y = X - tanh(outc(merge12(cat(f01, tree3(f01))))),  f01 = merge11(cat(f0, f1)),
//   f0 = tree1(inc(X)), f1 = tree2(f0),  tree(t) = merge(cat(a1 = block(t), block(a1))).
// All 19 convolutions run as one line-buffer pipeline (conv3x3/pipeline.h) per
// image band: each layer keeps only the few rows its consumers still need, so
// the whole network streams through the cache row by row; the concatenations
// are free (the two halves are written into one 2C-channel store). Bands and
// images run in parallel on all threads; inference only (no autograd).
#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include "common/plane.h"
#include "conv3x3/pipeline.h"

namespace derain {
namespace {

using conv3x3::Epilogue;
using conv3x3::Kind;
using conv3x3::Layer;
using conv3x3::Pipeline;

constexpr int kConvs = 19;  // inc, 3 x (2 blocks x 2 convs + merge), merge11, merge12, outc

// Whether convolution i reads a concatenation of two feature maps (2C input channels).
bool is_merge(int i) { return i == 5 || i == 10 || i == 11 || i == 16 || i == 17; }

template <typename T>
void network_impl(const at::Tensor& x, const std::vector<at::Tensor>& params, int64_t d, at::Tensor& out) {
  const int64_t N = x.size(0), Cin = x.size(1), H = x.size(2), W = x.size(3);
  const int64_t C = params[0].size(0);
  const int64_t Cp = conv3x3::padded_channels<T>(C);
  const int64_t Op = conv3x3::padded_channels<T>(Cin);
  // Re-laid-out weights, in the order of `params` (see derain_kernels/ops/network.py).
  std::vector<std::vector<T>> w(kConvs), b(kConvs), wg(kConvs);  // wg: Winograd weights, once per call
  for (int i = 0; i < kConvs; ++i) {
    const at::Tensor& wi = params[2 * i];
    const int64_t coutp = i == kConvs - 1 ? Op : Cp;
    // a merge's input channel i of cat(a, b) sits at i (i < C) or Cp + i - C in its 2Cp-channel store
    w[i] = is_merge(i) ? conv3x3::relayout_weight<T>(wi, 2 * Cp, coutp, false, {C, Cp})
                       : conv3x3::relayout_weight<T>(wi, wi.size(1), coutp);
    b[i] = conv3x3::relayout_bias<T>(params[2 * i + 1], coutp);
    wg[i] = conv3x3::winograd_weights_for<T>(w[i], is_merge(i) ? 2 * Cp : wi.size(1), coutp);
  }
  // transformed-row caches of the Winograd layers: 6 blocks (d = 1 and d), 5 merges (cin 2 Cp) and
  // outc; past the budget every convolution runs direct
  const bool wino = conv3x3::winograd_fits(6 * (conv3x3::winograd_cache_bytes(W, 1, C) + conv3x3::winograd_cache_bytes(W, d, C)) +
                                           5 * conv3x3::winograd_cache_bytes(W, 1, 2 * Cp) + conv3x3::winograd_cache_bytes(W, 1, C));
  const int64_t nb = bands_per_image(N, H, 32);
  at::parallel_for(0, N * nb, 1, [&](int64_t begin, int64_t end) {
    for (int64_t task = begin; task < end; ++task) {
      const int64_t n = task / nb, band = task % nb;
      const int64_t r0 = H * band / nb, r1 = H * (band + 1) / nb;
      Pipeline<T> p(H, W, std::max<int64_t>(d, 1));
      p.allow_winograd(wino);
      int conv = 0;  // index into w, b
      auto add_conv = [&](Epilogue epi, int in, int64_t in_choff, int64_t cin, int64_t dil, int64_t coutp,
                          std::vector<std::pair<int, int64_t>> deps) {
        Layer<T> l;
        l.epi = epi;
        l.in = in, l.in_choff = in_choff, l.cin = cin, l.d = dil;
        l.w = w[conv].data(), l.b = b[conv].data(), l.coutp = coutp;
        l.wg_shared = wg[conv].empty() ? nullptr : wg[conv].data();
        l.deps = std::move(deps);
        ++conv;
        return l;
      };
      // input
      const int sx = p.add_store(Cin);
      Layer<T> load;
      load.kind = Kind::LoadImage;
      load.out = sx;
      load.image = image_view<T>(x, n);
      const int l_load = p.add_layer(load);
      // inc
      const int sfi = p.add_store(Cp);
      Layer<T> inc = add_conv(Epilogue::Relu, sx, 0, Cin, 1, Cp, {{l_load, 1}});
      inc.out = sfi;
      const int l_inc = p.add_layer(inc);
      // one self-correcting block: input (store, choff, producer) -> output (store, choff); returns the layer
      auto block = [&](int sin, int64_t in_choff, int l_in, int sout, int64_t out_choff) {
        const int sla = p.add_store(Cp), se = p.add_store(Cp);
        Layer<T> c1 = add_conv(Epilogue::ReluSplit, sin, in_choff, C, 1, Cp, {{l_in, 1}});
        c1.out = sla, c1.out2 = se, c1.aux = sin, c1.aux_choff = in_choff;
        const int l_c1 = p.add_layer(c1);
        Layer<T> c3 = add_conv(Epilogue::AddRelu, se, 0, C, d, Cp, {{l_c1, d}});
        c3.aux = sla, c3.out = sout, c3.out_choff = out_choff;
        return p.add_layer(c3);
      };
      auto merge = [&](int scat, int l_a, int l_b, int sout, int64_t out_choff) {
        Layer<T> m = add_conv(Epilogue::Relu, scat, 0, 2 * Cp, 1, Cp, {{l_a, 1}, {l_b, 1}});
        m.out = sout, m.out_choff = out_choff;
        return p.add_layer(m);
      };
      auto tree = [&](int sin, int64_t in_choff, int l_in, int sout, int64_t out_choff) {
        const int scat = p.add_store(2 * Cp);
        const int l_a1 = block(sin, in_choff, l_in, scat, 0);
        const int l_a2 = block(scat, 0, l_a1, scat, Cp);
        return merge(scat, l_a1, l_a2, sout, out_choff);
      };
      const int sA = p.add_store(2 * Cp), sB = p.add_store(2 * Cp), s33 = p.add_store(Cp);
      const int l_f0 = tree(sfi, 0, l_inc, sA, 0);
      const int l_f1 = tree(sA, 0, l_f0, sA, Cp);
      const int l_f01 = merge(sA, l_f0, l_f1, sB, 0);
      const int l_f3 = tree(sB, 0, l_f01, sB, Cp);
      const int l_f33 = merge(sB, l_f01, l_f3, s33, 0);
      Layer<T> outc = add_conv(Epilogue::TanhSubImage, s33, 0, C, 1, Op, {{l_f33, 1}});
      outc.image = image_view<T>(out, n);
      outc.image2 = image_view<T>(x, n);
      p.add_layer(outc);
      TORCH_CHECK(conv == kConvs, "derain: internal error: network plan has ", conv, " convolutions");
      p.run(r0, r1);
    }
  });
}

at::Tensor rain_oer_me_derain_cpu(const at::Tensor& x, at::TensorList params_list, int64_t dilation) {
  TORCH_CHECK(x.dim() == 4, "derain: x must be (N, C, H, W), got ", x.sizes());
  TORCH_CHECK(static_cast<int64_t>(params_list.size()) == 2 * kConvs, "derain: expected ", 2 * kConvs,
              " parameter tensors (weight, bias of 19 convolutions), got ", params_list.size());
  TORCH_CHECK(dilation >= 1, "derain: dilation must be >= 1, got ", dilation);
  std::vector<at::Tensor> params(params_list.begin(), params_list.end());
  const int64_t Cin = x.size(1), C = params[0].size(0);
  for (int i = 0; i < kConvs; ++i) {
    const at::Tensor& wi = params[2 * i];
    const at::Tensor& bi = params[2 * i + 1];
    const int64_t cin = i == 0 ? Cin : (is_merge(i) ? 2 * C : C);
    const int64_t cout = i == kConvs - 1 ? Cin : C;
    TORCH_CHECK(wi.dim() == 4 && wi.size(0) == cout && wi.size(1) == cin && wi.size(2) == 3 && wi.size(3) == 3,
                "derain: weight ", i, " must be (", cout, ", ", cin, ", 3, 3), got ", wi.sizes());
    TORCH_CHECK(bi.dim() == 1 && bi.size(0) == cout, "derain: bias ", i, " must be (", cout, ",), got ",
                bi.sizes());
    TORCH_CHECK(wi.scalar_type() == x.scalar_type() && bi.scalar_type() == x.scalar_type(),
                "derain: parameters must have x's dtype");
  }
  const auto fmt = channels_last_output(x) ? at::MemoryFormat::ChannelsLast : at::MemoryFormat::Contiguous;
  at::Tensor out = at::empty(x.sizes(), x.options().memory_format(fmt));
  if (out.numel() == 0) return out;
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "rain_oer_me_derain", [&] {
    network_impl<scalar_t>(x, params, dilation, out);
  });
  return out;
}

}  // namespace

TORCH_LIBRARY_IMPL(derain, CPU, m) { m.impl("_rain_oer_me_derain", &rain_oer_me_derain_cpu); }

}  // namespace derain
