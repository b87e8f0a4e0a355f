// The losses of the related methods as ops: the device op (with its autograd) and the reduction,
// in one dispatcher call from Python. Registered for CompositeImplicitAutograd, so autograd flows
// through the ops they call and torch.compile traces through them; the reductions are the
// formulas the Python functions used, so the results are the same bits. The public functions
// (derain_kernels/ops/{tv,dark_channel,rain_direction}.py) call these for 4-D inputs and keep
// their argument checks for the error messages (docs/design/call-cost.md).
#include <torch/library.h>

#include <algorithm>

#include "common.h"

namespace derain {
namespace {

using namespace autograd;

enum class Reduction { Mean, Sum, None };

Reduction parse_reduction(c10::string_view r, const char* op) {
  if (r == "mean") return Reduction::Mean;
  if (r == "sum") return Reduction::Sum;
  TORCH_CHECK_VALUE(r == "none", "derain::", op, ": reduction must be 'mean', 'sum' or 'none', got '",
                    std::string(r), "'");
  return Reduction::None;
}

void check_images(const at::Tensor& x, const char* name, const char* op) {
  TORCH_CHECK_VALUE(x.dim() == 4, "derain::", op, ": ", name, " must be (B, C, H, W), got ", x.sizes());
}

// ---- tv_loss: per-direction means (or sums) of |d|^p ----
at::Tensor tv_loss(const at::Tensor& x, c10::string_view reduction, int64_t p, c10::string_view padding) {
  check_images(x, "x", "_tv_loss");
  const Reduction red = parse_reduction(reduction, "_tv_loss");
  static const auto sums_op =
      op_handle<at::Tensor(const at::Tensor&, int64_t, c10::string_view)>("derain::_tv_sums");
  const at::Tensor s = sums_op.call(x, p, padding);  // (N, 2); checks p, padding and the dtype
  if (red == Reduction::Sum) return s.sum();
  const int64_t N = x.size(0), C = x.size(1), H = x.size(2), W = x.size(3);
  const bool zeros = padding == "zeros";
  const double nv = double(C * (zeros ? H : std::max<int64_t>(H - 1, 0)) * W);
  const double nh = double(C * H * (zeros ? W : std::max<int64_t>(W - 1, 0)));
  const at::Tensor sv = s.select(1, 0), sh = s.select(1, 1);
  if (red == Reduction::Mean) return sv.sum().div(double(N) * nv).add(sh.sum().div(double(N) * nh));
  return sv.div(nv).add(sh.div(nh));
}

// ---- dark_channel_loss: |D(x)| averaged (or summed) ----
at::Tensor dark_channel_loss(const at::Tensor& x, int64_t patch, c10::string_view reduction) {
  check_images(x, "x", "_dark_channel_loss");
  const Reduction red = parse_reduction(reduction, "_dark_channel_loss");
  TORCH_CHECK_VALUE(patch >= 1 && patch % 2 == 1, "derain::_dark_channel_loss: patch must be odd and >= 1, got ",
                    patch);
  // the patch the kernel runs: one of 2·max(H, W) − 1 or more already covers the whole image
  const int64_t run = std::min<int64_t>(patch, std::max<int64_t>(2 * std::max(x.size(2), x.size(3)) - 1, 1));
  static const auto dark_op =
      op_handle<std::tuple<at::Tensor, at::Tensor>(const at::Tensor&, int64_t)>("derain::_dark_channel");
  const at::Tensor d = std::get<0>(dark_op.call(x, run)).abs();
  if (red == Reduction::Mean) return d.mean();
  if (red == Reduction::Sum) return d.sum();
  return d.flatten(-3).mean(-1);
}

// ---- rain_direction_loss: the sums of |k ⋆ (z − z_gt)| over the given kernels, reduced ----
at::Tensor rain_direction_loss(const at::Tensor& z, const at::Tensor& z_gt, const at::Tensor& kernels,
                               c10::string_view reduction) {
  check_images(z, "z", "_rain_direction_loss");
  const Reduction red = parse_reduction(reduction, "_rain_direction_loss");
  static const auto sums_op = op_handle<at::Tensor(const at::Tensor&, const at::Tensor&, const at::Tensor&)>(
      "derain::_rain_direction_sums");
  const at::Tensor s = sums_op.call(z, z_gt, kernels);  // (B, M)
  if (red == Reduction::Sum) return s.sum();
  if (red == Reduction::Mean) return s.sum().div(double(z.numel()));  // NaN for empty inputs, like torch.mean
  return s.sum(1).div(double(z.size(1) * z.size(2) * z.size(3)));
}

}  // namespace

TORCH_LIBRARY_IMPL(derain, CompositeImplicitAutograd, m) {
  m.impl("_tv_loss", &tv_loss);
  m.impl("_dark_channel_loss", &dark_channel_loss);
  m.impl("_rain_direction_loss", &rain_direction_loss);
}

}  // namespace derain
