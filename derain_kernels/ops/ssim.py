"""SSIM and the SSIM loss (docs/method.md#ssim-in-the-losses, docs/ops/ssim.md): one fused forward and one fused backward kernel.

    S = ((2 μx μy + C1)(2 σxy + C2)) / ((μx² + μy² + C1)(σx² + σy² + C2)),
    C1 = (k1·L)², C2 = (k2·L)², L = data_range,

where μ, σ², σxy are Gaussian-weighted (normalised 1-D window, outer product)
local means, variances and covariance. Variances are clamped at 0 and where
either one is clamped the covariance is set to 0 (Cauchy–Schwarz), so identical
or constant images give exactly 1 with finite gradients. See docs/ops/ssim.md.
"""
from __future__ import annotations

import torch

from .. import reference
from .._backend import has_op
from .._checks import check_choice, check_int, check_real, check_same, check_tensor
from .._contracts import SIGMA_MIN, effective_constants, map_shape
from ._common import eager_cache, explain_failure, register_triton_cuda

_CPP = has_op("ssim")
# ssim() calls the kernel first and checks only when it raises (ops/_common.py, explain_failure);
# the scalar arguments are checked once per distinct set (_plan).
_SSIM = torch.ops.derain.ssim.default if _CPP else None
_SSIM_WITH_GRAD = torch.ops.derain._ssim_with_grad.default if _CPP else None

PADDINGS = ("zeros", "valid", "reflect")
REDUCTIONS = ("mean", "none", "map")
# The largest window. The CPU kernel keeps rings of window_size rows of the padded
# width (W + window_size - 1) per thread and the Triton kernel loops over window_size²
# taps per pixel, so memory and time grow with the window without bound; windows past
# 1023 (already 50x the usual 11 to 21) are refused rather than left to exhaust memory.
MAX_WINDOW_SIZE = 1023


def _check_params(window_size, sigma, data_range, padding, reduction, k1, k2):
    window_size = check_int(window_size, "window_size", 1, MAX_WINDOW_SIZE)
    if window_size % 2 == 0:
        raise ValueError(f"window_size must be an odd int >= 1, got {window_size}")
    sigma = check_real(sigma, "sigma", positive=True)
    data_range = check_real(data_range, "data_range", positive=True)
    k1 = check_real(k1, "k1", positive=True)
    k2 = check_real(k2, "k2", positive=True)
    check_choice(padding, "padding", PADDINGS)
    check_choice(reduction, "reduction", REDUCTIONS)
    return window_size, sigma, data_range, padding, reduction, k1, k2


def _check_inputs(x, y, window_size, padding):
    check_tensor(x, "x", min_dim=2)
    check_tensor(y, "y", min_dim=2)
    check_same(x, "x", y, "y")
    if x.shape != y.shape:
        raise ValueError(f"x and y must have the same shape, got {tuple(x.shape)} and {tuple(y.shape)}")
    h, w = x.shape[-2:]
    r = window_size // 2
    if padding == "valid" and (h < window_size or w < window_size):
        raise ValueError(f"window_size={window_size} is larger than the images ({h}x{w}) and padding='valid' "
                         "needs the window to fit; use padding='zeros' or a smaller window_size")
    if padding == "reflect" and (h <= r or w <= r):
        raise ValueError(f"padding='reflect' needs images larger than window_size // 2 = {r} in both dims, "
                         f"got {h}x{w}; use padding='zeros' or a smaller window_size")


def ssim(x: torch.Tensor, y: torch.Tensor, window_size: int = 11, sigma: float = 1.5, data_range: float = 1.0,
         padding: str = "zeros", reduction: str = "mean", k1: float = 0.01, k2: float = 0.03) -> torch.Tensor:
    """Structural similarity of x and y.

    Shapes: x, y (..., H, W), same shape (images are (B, C, H, W); every leading
    index is a separate plane). Returns: "mean" -> () the mean of the map over
    everything; "none" -> (B,) the mean per leading index 0 (() for 2-D inputs);
    "map" -> (..., H, W), or (..., H-w+1, W-w+1) for padding "valid". Empty inputs
    give empty maps, and a mean over no values is NaN (like torch.mean).
    padding: "zeros" (authors/PReNet, zero padding w//2, same size), "valid"
    (skimage/pytorch_msssim), "reflect" (kornia/torchmetrics, torch reflect).
    window_size: odd, 1 <= window_size <= MAX_WINDOW_SIZE (1023).
    Dtypes: float32, float64; float16/bfloat16 are computed in float32 and cast back.
    C1 and C2 are kept in a range where identical images give exactly 1 (see
    docs/ops/ssim.md: tiny or huge data_range runs in float64).
    Gradient: to both x and y. NaN inputs give NaN in every map value whose window touches them.
    """
    if _CPP:
        try:
            plan = _plan(window_size, sigma, data_range, padding, reduction, k1, k2, x.dtype)
            if plan[-1] and x.numel():
                return _ssim_kernel(x, y, *plan[:-1])
        except Exception:
            explain_failure(_check_all, x, y, window_size, sigma, data_range, padding, reduction, k1, k2)
            raise
    window_size, sigma, data_range, padding, reduction, k1, k2 = _check_all(
        x, y, window_size, sigma, data_range, padding, reduction, k1, k2)
    k1, k2, data_range, dtype = effective_constants(k1, k2, data_range, x.dtype)
    if dtype != x.dtype:
        out = _ssim(x.to(dtype), y.to(dtype), window_size, sigma, data_range, padding, reduction, k1, k2)
        return out.to(x.dtype)
    return _ssim(x, y, window_size, sigma, data_range, padding, reduction, k1, k2)


