"""The logic of the compiled CUDA kernels, tested on the CPU.

Each CUDA kernel of csrc/ops/cuda is a thin grid loop over per-element functions
(csrc/ops/common, `DERAIN_HOST_DEVICE`), driven by an implementation shared with
the test-only ops `derain::_emulate_cuda_<op>`, which run the same functions in
a plain CPU loop. These tests compare the emulated ops with the references (and
with the CPU kernels), so selection order, padding, NaN policy, SSIM terms and
the block's epilogues of the CUDA kernels are checked on machines without a GPU.
"""
import pytest
import torch
import torch.nn.functional as F

import derain_kernels as dk
from derain_kernels import reference
from derain_kernels.reference.dark_channel import dark_channel_with_index
from derain_kernels.reference.rain_direction import rain_direction_sums as ref_rain_direction_sums
from derain_kernels.reference.tv import tv_sums as ref_tv_sums

if not dk.backend_info()["cpp_extension"] or not hasattr(torch.ops.derain, "_emulate_cuda_min_composite"):
    pytest.skip("the C++ extension (with its CUDA-logic emulation ops) is not built", allow_module_level=True)

E = torch.ops.derain
FLOATS = (torch.float32, torch.float64, torch.float16, torch.bfloat16)


def same(a, b):
    """Equal values, NaN where NaN, same shape and dtype."""
    assert a.shape == b.shape and a.dtype == b.dtype, (a.shape, b.shape, a.dtype, b.dtype)
    assert torch.equal(torch.isnan(a), torch.isnan(b)) if a.is_floating_point() else True
    m = ~torch.isnan(a) if a.is_floating_point() else torch.ones_like(a, dtype=torch.bool)
    assert torch.equal(a[m], b[m])


# ---- compositing ----

@pytest.mark.parametrize("dtype", FLOATS)
def test_min_composite_matches_reference_with_ties_nan_broadcast(dtype):
    x = torch.randint(0, 4, (2, 3, 5, 7)).to(dtype)
    y = torch.randint(0, 4, (1, 3, 1, 7)).to(dtype)
    x[0, 0, 0, :3] = float("nan")
    y[0, 1, 0, 2:5] = float("nan")
    out = E._emulate_cuda_min_composite(x, y)
    same(out, reference.min_composite(x, y))
    g = torch.randn(out.shape).to(dtype)
    gx, gy = E._emulate_cuda_min_composite_backward(g, x, y)
    cx, cy = E._min_composite_backward(g, x, y)
    same(gx, cx)
    same(gy, cy)


def test_min_composite_keeps_channels_last_layout():
    x = torch.randn(2, 3, 4, 5).contiguous(memory_format=torch.channels_last)
    out = E._emulate_cuda_min_composite(x, torch.randn(2, 3, 4, 5))
    assert out.stride() == E.min_composite(x, torch.randn(2, 3, 4, 5)).stride()


@pytest.mark.parametrize("dtype", FLOATS)
@pytest.mark.parametrize("clamp", [True, False])
def test_rain_composite_matches_reference(dtype, clamp):
    clean = (torch.rand(2, 3, 5, 6) * 1.4 - 0.2).to(dtype)
    rain = (torch.rand(1, 3, 5, 6) * 0.6 - 0.3).to(dtype)
    clean[0, 0, 0, 0] = float("nan")
    clean[0, 0, 0, 1], rain[0, 0, 0, 1] = 0.75, 0.25  # exactly 1: passes the gradient
    clean[0, 0, 0, 2], rain[0, 0, 0, 2] = 0.25, -0.25  # exactly 0
    out = E._emulate_cuda_rain_composite(clean, rain, clamp)
    same(out, E.rain_composite(clean, rain, clamp))
    ref = reference.rain_composite(clean.double(), rain.double(), clamp).to(dtype)
    torch.testing.assert_close(out, ref, equal_nan=True, atol=0, rtol=0)
    g = torch.randn(out.shape).to(dtype)
    same(E._emulate_cuda_rain_composite_backward(g, clean, rain, clamp),
         E._rain_composite_backward(g, clean, rain, clamp))


# ---- median ----

MEDIAN_CASES = [((2, 3, 7, 9), (3, 3)), ((5, 4), (1, 5)), ((1, 2, 6, 5), (5, 3)), ((3, 4), (9, 9)),
                ((2, 1, 1, 6), (3, 5)), ((1, 1, 8, 1), (7, 1))]


