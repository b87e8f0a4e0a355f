"""median_filter and soft_label: C++ and Triton kernels against the reference, scipy and OpenCV."""
import numpy as np
import pytest
import torch

import derain_kernels as dk
from derain_kernels import reference as ref
from derain_kernels.reference.median import median_filter_indices
from contract import CONTRACTS, contract_tests
from helpers import needs_triton, triton_device

scipy_ndimage = pytest.importorskip("scipy.ndimage")

SCIPY_MODE = {"reflect": "mirror", "replicate": "nearest", "zeros": "constant"}
PADDINGS = list(SCIPY_MODE)

# layouts x dtypes, gradcheck, opcheck, torch.compile, bad arguments, empty inputs: tests/contract.py
TestContract = contract_tests(CONTRACTS["median_filter"])


def _scipy(x: torch.Tensor, k, padding):
    kh, kw = (k, k) if isinstance(k, int) else k
    size = (1,) * (x.dim() - 2) + (kh, kw)
    return torch.from_numpy(scipy_ndimage.median_filter(x.numpy(), size=size, mode=SCIPY_MODE[padding], cval=0.0))


def _numpy_pad_median(x: torch.Tensor, k, padding):
    """Independent oracle for any window size: numpy.pad + sliding windows + np.median (odd count)."""
    kh, kw = (k, k) if isinstance(k, int) else k
    mode = {"reflect": "reflect", "replicate": "edge", "zeros": "constant"}[padding]
    a = x.numpy()
    pad = [(0, 0)] * (a.ndim - 2) + [(kh // 2, kh // 2), (kw // 2, kw // 2)]
    p = np.pad(a, pad, mode=mode)
    win = np.lib.stride_tricks.sliding_window_view(p, (kh, kw), axis=(-2, -1))
    return torch.from_numpy(np.median(win.reshape(*win.shape[:-2], -1), axis=-1).astype(a.dtype))


# ---------------------------------------------------------------- agreement with peers
@pytest.mark.parametrize("padding", PADDINGS)
@pytest.mark.parametrize("k", [1, 3, 5, 7, (3, 5), (7, 1)])
def test_reference_matches_scipy(padding, k):
    x = torch.rand(2, 3, 13, 17, dtype=torch.float64)
    torch.testing.assert_close(ref.median_filter(x, k, padding), _scipy(x, k, padding), rtol=0, atol=0)


@pytest.mark.parametrize("padding", PADDINGS)
@pytest.mark.parametrize("shape,k", [((2, 3, 19, 23), 3), ((1, 2, 23, 29), 5), ((3, 25, 21), (5, 3)),
                                     ((1, 1, 40, 37), 21), ((2, 33, 35), 31), ((1, 1, 31, 57), 51)])
def test_matches_scipy_float32(padding, shape, k):
    x = torch.rand(shape)
    torch.testing.assert_close(dk.median_filter(x, k, padding), _scipy(x, k, padding), rtol=0, atol=0)


def test_matches_scipy_across_tiles():
    # several tiles in both directions (the C++ kernel works in 128 x 64 output tiles)
    x = torch.rand(1, 1, 261, 150)
    for k in (9, 21):
        torch.testing.assert_close(dk.median_filter(x, k, "reflect"), _scipy(x, k, "reflect"), rtol=0, atol=0)


def test_matches_scipy_float64_large_image():
    x = torch.rand(1, 2, 96, 80, dtype=torch.float64)
    for padding in PADDINGS:
        torch.testing.assert_close(dk.median_filter(x, 31, padding), _scipy(x, 31, padding), rtol=0, atol=0)


@pytest.mark.parametrize("k", [3, 5, 21, 31, 51])
def test_matches_opencv_uint8_replicate(k):
    cv2 = pytest.importorskip("cv2")
    x = torch.randint(0, 256, (2, 3, 67, 73), dtype=torch.uint8)
    out = dk.median_filter(x, k, "replicate")
    assert out.dtype == torch.uint8
    expected = np.stack([[cv2.medianBlur(np.ascontiguousarray(x[b, c].numpy()), k) for c in range(3)]
                         for b in range(2)])
    assert np.array_equal(out.numpy(), expected)


@pytest.mark.parametrize("padding", PADDINGS)
def test_uint8_matches_scipy(padding):
    x = torch.randint(0, 256, (1, 2, 31, 26), dtype=torch.uint8)
    for k in (3, 9):
        assert torch.equal(dk.median_filter(x, k, padding), _scipy(x, k, padding))


@pytest.mark.parametrize("padding", PADDINGS)
@pytest.mark.parametrize("shape,k", [((1, 1, 4, 5), 9), ((2, 3, 5), (13, 3)), ((1, 1, 1, 6), 7),
                                     ((1, 7, 1), 5), ((1, 1, 1, 1), 31), ((2, 1, 3, 3), 51)])
def test_window_larger_than_image(padding, shape, k):
    """reflect is numpy.pad's periodic mirror (period 2(n-1)) once the window exceeds the image."""
    x = torch.rand(shape, dtype=torch.float64)
    expected = _numpy_pad_median(x, k, padding)
    torch.testing.assert_close(ref.median_filter(x, k, padding), expected, rtol=0, atol=0)
    torch.testing.assert_close(dk.median_filter(x, k, padding), expected, rtol=0, atol=0)


def test_huge_window_path():
    # more than 65535 window elements: the 32-bit-count (Huang) path of the C++ kernel
    x = torch.rand(1, 2, 3, 5, dtype=torch.float64)
    for padding in PADDINGS:
        torch.testing.assert_close(dk.median_filter(x, (257, 259), padding), _numpy_pad_median(x, (257, 259), padding),
                                   rtol=0, atol=0)


def test_very_tall_window_on_one_row():
    # a region of more than 65535 rows: the kernel must leave its 16-bit row counts
    x = torch.rand(1, 1, 1, 4, dtype=torch.float64)
    for padding in PADDINGS:
        torch.testing.assert_close(dk.median_filter(x, (65535, 1), padding), _numpy_pad_median(x, (65535, 1), padding),
                                   rtol=0, atol=0)


def test_reflect_matches_scipy_up_to_image_size():
    # scipy's "mirror" agrees with the periodic mirror while the half window is <= n - 1
    x = torch.rand(1, 1, 6, 8, dtype=torch.float64)
    torch.testing.assert_close(dk.median_filter(x, (11, 15), "reflect"), _scipy(x, (11, 15), "reflect"),
                               rtol=0, atol=0)


# ---------------------------------------------------------------- properties
@pytest.mark.parametrize("padding", PADDINGS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.uint8])
def test_constant_image_stays_constant(padding, dtype):
    x = torch.full((1, 2, 20, 23), 7, dtype=dtype)
    out = dk.median_filter(x, 9, padding)
    if padding == "zeros":
        # corners see 25 of 81 real pixels: zero wins there; the centre stays 7
        assert out[..., 0, 0].eq(0).all() and out[..., 10, 11].eq(7).all()
    else:
        assert out.eq(7).all()  # corners stay constant


@pytest.mark.parametrize("padding", PADDINGS)
def test_ties_match_reference(padding):
    x = torch.randint(0, 4, (2, 3, 21, 19)).to(torch.float32)  # heavy ties
    torch.testing.assert_close(dk.median_filter(x, 5, padding), ref.median_filter(x, 5, padding), rtol=0, atol=0)
    torch.testing.assert_close(dk.median_filter(x, 5, padding), _scipy(x, 5, padding), rtol=0, atol=0)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision(dtype):
    x = torch.rand(2, 3, 15, 18).to(dtype)
    out = dk.median_filter(x, 5)
    assert out.dtype == dtype
    expected = _scipy(x.float(), 5, "reflect").to(dtype)  # conversion is exact both ways
    torch.testing.assert_close(out, expected, rtol=0, atol=0)


def test_leading_dims():
    x = torch.rand(2, 2, 3, 11, 12)
    out = dk.median_filter(x, 3)
    torch.testing.assert_close(out, _scipy(x, 3, "reflect"), rtol=0, atol=0)
    plane = torch.rand(9, 10)
    torch.testing.assert_close(dk.median_filter(plane, 3), _scipy(plane, 3, "reflect"), rtol=0, atol=0)


@pytest.mark.parametrize("shape", [(0, 3, 4, 5), (2, 0, 5), (2, 5, 0), (0, 0), (1, 1, 3, 13, 0)])
@pytest.mark.parametrize("padding", PADDINGS)
def test_empty_uint8_and_soft_labels(shape, padding):
    # the package's rule (floating inputs: the contract tests): maps of empty inputs are empty
    u = torch.zeros(shape, dtype=torch.uint8)
    assert dk.median_filter(u, 3, padding).shape == shape
    assert dk.soft_label(torch.rand(shape), 3, padding, min_composite=True).shape == shape
    assert dk.soft_label(u, 3, padding, min_composite=True).shape == shape


@pytest.mark.parametrize("kernel_size,match", [
    (10 ** 9 + 1, "kernel_size must be <= 65535"),
    ((1, 2 ** 31 - 1), "kernel_size must be <= 65535"),
    (2 ** 64 + 1, "kernel_size must be <= 65535"),
    ((8193, 8193), r"at most 67108864 \(2\*\*26\) elements"),
    ((65535, 1025), "at most 67108864"),
])
def test_windows_beyond_the_limits_raise_value_error(kernel_size, match):
    # sizes the kernel cannot hold in memory are refused before any work, naming the limit
    x = torch.rand(1, 1, 8, 8)
    for f in (dk.median_filter, dk.soft_label):
        with pytest.raises(ValueError, match=match):
            f(x, kernel_size)


def test_windows_at_the_limits_compute():
    x = torch.rand(1, 1, 2, 3, dtype=torch.float64)
    for k in ((8191, 8191), (1, 65535)):
        torch.testing.assert_close(dk.median_filter(x, k, "replicate"), _numpy_pad_median(x, k, "replicate"),
                                   rtol=0, atol=0)


# ---------------------------------------------------------------- NaN
def test_nan_propagates_to_every_window_containing_it():
    x = torch.rand(1, 1, 12, 13)
    x[0, 0, 5, 6] = float("nan")
    x[0, 0, 0, 12] = float("nan")
    for padding in PADDINGS:
        out = dk.median_filter(x, 3, padding)
        expected_nan = torch.zeros(12, 13, dtype=torch.bool)
        expected_nan[4:7, 5:8] = True
        expected_nan[0:2, 11:13] = True
        assert torch.equal(torch.isnan(out[0, 0]), expected_nan), padding
        torch.testing.assert_close(out, ref.median_filter(x, 3, padding), rtol=0, atol=0, equal_nan=True)


def test_nan_window_passes_no_gradient():
    x = torch.rand(1, 1, 6, 7, dtype=torch.float64)
    x[0, 0, 0, 0] = float("nan")
    x.requires_grad_()
    dk.median_filter(x, 3).sum().backward()
    # windows touching (0, 0) are NaN (reflect: (0,0), (0,1), (1,0), (1,1)) and route no gradient
    assert torch.isfinite(x.grad).all()
    assert x.grad[0, 0, 0, 0] == 0


# ---------------------------------------------------------------- gradient
def _distinct(shape, dtype=torch.float64):
    n = int(np.prod(shape))
    return (torch.randperm(n).to(dtype) / n).reshape(shape)


@pytest.mark.parametrize("padding", PADDINGS)
def test_gradient_matches_reference_with_ties(padding):
    x = torch.randint(0, 3, (2, 2, 13, 11)).to(torch.float64)
    g = torch.randn(2, 2, 13, 11, dtype=torch.float64)
    a = x.clone().requires_grad_()
    b = x.clone().requires_grad_()
    dk.median_filter(a, 5, padding).backward(g)
    ref.median_filter(b, 5, padding).backward(g)
    torch.testing.assert_close(a.grad, b.grad, rtol=0, atol=1e-12)


# windows of more than 49 elements (and at most 192 wide) run the C++ kernel's median
# tracking (the median rank followed from output to output; copies of reflected /
# replicated elements and the zero pad ranked one per position)
@pytest.mark.parametrize("padding", PADDINGS)
def test_large_window_ties_and_gradient_match_reference(padding):
    x = torch.randint(0, 4, (1, 2, 37, 70)).to(torch.float64)  # heavy ties, copies at every border
    g = torch.randn(x.shape, dtype=torch.float64)
    for k in (9, (21, 11)):
        a = x.clone().requires_grad_()
        b = x.clone().requires_grad_()
        out = dk.median_filter(a, k, padding)
        torch.testing.assert_close(out, ref.median_filter(b, k, padding), rtol=0, atol=0)
        out.backward(g)
        ref.median_filter(b, k, padding).backward(g)
        torch.testing.assert_close(a.grad, b.grad, rtol=0, atol=1e-12)


@pytest.mark.parametrize("padding", PADDINGS)
def test_large_jumps_of_the_median(padding):
    # blocks of two levels with a little noise: the median jumps across the gap between them
    yy, xx = torch.meshgrid(torch.arange(150), torch.arange(140), indexing="ij")
    blocks = (((yy // 23) + (xx // 17)) % 2).to(torch.float32)
    x = (blocks + 0.01 * torch.rand(2, 1, 150, 140)).contiguous()
    for k in (11, 31):
        torch.testing.assert_close(dk.median_filter(x, k, padding), _scipy(x, k, padding), rtol=0, atol=0)


def test_tracking_agrees_with_histogram_path():
    # config median_tracking=False turns the tracking off: the Perreault-Hebert path gives the same bits
    torch.manual_seed(3)
    x = torch.rand(2, 1, 150, 90)
    cases = [(k, p) for k in (9, 31) for p in ("reflect", "replicate", "zeros")]
    with dk.config.override(median_tracking=True):
        tracked = [dk.median_filter(x, k, p) for k, p in cases]
    with dk.config.override(median_tracking=False):
        histogram = [dk.median_filter(x, k, p) for k, p in cases]
    for a, b in zip(tracked, histogram):
        assert torch.equal(a, b)


def test_tie_rule_selects_middle_of_value_then_index_order():
    # a 1x3 window over [5, 5, 5]: sorted by index -> the middle one (the centre itself)
    x = torch.tensor([[[5.0, 5.0, 5.0, 5.0]]], dtype=torch.float64)
    idx, _ = median_filter_indices(x, (1, 3), "replicate")
    # replicate windows: [x0,x0,x1] -> middle x0; [x0,x1,x2] -> x1; [x1,x2,x3] -> x2; [x2,x3,x3] -> x3
    assert idx.flatten().tolist() == [0, 1, 2, 3]
    xg = x.clone().requires_grad_()
    dk.median_filter(xg, (1, 3), "replicate").backward(torch.tensor([[[1.0, 10.0, 100.0, 1000.0]]],
                                                                    dtype=torch.float64))
    assert xg.grad.flatten().tolist() == [1.0, 10.0, 100.0, 1000.0]
    # zeros: a zero pad ranks before a real 0: [pad, z0, z1] -> z0; [z0, z1, z2] -> z1;
    # [z1, z2, pad] sorts as [pad, z1, z2] -> z1
    z = torch.zeros(1, 1, 3, dtype=torch.float64, requires_grad=True)
    dk.median_filter(z, (1, 3), "zeros").backward(torch.tensor([[[1.0, 10.0, 100.0]]], dtype=torch.float64))
    assert z.grad.flatten().tolist() == [1.0, 110.0, 0.0]


# ---------------------------------------------------------------- layouts
# ---------------------------------------------------------------- soft label
def test_soft_label():
    x = torch.rand(2, 3, 40, 36, requires_grad=True)
    y = dk.soft_label(x, 31)
    assert not y.requires_grad
    torch.testing.assert_close(y, _scipy(x.detach(), 31, "reflect"), rtol=0, atol=0)
    ym = dk.soft_label(x, 21, padding="replicate", min_composite=True)
    torch.testing.assert_close(ym, torch.minimum(x.detach(), _scipy(x.detach(), 21, "replicate")), rtol=0, atol=0)
    u = torch.randint(0, 256, (1, 3, 20, 20), dtype=torch.uint8)
    assert torch.equal(dk.soft_label(u, 5, min_composite=True), torch.minimum(u, dk.median_filter(u, 5)))


# ---------------------------------------------------------------- the kept index (autograd)
@pytest.mark.parametrize("padding", PADDINGS)
def test_with_index_names_the_selected_source(padding):
    x = torch.randint(-2, 3, (2, 3, 11, 9)).float().contiguous(memory_format=torch.channels_last)
    out, index = torch.ops.derain._median_filter_with_index(x, [5, 3], padding)
    assert index.dtype == torch.int32 and index.shape == x.shape and out.stride() == x.stride()
    torch.testing.assert_close(out, ref.median_filter(x, (5, 3), padding), rtol=0, atol=0)
    planes = x.reshape(6, 99)
    picked = planes.gather(1, index.reshape(6, 99).clamp_min(0).long()).view(x.shape)
    assert torch.equal(torch.where(index >= 0, picked, torch.zeros(())), out)
    g = torch.randn(x.shape, dtype=torch.float32)
    torch.testing.assert_close(torch.ops.derain._median_filter_backward_index(g, index),
                               torch.ops.derain._median_filter_backward(g, x, [5, 3], padding), rtol=1e-6, atol=1e-6)


def test_backward_uses_the_kept_index_not_x():
    # the forward saves the selected index, not x: changing x in place afterwards leaves the gradient intact
    x = torch.rand(1, 2, 12, 13, dtype=torch.float64, requires_grad=True)
    y = x * 1.0
    out = dk.median_filter(y, 5)
    want = torch.ops.derain._median_filter_backward(torch.ones_like(out), y.detach().clone(), [5, 5], "reflect")
    with torch.no_grad():
        y.add_(torch.rand_like(y))  # changes which element each window selects
    out.sum().backward()
    torch.testing.assert_close(x.grad, want, rtol=0, atol=0)


def test_kept_index_ops_pass_opcheck_and_double_backward():
    x = torch.randint(0, 4, (1, 2, 7, 6)).double()
    torch.library.opcheck(torch.ops.derain._median_filter_with_index.default, (x, [3, 5], "zeros"))
    _, index = torch.ops.derain._median_filter_with_index(x, [3, 5], "zeros")
    g = torch.randn(x.shape, dtype=torch.float64, requires_grad=True)
    torch.library.opcheck(torch.ops.derain._median_filter_backward_index.default, (g, index))
    assert torch.autograd.gradcheck(lambda g: torch.ops.derain._median_filter_backward_index(g, index), (g,))


# ---------------------------------------------------------------- bad arguments
# ---------------------------------------------------------------- opcheck / compile
# ---------------------------------------------------------------- Triton (interpreter on CPU)
@needs_triton
@pytest.mark.parametrize("dtype,padding,k", [(torch.float32, "reflect", 3), (torch.float64, "zeros", (3, 3)),
                                             (torch.uint8, "replicate", (5, 3))])
def test_triton_matches_reference(dtype, padding, k):
    from derain_kernels.triton import median as tmed
    x = (torch.rand(1, 2, 9, 11) * 10 - 5).floor()  # ties and negative values
    x[0, 0, 0, 0] = -0.0
    x = x.to(dtype) if dtype != torch.uint8 else (x + 5).to(torch.uint8)
    x = x.to(triton_device())
    out = tmed.median_filter(x, k, padding)
    torch.testing.assert_close(out.cpu(), ref.median_filter(x.cpu(), k, padding), rtol=0, atol=0)


@needs_triton
def test_triton_window_larger_than_image_and_nan():
    from derain_kernels.triton import median as tmed
    x = torch.randint(0, 256, (1, 1, 2, 3), dtype=torch.uint8)
    torch.testing.assert_close(tmed.median_filter(x.to(triton_device()), (5, 7), "reflect").cpu(),
                               _numpy_pad_median(x, (5, 7), "reflect"), rtol=0, atol=0)
    f = torch.rand(1, 1, 5, 6)
    f[0, 0, 2, 3] = float("nan")
    out = tmed.median_filter(f.to(triton_device()), 3, "replicate").cpu()
    torch.testing.assert_close(out, ref.median_filter(f, 3, "replicate"), rtol=0, atol=0, equal_nan=True)


@needs_triton
def test_triton_backward_matches_cpu():
    from derain_kernels.triton import median as tmed
    x = torch.randint(0, 3, (1, 1, 6, 7)).to(torch.float64)  # ties
    g = torch.randn(1, 1, 6, 7, dtype=torch.float64)
    xr = x.clone().requires_grad_()
    ref.median_filter(xr, 3, "zeros").backward(g)
    gx = tmed.median_filter_backward(g.to(triton_device()), x.to(triton_device()), [3, 3], "zeros").cpu()
    torch.testing.assert_close(gx, xr.grad, rtol=0, atol=1e-12)