def _check_all(x, y, window_size, sigma, data_range, padding, reduction, k1, k2):
    params = _check_params(window_size, sigma, data_range, padding, reduction, k1, k2)
    _check_inputs(x, y, params[0], params[3])
    return params


@eager_cache(maxsize=256)
def _plan(window_size, sigma, data_range, padding, reduction, k1, k2, dtype):
    """The checked and effective scalar arguments of a kernel call, computed once per distinct set
    (typed: True and 1, or 1 and 1.0, are different keys); the last item says whether the kernel
    takes them as they are (the input's own dtype is the compute dtype, a window of more than one tap)."""
    window_size, sigma, data_range, padding, reduction, k1, k2 = _check_params(
        window_size, sigma, data_range, padding, reduction, k1, k2)
    k1, k2, data_range, compute = effective_constants(k1, k2, data_range, dtype)
    direct = compute == dtype and window_size > 1
    return window_size, max(sigma, SIGMA_MIN), data_range, padding, reduction, k1, k2, direct


def _ssim_kernel(x, y, window_size, sigma, data_range, padding, reduction, k1, k2):
    if reduction != "map" and (x.requires_grad or y.requires_grad) and torch.is_grad_enabled():
        # value and gradients in one sweep; the backward is then a multiply.
        # SSIM is symmetric in (x, y) (bit for bit), so a y-only gradient runs on (y, x).
        a, b = (x, y) if x.requires_grad else (y, x)
        return _SSIM_WITH_GRAD(a, b, window_size, sigma, data_range, padding, reduction, k1, k2,
                               x.requires_grad and y.requires_grad)[0]
    return _SSIM(x, y, window_size, sigma, data_range, padding, reduction, k1, k2)


def _ssim(x, y, window_size, sigma, data_range, padding, reduction, k1, k2):
    """ssim() after the checks, in a compute dtype (float32 / float64) with effective constants."""
    sigma = max(sigma, SIGMA_MIN)  # the same window (see SIGMA_MIN)
    h, w = x.shape[-2:]
    if _CPP and window_size > 1 and h > 0 and w > 0:
        return _ssim_kernel(x, y, window_size, sigma, data_range, padding, reduction, k1, k2)
    # one-tap windows are element-wise (the luminance term alone) and empty images have
    # empty maps: both are computed by the reference, which is exact and cheap for them
    return reference.ssim(x, y, window_size, sigma, data_range, padding, reduction, k1, k2)


def ssim_loss(x: torch.Tensor, y: torch.Tensor, window_size: int = 11, sigma: float = 1.5, data_range: float = 1.0,
              padding: str = "zeros", reduction: str = "mean", k1: float = 0.01, k2: float = 0.03) -> torch.Tensor:
    """1 - ssim(x, y, ...): same arguments, shapes and gradients (negated) as `ssim`."""
    # torch.rsub(s, 1) = 1 - s without the Python operator's dispatch (≈ 2 µs per call)
    return torch.rsub(ssim(x, y, window_size, sigma, data_range, padding, reduction, k1, k2), 1)


class SSIMLoss(torch.nn.Module):
    """Module form of `ssim_loss`: arguments are checked at construction; forward(x, y) -> 1 - SSIM."""

    def __init__(self, window_size: int = 11, sigma: float = 1.5, data_range: float = 1.0, padding: str = "zeros",
                 reduction: str = "mean", k1: float = 0.01, k2: float = 0.03):
        super().__init__()
        (self.window_size, self.sigma, self.data_range, self.padding, self.reduction, self.k1,
         self.k2) = _check_params(window_size, sigma, data_range, padding, reduction, k1, k2)

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return ssim_loss(x, y, self.window_size, self.sigma, self.data_range, self.padding, self.reduction,
                         self.k1, self.k2)

    def extra_repr(self) -> str:
        return (f"window_size={self.window_size}, sigma={self.sigma}, data_range={self.data_range}, "
                f"padding={self.padding!r}, reduction={self.reduction!r}, k1={self.k1}, k2={self.k2}")


def _output_shape(x: torch.Tensor, window_size: int, padding: str, reduction: str) -> tuple:
    if reduction == "map":
        return map_shape(x.shape, window_size, padding)
    if reduction == "none" and x.dim() >= 3:
        return (x.shape[0],)
    return ()