@pytest.mark.parametrize("shape,k", MEDIAN_CASES)
@pytest.mark.parametrize("padding", ["reflect", "replicate", "zeros"])
def test_median_filter_matches_reference_with_ties(shape, k, padding):
    x = torch.randint(-3, 4, shape).float()  # many ties; zeros tie with the zero pad
    x.view(-1)[:2] = 0
    alternate = (torch.arange(x.numel()) % 2 == 0).view(shape)
    x = torch.where((x == 0) & alternate, torch.tensor(-0.0), x)  # mixed -0.0 / +0.0
    assert torch.signbit(x[x == 0]).any() and not torch.signbit(x[x == 0]).all()
    out = E._emulate_cuda_median_filter(x, list(k), padding)
    same(out, reference.median_filter(x, k, padding))
    same(out, E.median_filter(x, list(k), padding))
    g = torch.randn(shape, dtype=torch.float64)
    xd = x.double().requires_grad_()
    (ref_g,) = torch.autograd.grad(reference.median_filter(xd, k, padding), xd, g)
    torch.testing.assert_close(E._emulate_cuda_median_filter_backward(g, x.double(), list(k), padding), ref_g,
                               rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.float16, torch.bfloat16])
@pytest.mark.parametrize("padding", ["reflect", "replicate", "zeros"])
def test_median_negative_zero_ties_with_positive_zero(padding, dtype):
    # -0.0 and +0.0 are equal values, ordered by index (a zero pad first): the gradient shows which
    x = torch.tensor([[0.0, -0.0, 0.0, -0.0, 0.0, -0.0, 1.0]], dtype=dtype)
    g = torch.arange(1.0, 8.0, dtype=dtype).view(1, 7)
    for k in ([1, 3], [1, 5], [3, 3]):
        xd = x.clone().requires_grad_()
        (want,) = torch.autograd.grad(reference.median_filter(xd, tuple(k), padding), xd, g)
        assert torch.equal(E._emulate_cuda_median_filter_backward(g, x, k, padding), want)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float16, torch.bfloat16, torch.uint8])
def test_median_filter_dtypes_and_nan(dtype):
    x = torch.rand(2, 3, 9, 8) * 200
    if dtype != torch.uint8:
        x[0, 1, 4, 4] = float("nan")
    x = x.to(dtype)
    for padding in ("reflect", "replicate", "zeros"):
        out = E._emulate_cuda_median_filter(x, [5, 3], padding)
        same(out, reference.median_filter(x, (5, 3), padding))
    if dtype != torch.uint8:
        g = torch.randn(x.shape).to(dtype)
        got = E._emulate_cuda_median_filter_backward(g, x, [5, 3], "reflect")
        assert torch.isnan(E._emulate_cuda_median_filter(x, [5, 3], "reflect")[0, 1, 2:7, 3:6]).all()
        torch.testing.assert_close(got.double(), E._median_filter_backward(g, x, [5, 3], "reflect").double(),
                                   rtol=1e-2, atol=1e-2)


def test_median_filter_layouts():
    x = torch.randn(2, 3, 6, 7)
    for xl in (x.contiguous(memory_format=torch.channels_last), x.transpose(-1, -2)):
        out = E._emulate_cuda_median_filter(xl, [3, 3], "reflect")
        assert out.stride() == E.median_filter(xl, [3, 3], "reflect").stride()
        same(out, reference.median_filter(xl, (3, 3), "reflect"))


# The tiled selection (csrc/ops/common/median_tiled.h) takes float32/16, bfloat16 and uint8 windows whose
# region fits 8192 positions: tiles of 32x32 outputs up to k = 59, 32x16 to 67, 16x16 to 75, 16x8 to 79,
# 8x8 to 83; larger windows and float64 take the per-pixel selection. One case per tile shape and both
# sides of the limit, on images spanning several tiles and ending in partial ones.
TILED_CASES = [((2, 3, 70, 45), (1, 1)), ((1, 2, 70, 45), (3, 3)), ((1, 1, 67, 41), (31, 31)),
               ((1, 1, 40, 37), (59, 59)), ((1, 1, 40, 37), (61, 67)), ((1, 1, 20, 19), (75, 69)),
               ((1, 1, 21, 17), (79, 77)), ((1, 1, 13, 9), (83, 81)), ((1, 1, 9, 11), (85, 85)),
               ((1, 1, 33, 40), (3, 201)), ((1, 1, 50, 6), (151, 5))]


