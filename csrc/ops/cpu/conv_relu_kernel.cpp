// CPU kernels of conv3x3_relu: out = relu(conv3x3(cat(x, x2); weight) + bias), stride 1, padding 1,
// and its backward, on the 3x3 convolution engine (conv3x3/pipeline.h) like the block's: row
// pipelines over image bands in parallel, Winograd rows where the engine has them (16 or 32 input
// channels), no concatenation materialised (x and x2 are loaded side by side into one store row),
// the ReLU in the convolution's epilogue. The backward reads the gradient through the ReLU's mask
// (out > 0), computes both inputs' gradients with one adjoint convolution (unless the caller needs
// none) and the weight gradient in the same pass; per-band partial sums are added in double in a
// fixed order (deterministic).
#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include "common/plane.h"
#include "conv3x3/band_sums.h"
#include "conv3x3/pipeline.h"

namespace derain {
namespace {

using conv3x3::Epilogue;
using conv3x3::Kind;
using conv3x3::Layer;
using conv3x3::Pipeline;

// Channel geometry: x's channels at 0, x2's at xoff (x's channel count padded to 16) in one store
// row of `ch` channels; the convolution reads cin = xoff + C2 of them.
struct Geometry {
  int64_t N, H, W, C1, C2, Cout, xoff, ch, cin, coutp;
  conv3x3::CatChannels cat() const { return {C1, xoff}; }  // cat channel i -> store channel cat()(i)
};

Geometry geometry(const at::Tensor& x, const c10::optional<at::Tensor>& x2, const at::Tensor& w) {
  TORCH_CHECK(x.dim() == 4, "derain: x must be (N, C, H, W), got ", x.sizes());
  Geometry g;
  g.N = x.size(0), g.C1 = x.size(1), g.H = x.size(2), g.W = x.size(3);
  g.C2 = x2 ? x2->size(1) : 0;
  if (x2) {
    TORCH_CHECK(x2->dim() == 4 && x2->size(0) == g.N && x2->size(2) == g.H && x2->size(3) == g.W,
                "derain: x2 must be (N, C2, H, W) with x's N, H, W; got ", x2->sizes(), " and ", x.sizes());
    TORCH_CHECK(x2->scalar_type() == x.scalar_type(), "derain: x2 must have x's dtype");
  }
  TORCH_CHECK(w.dim() == 4 && w.size(1) == g.C1 + g.C2 && w.size(2) == 3 && w.size(3) == 3,
              "derain: weight must be (Cout, ", g.C1 + g.C2, ", 3, 3), got ", w.sizes());
  TORCH_CHECK(w.scalar_type() == x.scalar_type(), "derain: weight must have x's dtype");
  g.Cout = w.size(0);
  g.xoff = x2 ? (g.C1 + 15) / 16 * 16 : g.C1;
  g.cin = g.xoff + g.C2;
  g.ch = x2 ? g.xoff + (g.C2 + 15) / 16 * 16 : g.C1;
  g.coutp = conv3x3::padded_channels<float>(g.Cout);
  return g;
}

// Loads x (and x2) into store s of pipeline p; returns the layers to depend on.
template <typename T>
std::vector<int> load_inputs(Pipeline<T>& p, int s, const at::Tensor& x, const c10::optional<at::Tensor>& x2,
                             const Geometry& g, int64_t n) {
  std::vector<int> layers;
  Layer<T> l;
  l.kind = Kind::LoadImage;
  l.out = s;
  l.image = image_view<T>(x, n);
  layers.push_back(p.add_layer(l));
  if (x2) {
    Layer<T> l2;
    l2.kind = Kind::LoadImage;
    l2.out = s, l2.out_choff = g.xoff;
    l2.image = image_view<T>(*x2, n);
    layers.push_back(p.add_layer(l2));
  }
  return layers;
}

at::Tensor empty_out(const at::Tensor& x, int64_t C) {
  const auto fmt = channels_last_output(x) ? at::MemoryFormat::ChannelsLast : at::MemoryFormat::Contiguous;
  return at::empty({x.size(0), C, x.size(2), x.size(3)}, x.options().memory_format(fmt));
}

template <typename T>
void forward_impl(const at::Tensor& x, const c10::optional<at::Tensor>& x2, const at::Tensor& w,
                  const at::Tensor& b, const Geometry& g, at::Tensor& out) {
  const auto wr = conv3x3::relayout_weight<T>(w, g.cin, g.coutp, false, g.cat());
  const auto wg = conv3x3::winograd_weights_for<T>(wr, g.cin, g.coutp);
  const auto br = conv3x3::relayout_bias<T>(b, g.coutp);
  const bool wino = conv3x3::winograd_fits(conv3x3::winograd_cache_bytes(g.W, 1, g.cin));
  const int64_t nb = bands_per_image(g.N, g.H, 16);
  at::parallel_for(0, g.N * nb, 1, [&](int64_t begin, int64_t end) {
    for (int64_t task = begin; task < end; ++task) {
      const int64_t n = task / nb, band = task % nb;
      Pipeline<T> p(g.H, g.W, 1);
      p.allow_winograd(wino);
      const int s = p.add_store(g.ch);
      Layer<T> c;
      c.epi = Epilogue::ReluImage;
      c.in = s, c.cin = g.cin, c.d = 1, c.w = wr.data(), c.b = br.data(), c.coutp = g.coutp;
      c.wg_shared = wg.empty() ? nullptr : wg.data();
      c.image = image_view<T>(out, n);
      for (int l : load_inputs(p, s, x, x2, g, n)) c.deps.push_back({l, 1});
      p.add_layer(c);
      p.run(g.H * band / nb, g.H * (band + 1) / nb);
    }
  });
}

// gx, gx2 = conv^T(gz) split at xoff; gw = cat(x, x2) (*) gz; gb = sum gz, with gz = grad * [out > 0].
template <typename T>
void backward_impl(const at::Tensor& grad, const at::Tensor& out, const at::Tensor& x,
                   const c10::optional<at::Tensor>& x2, const at::Tensor& w, const Geometry& g, at::Tensor& gx,
                   at::Tensor& gx2, at::Tensor& gw, at::Tensor& gb, bool input_grad) {
  const int64_t outp = conv3x3::padded_channels<float>(g.ch);  // the adjoint writes x's and x2's store channels
  const auto wt = input_grad ? conv3x3::relayout_weight<T>(w, g.Cout, outp, true, g.cat()) : std::vector<T>();
  const auto wtg = input_grad ? conv3x3::winograd_weights_for<T>(wt, g.Cout, outp) : std::vector<T>();
  const std::vector<T> zero_bias(outp, T(0));
  const bool wino = conv3x3::winograd_fits((input_grad ? conv3x3::winograd_cache_bytes(g.W, 1, g.Cout) : 0) +
                                           conv3x3::winograd_cache_bytes(g.W, 1, g.cin));
  const bool wino_w = wino && conv3x3::wgrad_winograd_applies<T>(g.cin, 1);
  const int64_t wsize = 9 * g.cin * g.coutp;
  const int64_t psize = (18 + 24) * g.cin * g.coutp;  // Winograd point sums, then the row-pair sums
  const int64_t p_off = wsize + g.coutp, part_size = p_off + (wino_w ? psize : 0);
  const int64_t nb = bands_per_image(g.N, g.H, 16), ntasks = g.N * nb;
  std::vector<std::vector<T>> parts(ntasks);
  std::vector<int64_t> pshift(ntasks, 0);  // Winograd points start on a cache line of each part
  at::parallel_for(0, ntasks, 1, [&](int64_t begin, int64_t end) {
    for (int64_t task = begin; task < end; ++task) {
      const int64_t n = task / nb, band = task % nb;
      std::vector<T>& part = parts[task];
      part.assign(part_size + 16, T(0));
      const int64_t shift = pshift[task] = conv3x3::cache_line_shift(part.data() + p_off);
      Pipeline<T> p(g.H, g.W, 1);
      p.allow_winograd(wino);
      const int sx = p.add_store(g.ch), sz = p.add_store(g.coutp);
      const std::vector<int> loads = load_inputs(p, sx, x, x2, g, n);
      Layer<T> gz;
      gz.kind = Kind::LoadGradMask;
      gz.out = sz;
      gz.image = image_view<T>(grad, n);
      gz.image2 = image_view<T>(out, n);
      const int l_gz = p.add_layer(gz);
      if (input_grad) {
        Layer<T> gi;  // the inputs' gradients
        gi.epi = Epilogue::SplitImage;
        gi.in = sz, gi.cin = g.Cout, gi.d = 1, gi.w = wt.data(), gi.b = zero_bias.data(), gi.coutp = outp;
        gi.wg_shared = wtg.empty() ? nullptr : wtg.data();
        gi.image = image_view<T>(gx, n);
        if (x2) gi.image2 = image_view<T>(gx2, n), gi.image2_choff = g.xoff;
        gi.deps = {{l_gz, 1}};
        p.add_layer(gi);
      }
      Layer<T> gwl;
      gwl.kind = Kind::WeightGrad;
      gwl.in = sx, gwl.cin = g.cin, gwl.d = 1, gwl.aux = sz, gwl.coutp = g.coutp;
      gwl.gw = part.data(), gwl.gb = part.data() + wsize;
      if (wino_w) gwl.gwp = part.data() + p_off + shift, gwl.gwq = gwl.gwp + 18 * g.cin * g.coutp;
      for (int l : loads) gwl.deps.push_back({l, 1});
      gwl.deps.push_back({l_gz, 0});
      p.add_layer(gwl);
      p.run(g.H * band / nb, g.H * (band + 1) / nb);
    }
  });
  std::vector<double> total = conv3x3::sum_band_parts(parts, pshift, p_off, part_size);
  if (wino_w) {
    conv3x3::wino_fold_row_pairs(total.data() + p_off, g.cin, g.coutp);
    conv3x3::wino_points_to_taps(total.data() + p_off, g.cin * g.coutp, total.data());
  }
  T* gwp = gw.data_ptr<T>();
  const int64_t cat = g.C1 + g.C2;
  for (int64_t co = 0; co < g.Cout; ++co)
    for (int64_t i = 0; i < cat; ++i)
      for (int t = 0; t < 9; ++t)
        gwp[(co * cat + i) * 9 + t] = static_cast<T>(total[(t * g.cin + g.cat()(i)) * g.coutp + co]);
  for (int64_t c = 0; c < g.Cout; ++c) gb.data_ptr<T>()[c] = static_cast<T>(total[wsize + c]);
}

at::Tensor conv3x3_relu_cpu(const at::Tensor& x, const at::Tensor& w, const at::Tensor& b,
                            const c10::optional<at::Tensor>& x2) {
  const Geometry g = geometry(x, x2, w);
  TORCH_CHECK(b.dim() == 1 && b.size(0) == g.Cout && b.scalar_type() == x.scalar_type(),
              "derain: bias must be (", g.Cout, ",) of x's dtype, got ", b.sizes(), " ", b.scalar_type());
  at::Tensor out = empty_out(x, g.Cout);
  if (out.numel() == 0) return out;
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "conv3x3_relu", [&] { forward_impl<scalar_t>(x, x2, w, b, g, out); });
  return out;
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor> conv3x3_relu_backward_cpu(
    const at::Tensor& grad, const at::Tensor& out, const at::Tensor& x, const at::Tensor& w,
    const c10::optional<at::Tensor>& x2, bool input_grad) {
  const Geometry g = geometry(x, x2, w);
  const std::vector<int64_t> out_shape{g.N, g.Cout, g.H, g.W};
  TORCH_CHECK(grad.sizes().equals(out_shape) && out.sizes().equals(out_shape),
              "derain: grad and out must be (N, Cout, H, W) = ", at::IntArrayRef(out_shape), ", got ", grad.sizes(),
              " and ", out.sizes());
  TORCH_CHECK(grad.scalar_type() == x.scalar_type() && out.scalar_type() == x.scalar_type(),
              "derain: grad and out must have x's dtype");
  at::Tensor gx = input_grad ? empty_out(x, g.C1) : at::empty({0}, x.options());
  at::Tensor gx2 = x2 && input_grad ? empty_out(*x2, g.C2) : at::empty({0}, x.options());
  at::Tensor gw = at::zeros(w.sizes(), w.options());
  at::Tensor gb = at::zeros({g.Cout}, w.options());
  if (x.numel() == 0) {
    gx.zero_();
    gx2.zero_();
    return {gx, gx2, gw, gb};
  }
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "conv3x3_relu_backward", [&] {
    backward_impl<scalar_t>(grad, out, x, x2, w, g, gx, gx2, gw, gb, input_grad);
  });
  return {gx, gx2, gw, gb};
}

}  // namespace

TORCH_LIBRARY_IMPL(derain, CPU, m) {
  m.impl("conv3x3_relu", &conv3x3_relu_cpu);
  m.impl("_conv3x3_relu_backward", &conv3x3_relu_backward_cpu);
}

}  // namespace derain