if _CPP:
    # ---- fake tensors (shapes and strides for torch.compile / meta) ----
    @torch.library.register_fake("derain::ssim")
    def _ssim_fake(x, y, window_size, sigma, data_range, padding, reduction, k1, k2):
        check_same(x, "x", y, "y")  # a meta input takes this path instead of the kernel's checks
        return x.new_empty(_output_shape(x, window_size, padding, reduction))

    @torch.library.register_fake("derain::_ssim_with_grad")
    def _ssim_with_grad_fake(x, y, window_size, sigma, data_range, padding, reduction, k1, k2, need_y):
        gy = x.new_empty(x.shape) if need_y else x.new_empty((0,))
        return x.new_empty(_output_shape(x, window_size, padding, reduction)), x.new_empty(x.shape), gy

    @torch.library.register_fake("derain::_ssim_backward")
    def _ssim_backward_fake(grad, x, y, window_size, sigma, data_range, padding, reduction, k1, k2):
        return x.new_empty(x.shape), x.new_empty(x.shape)

    @torch.library.register_fake("derain::_ssim_backward_x")
    def _ssim_backward_x_fake(grad, x, y, window_size, sigma, data_range, padding, reduction, k1, k2):
        return x.new_empty(x.shape)

    # ---- autograd ----
    def _ssim_setup(ctx, inputs, output):
        x, y, *params = inputs
        ctx.save_for_backward(x, y)
        ctx.params = params

    def _grads_by_ops(grad, x, y, params, need_x, need_y):
        # Only the gradients autograd asks for: ssim_loss(pred, target) needs no
        # grad of the target, and ssim_backward_x skips its share of the work.
        # SSIM is symmetric in (x, y), so grad_y alone is ssim_backward_x(grad, y, x).
        if need_x and need_y:
            return torch.ops.derain._ssim_backward(grad, x, y, *params)
        if need_x:
            return torch.ops.derain._ssim_backward_x(grad, x, y, *params), None
        if need_y:
            return None, torch.ops.derain._ssim_backward_x(grad, y, x, *params)
        return None, None

    def _ssim_backward(ctx, grad):
        x, y = ctx.saved_tensors
        gx, gy = _grads_by_ops(grad, x, y, ctx.params, ctx.needs_input_grad[0], ctx.needs_input_grad[1])
        return gx, gy, None, None, None, None, None, None, None

    torch.library.register_autograd("derain::ssim", _ssim_backward, setup_context=_ssim_setup)

    def _ssim_with_grad_setup(ctx, inputs, output):
        x, y, *params, need_y = inputs
        _, unit_gx, unit_gy = output
        ctx.mark_non_differentiable(unit_gx, unit_gy)
        ctx.set_materialize_grads(False)  # no full-size zero gradients for the two unused outputs
        ctx.save_for_backward(x, y)
        # kept on ctx rather than saved, so that the backward may scale them in place
        # (non-differentiable outputs hold no reference back to the graph: no cycle)
        ctx.units = (unit_gx, unit_gy)
        ctx.params = params
        ctx.need_y = need_y

    def _ssim_with_grad_backward(ctx, grad, _grad_unit_gx, _grad_unit_gy):
        # The op returned d value/dx (and d value/dy): the chain rule is a multiply,
        # per image for reduction "none". In eager mode it is done in place on those
        # maps (ssim() hands out only the value), once: a second backward of a
        # retained graph, or one under create_graph, runs the backward ops instead
        # (there, double backward fails loudly: not implemented). Traced backwards
        # (torch.compile, opcheck) multiply out of place.
        nones = [None] * 8
        if grad is None:
            return None, None, *nones
        x, y = ctx.saved_tensors
        need_x, need_y = ctx.needs_input_grad[0], ctx.needs_input_grad[1]
        if torch.is_grad_enabled() or ctx.units is None or (need_y and not ctx.need_y):
            return *_grads_by_ops(grad, x, y, ctx.params, need_x, need_y), *nones
        unit_gx, unit_gy = ctx.units
        g = grad.reshape(-1, *([1] * (x.dim() - 1))) if grad.dim() == 1 else grad
        eager = type(unit_gx) is torch.Tensor and type(g) is torch.Tensor and not torch.compiler.is_compiling()
        if not eager:
            return (g * unit_gx if need_x else None), (g * unit_gy if need_y else None), *nones
        ctx.units = None
        return (unit_gx.mul_(g) if need_x else None), (unit_gy.mul_(g) if need_y else None), *nones

    torch.library.register_autograd("derain::_ssim_with_grad", _ssim_with_grad_backward,
                                    setup_context=_ssim_with_grad_setup)

    # ---- CUDA: Triton ----
    for _op in ("ssim", "_ssim_backward", "_ssim_backward_x", "_ssim_with_grad"):
        register_triton_cuda(_op, "ssim")