@pytest.mark.parametrize("shape,k", TILED_CASES)
@pytest.mark.parametrize("padding", ["reflect", "replicate", "zeros"])
def test_median_tiled_selection_matches_cpu_kernel_and_reference(shape, k, padding):
    torch.manual_seed(sum(shape) + k[0])
    x = (torch.randint(-4, 5, shape).float() / 4)  # few values: many ties, zeros tie with the zero pad
    x = torch.where((x == 0) & (torch.rand(shape) < 0.5), torch.tensor(-0.0), x)
    out, index = E._emulate_cuda_median_filter_with_index(x, list(k), padding)
    cpu_out, cpu_index = E._median_filter_with_index(x, list(k), padding)
    same(out, reference.median_filter(x, k, padding))
    same(out, cpu_out)
    assert torch.equal(index, cpu_index)  # the same element selected, under the tie rule
    # the index names the selected source: its value, or -1 for a zero pad (value 0)
    planes = x.reshape(-1, shape[-2] * shape[-1])
    picked = planes.gather(1, index.reshape(planes.shape).clamp_min(0).long()).view(shape)
    assert torch.equal(torch.where(index >= 0, picked, torch.zeros(())), out)
    assert padding == "zeros" or (index >= 0).all()


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.uint8, torch.float64])
def test_median_tiled_selection_dtypes_nan_and_index(dtype):
    x = torch.rand(2, 2, 45, 38) * 200
    if dtype != torch.uint8:
        x[0, 1, 4, 4] = float("nan")
        x[1, 0, 30, 37] = -float("nan")  # a NaN with the sign bit: still NaN, not the smallest value
    x = x.to(dtype)
    for k in ([31, 31], [5, 9]):
        out, index = E._emulate_cuda_median_filter_with_index(x, k, "reflect")
        same(out, reference.median_filter(x, tuple(k), "reflect"))
        assert torch.equal(index, E._median_filter_with_index(x, k, "reflect")[1])
        if dtype != torch.uint8:
            assert (index[out.isnan()] == -1).all() and out.isnan().any()
    if dtype != torch.uint8:
        g = torch.randn(x.shape).to(dtype)
        torch.testing.assert_close(E._emulate_cuda_median_filter_backward(g, x, [31, 31], "reflect").double(),
                                   E._median_filter_backward(g, x, [31, 31], "reflect").double(),
                                   rtol=1e-2, atol=1e-2)


# ---- dark channel ----

@pytest.mark.parametrize("shape,patch", [((2, 3, 7, 9), 3), ((1, 1, 5, 4), 1), ((2, 2, 3, 4), 9), ((1, 3, 1, 6), 5)])
def test_dark_channel_matches_reference_with_ties_and_nan(shape, patch):
    x = torch.randint(0, 3, shape).double()
    x.view(-1)[3] = float("nan")
    out, index = E._emulate_cuda_dark_channel(x, patch)
    ref, code = dark_channel_with_index(x, patch)
    same(out, ref)
    assert torch.equal(index, code)
    g = torch.randn(out.shape, dtype=torch.float64)
    same(E._emulate_cuda_dark_channel_backward(g, index, shape[1]), E._dark_channel_backward(g, index, shape[1]))


# ---- total variation ----

@pytest.mark.parametrize("padding", ["valid", "zeros"])
@pytest.mark.parametrize("p", [1, 2])
@pytest.mark.parametrize("shape", [(2, 3, 5, 7), (1, 1, 1, 6), (2, 2, 4, 1)])
def test_tv_sums_match_reference(p, shape, padding):
    x = torch.randint(-1, 3, shape).double()  # zero differences: sign(0) = 0; zeros on the border too
    x[0, 0, 0, 0] = 0.5
    got = E._emulate_cuda_tv_sums(x, p, padding)
    torch.testing.assert_close(got, ref_tv_sums(x, p, padding), rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(got, E._tv_sums(x, p, padding), rtol=1e-12, atol=1e-12)
    g = torch.randn(shape[0], 2, dtype=torch.float64)
    xd = x.clone().requires_grad_()
    (ref_g,) = torch.autograd.grad(ref_tv_sums(xd, p, padding), xd, g)
    torch.testing.assert_close(E._emulate_cuda_tv_sums_backward(g, x, p, padding), ref_g, rtol=1e-12, atol=1e-12)
    cl = x.contiguous(memory_format=torch.channels_last)
    assert (E._emulate_cuda_tv_sums_backward(g, cl, p, padding).stride()
            == E._tv_sums_backward(g, cl, p, padding).stride())


def test_tv_nan_propagates():
    x = torch.rand(1, 1, 4, 4, dtype=torch.float64)
    x[0, 0, 1, 1] = float("nan")
    assert torch.isnan(E._emulate_cuda_tv_sums(x, 1)).all()
    g = torch.ones(1, 2, dtype=torch.float64)
    same(E._emulate_cuda_tv_sums_backward(g, x, 1), E._tv_sums_backward(g, x, 1))


# ---- rain direction ----

@pytest.mark.parametrize("shape,M,K", [((2, 3, 6, 7), 2, 5), ((1, 1, 3, 2), 3, 5), ((2, 2, 5, 5), 1, 3)])
def test_rain_direction_sums_match_reference(shape, M, K):
    z = torch.rand(shape, dtype=torch.float64)
    zg = torch.rand(shape, dtype=torch.float64)
    zg[0, 0, 0, 0] = z[0, 0, 0, 0]
    k = torch.randn(shape[0], M, K, K, dtype=torch.float64)
    torch.testing.assert_close(E._emulate_cuda_rain_direction_sums(z, zg, k),
                               ref_rain_direction_sums(z, zg, k), rtol=1e-12, atol=1e-12)
    g = torch.randn(shape[0], M, dtype=torch.float64)
    zd = z.clone().requires_grad_()
    (ref_g,) = torch.autograd.grad(ref_rain_direction_sums(zd, zg, k), zd, g)
    torch.testing.assert_close(E._emulate_cuda_rain_direction_sums_backward(g, z, zg, k), ref_g,
                               rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(E._emulate_cuda_rain_direction_sums_backward(g, z, zg, k),
                               E._rain_direction_sums_backward(g, z, zg, k), rtol=1e-12, atol=1e-12)


# ---- SSIM ----

SSIM_CASES = [((2, 3, 13, 11), 7, "zeros"), ((2, 3, 13, 11), 7, "valid"), ((2, 3, 13, 11), 7, "reflect"),
              ((9, 10), 11, "zeros"), ((4, 5), 3, "reflect"), ((1, 2, 11, 12), 11, "valid"), ((1, 1, 3, 5), 11, "zeros")]


@pytest.mark.parametrize("shape,ws,padding", SSIM_CASES)
@pytest.mark.parametrize("reduction", ["mean", "none", "map"])
def test_ssim_value_and_gradients_match_reference(shape, ws, padding, reduction):
    x = torch.rand(shape, dtype=torch.float64)
    y = (x + 0.2 * torch.randn(shape, dtype=torch.float64)).clamp(0, 1)
    args = (ws, 1.5, 1.0, padding, reduction, 0.01, 0.03)
    val = E._emulate_cuda_ssim(x, y, *args)
    torch.testing.assert_close(val, reference.ssim(x, y, *args), rtol=1e-10, atol=1e-12)
    xr, yr = x.clone().requires_grad_(), y.clone().requires_grad_()
    ref = reference.ssim(xr, yr, *args)
    g = torch.randn(ref.shape, dtype=torch.float64)
    rgx, rgy = torch.autograd.grad(ref, (xr, yr), g)
    gx, gy = E._emulate_cuda_ssim_backward(g, x, y, *args)
    torch.testing.assert_close(gx, rgx, rtol=1e-9, atol=1e-12)
    torch.testing.assert_close(gy, rgy, rtol=1e-9, atol=1e-12)
    torch.testing.assert_close(E._emulate_cuda_ssim_backward_x(g, x, y, *args), rgx, rtol=1e-9, atol=1e-12)
    if reduction != "map":
        v, ux, uy = E._emulate_cuda_ssim_with_grad(x, y, *args, True)
        torch.testing.assert_close(v, val, rtol=0, atol=0)
        scale = g.reshape(-1, *([1] * (x.dim() - 1))) if g.dim() == 1 else g
        torch.testing.assert_close(ux * scale, rgx, rtol=1e-9, atol=1e-12)
        torch.testing.assert_close(uy * scale, rgy, rtol=1e-9, atol=1e-12)
        assert E._emulate_cuda_ssim_with_grad(x, y, *args, False)[2].shape == (0,)


@pytest.mark.parametrize("padding", ["zeros", "valid", "reflect"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_ssim_identical_and_constant_images_give_exactly_one(padding, dtype):
    for x in (torch.rand(2, 3, 12, 12, dtype=dtype), torch.zeros(1, 1, 12, 12, dtype=dtype),
              torch.full((1, 1, 12, 12), 255.0, dtype=dtype)):
        v = E._emulate_cuda_ssim(x, x.clone(), 11, 1.5, 255.0, padding, "map", 0.01, 0.03)
        assert torch.equal(v, torch.ones_like(v))
        _, gx, gy = E._emulate_cuda_ssim_with_grad(x, x.clone(), 11, 1.5, 255.0, padding, "mean", 0.01, 0.03, True)
        assert torch.isfinite(gx).all() and torch.isfinite(gy).all()


@pytest.mark.parametrize("padding", ["zeros", "valid", "reflect"])
def test_ssim_gradients_on_flat_regions_match_reference(padding):
    # exactly zero variances: the clamp passes the gradient at 0 (torch.clamp's convention)
    x = torch.rand(1, 2, 14, 13, dtype=torch.float64)
    x[..., :, :8] = 0.0
    y = torch.rand(1, 2, 14, 13, dtype=torch.float64)
    y[..., 3:, 6:] = 0.0
    args = (5, 1.5, 1.0, padding, "mean", 0.01, 0.03)
    xr, yr = x.clone().requires_grad_(), y.clone().requires_grad_()
    rgx, rgy = torch.autograd.grad(reference.ssim(xr, yr, *args), (xr, yr))
    gx, gy = E._emulate_cuda_ssim_backward(torch.ones((), dtype=torch.float64), x, y, *args)
    torch.testing.assert_close(gx, rgx, rtol=1e-9, atol=1e-12)
    torch.testing.assert_close(gy, rgy, rtol=1e-9, atol=1e-12)


def test_ssim_float32_close_to_cpu_kernel_and_nan_spreads():
    x = torch.rand(2, 3, 16, 15)
    y = torch.rand(2, 3, 16, 15)
    for padding in ("zeros", "valid", "reflect"):
        args = (11, 1.5, 1.0, padding, "map", 0.01, 0.03)
        torch.testing.assert_close(E._emulate_cuda_ssim(x, y, *args), E.ssim(x, y, *args), rtol=1e-4, atol=1e-5)
    x[0, 0, 8, 7] = float("nan")
    m = E._emulate_cuda_ssim(x, y, 11, 1.5, 1.0, "zeros", "map", 0.01, 0.03)
    assert torch.isnan(m[0, 0, 3:14, 2:13]).all() and not torch.isnan(m[1]).any()


# The tiled kernels (csrc/ops/common/ssim_tiled.h: tiles of 32 x 16, the default) and the per-element
# ones (config gpu_tiles off) compute every value as the same sum in the same order: equal bit for bit.
# Shapes spanning several tiles with partial ones at the right and bottom, windows whose halo crosses
# tile borders, mirror images at both ends (reflect), a window too large for a tile (61: per element).
SSIM_TILED_CASES = [((2, 3, 37, 70), 11, "zeros"), ((1, 2, 35, 66), 11, "reflect"), ((2, 1, 40, 45), 7, "valid"),
                    ((3, 33, 34), 5, "reflect"), ((1, 1, 17, 33), 15, "valid"), ((1, 1, 70, 66), 61, "zeros")]


@pytest.mark.parametrize("shape,ws,padding", SSIM_TILED_CASES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_ssim_tiles_equal_per_element_kernels_bit_for_bit(shape, ws, padding, dtype):
    x = torch.rand(shape, dtype=dtype)
    y = (x + 0.2 * torch.randn(shape, dtype=dtype)).clamp(0, 1)
    results = []
    for tiles in (True, False):
        with dk.config.override(gpu_tiles=tiles):
            out = [E._emulate_cuda_ssim(x, y, ws, 1.5, 1.0, padding, "map", 0.01, 0.03)]
            g = torch.randn(out[0].shape, dtype=dtype, generator=torch.Generator().manual_seed(1))
            out += E._emulate_cuda_ssim_backward(g, x, y, ws, 1.5, 1.0, padding, "map", 0.01, 0.03)
            out += E._emulate_cuda_ssim_with_grad(x, y, ws, 1.5, 1.0, padding, "none", 0.01, 0.03, True)
            out.append(E._emulate_cuda_ssim_backward_x(torch.ones((), dtype=dtype), x, y, ws, 1.5, 1.0, padding,
                                                       "mean", 0.01, 0.03))
            results.append(out)
    for a, b in zip(*results):
        assert torch.equal(a, b)
    torch.testing.assert_close(results[0][0], reference.ssim(x.double(), y.double(), ws, 1.5, 1.0, padding, "map",
                                                             0.01, 0.03).to(dtype), rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("k", [(3, 3), (31, 31), (61, 67)])
def test_median_tiles_equal_per_pixel_selection(k):
    x = torch.randint(0, 9, (2, 2, 45, 38)).float()
    with dk.config.override(gpu_tiles=False):
        want = E._emulate_cuda_median_filter_with_index(x, list(k), "reflect")
    got = E._emulate_cuda_median_filter_with_index(x, list(k), "reflect")
    assert torch.equal(got[0], want[0]) and torch.equal(got[1], want[1])


# ---- block and network ----

def _block_params(C, dtype=torch.float64):
    return [torch.randn(C, C, 3, 3, dtype=dtype) * 0.3, torch.randn(C, dtype=dtype) * 0.1,
            torch.randn(C, C, 3, 3, dtype=dtype) * 0.3, torch.randn(C, dtype=dtype) * 0.1]


@pytest.mark.parametrize("dilation", [1, 3])
def test_block_forward_backward_match_reference(dilation):
    x = torch.randn(2, 4, 9, 11, dtype=torch.float64)
    w1, b1, w3, b3 = _block_params(4)
    out = E._emulate_cuda_self_correcting_block(x, w1, b1, w3, b3, dilation)
    torch.testing.assert_close(out, reference.self_correcting_block(x, w1, b1, w3, b3, dilation))
    out_t, la = E._emulate_cuda_self_correcting_block_train(x, w1, b1, w3, b3, dilation)
    same(out_t, out)
    ref_la = F.relu(F.conv2d(x, w1, b1, padding=1))
    torch.testing.assert_close(la.abs(), ref_la)
    assert torch.equal(torch.signbit(la), ~(out > 0))  # the final ReLU's mask in the sign bit
    g = torch.randn(x.shape, dtype=torch.float64)
    ps = [t.clone().requires_grad_() for t in (x, w1, b1, w3, b3)]
    ref_grads = torch.autograd.grad(reference.self_correcting_block(*ps, dilation), ps, g)
    for got in (E._emulate_cuda_self_correcting_block_backward(g, x, out, w1, b1, w3, b3, dilation),
                E._emulate_cuda_self_correcting_block_backward_la(g, x, la, w1, w3, dilation)):
        for a, b in zip(got, ref_grads):
            torch.testing.assert_close(a, b)


def test_block_channels_last_layout():
    x = torch.randn(1, 3, 6, 5, dtype=torch.float64).contiguous(memory_format=torch.channels_last)
    out = E._emulate_cuda_self_correcting_block(x, *_block_params(3), 2)
    assert out.is_contiguous(memory_format=torch.channels_last)
    assert out.stride() == E.self_correcting_block(x, *_block_params(3), 2).stride()


def test_network_matches_reference():
    # the authors' names of G's 19 convolutions in the fused op's order, to shape the weights
    from derain.models.rain_oer_me import FUSED_CONV_KEYS as CONV_KEYS
    from derain.models.rain_oer_me import FUSED_PARAM_KEYS as PARAM_KEYS

    cin, c = 3, 4
    params = []
    for i, key in enumerate(PARAM_KEYS):
        conv = i // 2
        merge = CONV_KEYS[conv].endswith("merge.0") or CONV_KEYS[conv] in ("merge11.0", "merge12.0")
        cout = cin if conv == len(CONV_KEYS) - 1 else c
        cin_k = cin if conv == 0 else (2 * c if merge else c)
        shape = (cout, cin_k, 3, 3) if key.endswith("weight") else (cout,)
        params.append(torch.randn(shape, dtype=torch.float64) * 0.2)
    x = torch.rand(2, cin, 10, 9, dtype=torch.float64)
    got = E._emulate_cuda_rain_oer_me_derain(x, params, 3)
    torch.testing.assert_close(got, reference.rain_oer_me_derain(x, params, 3))


def test_emulation_ops_are_not_listed():
    info = dk.backend_info()
    assert not any(n.startswith("_emulate_") for n in info["cpu_ops"])
