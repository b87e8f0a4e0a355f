"""Fused inference of the whole network (RainOerMeNet.fused / nn.FusedRainOerMe) against eager PyTorch."""
import pytest
import torch

import derain_kernels as dk
from derain.models.rain_oer_me import FUSED_PARAM_KEYS, RainOerMeNet, fused_params
from derain_kernels import reference as ref
from derain_kernels.ops.network import N_PARAMS


def _model(seed=0):
    torch.manual_seed(seed)
    m = RainOerMeNet().eval()
    # weights N(0, 1/fan_in) and nonzero biases (larger than the authors' N(0, 0.02) init) so that
    # every layer carries signal of order one and R = tanh(...) is far from 0
    with torch.no_grad():
        for mod in m.modules():
            if isinstance(mod, torch.nn.Conv2d):
                mod.weight.normal_(0.0, mod.weight[0].numel() ** -0.5)
                mod.bias.normal_(0.0, 0.1)
    return m


def _close(a, b, scale=1.0):
    torch.testing.assert_close(a, b, rtol=0, atol=2e-5 * scale)


@pytest.mark.parametrize("shape", [(1, 3, 37, 51), (2, 3, 20, 17), (1, 3, 1, 1), (3, 3, 2, 5), (1, 3, 90, 7)])
def test_matches_eager_random_weights(shape):
    m = _model()
    x = torch.rand(shape)
    with torch.no_grad():
        expected = m(x)
    out = m.fused()(x)
    assert out.shape == x.shape and out.dtype == x.dtype
    _close(out, expected)


def test_matches_eager_with_authors_weights(shared_dir):
    m = RainOerMeNet().eval()
    sd = torch.load(shared_dir / "weights" / "rain-over-me" / "rain1400.pth", map_location="cpu")
    m.load_state_dict(sd)
    x = torch.rand(1, 3, 61, 83)
    with torch.no_grad():
        expected = m(x)
    _close(dk.nn.FusedRainOerMe(fused_params(sd))(x), expected)  # extra keys (out2.*) are ignored
    _close(m.fused()(x), expected)


def test_band_seams_with_many_threads():
    m = _model(1)
    x = torch.rand(1, 3, 133, 29)
    fused = m.fused()
    old = torch.get_num_threads()
    try:
        torch.set_num_threads(4)
        out = fused(x)
    finally:
        torch.set_num_threads(old)
    with torch.no_grad():
        _close(out, m(x))


def test_float64_and_reference():
    m = _model(2).double()
    x = torch.rand(2, 3, 19, 23, dtype=torch.float64)
    out = m.fused()(x)
    expected = ref.rain_oer_me_derain(x, fused_params(m.state_dict()))
    torch.testing.assert_close(out, expected, rtol=0, atol=1e-11)
    with torch.no_grad():
        torch.testing.assert_close(out, m(x), rtol=0, atol=1e-11)


def test_layouts_and_no_grad():
    m = _model(3)
    x = torch.rand(2, 3, 15, 21)
    with torch.no_grad():
        expected = m(x)
    fused = m.fused()
    assert not fused.training
    for layout in ("contiguous", "channels_last", "strided"):
        if layout == "channels_last":
            xl = x.contiguous(memory_format=torch.channels_last)
        elif layout == "strided":
            xl = torch.rand(2, 3, 15, 42)[..., ::2]
            xl.copy_(x)
        else:
            xl = x
        out = fused(xl.requires_grad_())
        assert not out.requires_grad
        _close(out, expected)
    out = fused(x.contiguous(memory_format=torch.channels_last))
    assert out.is_contiguous(memory_format=torch.channels_last)


def test_nan_propagates():
    m = _model(4)
    x = torch.rand(1, 3, 40, 40)
    x[0, 1, 20, 20] = float("nan")
    out = m.fused()(x)
    with torch.no_grad():
        expected = m(x)
    assert torch.isnan(out).any()
    torch.testing.assert_close(out, expected, rtol=0, atol=2e-5, equal_nan=True)


def test_fused_module_buffers_follow_state_dict():
    m = _model(5)
    fused = dk.nn.FusedRainOerMe(fused_params(m.state_dict()))
    assert len(list(fused.buffers())) == len(FUSED_PARAM_KEYS) == N_PARAMS == 38
    with torch.no_grad():
        m.inc[0].bias.add_(1.0)  # a snapshot: later changes of the model do not leak in
    x = torch.rand(1, 3, 8, 8)
    with torch.no_grad():
        assert not torch.allclose(fused(x), m(x))
        _close(m.fused()(x), m(x))


def test_opcheck():
    m = _model(6)
    x = torch.rand(1, 3, 9, 11)
    params = fused_params(m.state_dict())
    torch.library.opcheck(torch.ops.derain.rain_oer_me_derain, (x, params, 3))
    torch.library.opcheck(torch.ops.derain.rain_oer_me_derain,
                          (x.contiguous(memory_format=torch.channels_last), params, 3))


def test_compiles_fullgraph():
    fused = _model(7).fused()
    x = torch.rand(1, 3, 16, 16)
    compiled = torch.compile(fused, fullgraph=True, backend="aot_eager")
    _close(compiled(x), fused(x))


@pytest.mark.parametrize("bad,match,exc", [
    (lambda f: f(torch.rand(1, 4, 8, 8)), r"x must have 3 \(RGB\) channels", ValueError),
    (lambda f: f(torch.rand(3, 8, 8)), "4-D", ValueError),
    (lambda f: f(torch.rand(1, 3, 8, 8).half()), "x must have dtype", TypeError),
    (lambda f: f("image"), "x must be a torch.Tensor", TypeError),
    (lambda f: fused_params({"inc.0.weight": torch.rand(16, 3, 3, 3)}), "missing", ValueError),
    (lambda f: dk.nn.FusedRainOerMe(fused_params(_model().state_dict()), dilation=0), "dilation must be >= 1",
     ValueError),
    # the op library takes G's weights as a list; a state dict is refused with the way to the list
    (lambda f: dk.nn.FusedRainOerMe(_model().state_dict()), "params must be a list of 38 tensors.*fused_params",
     TypeError),
    (lambda f: dk.nn.FusedRainOerMe(fused_params(_model().state_dict())[:-1]), "params must hold 38", ValueError),
    (lambda f: dk.nn.FusedRainOerMe([torch.rand(16, 3, 3, 3)] + [None] * 37), r"params\[1\] \(conv 0 bias\)",
     TypeError),
    (lambda f: dk.ops.network.rain_oer_me_derain(torch.rand(1, 4, 8, 8), f.params()),
     r"params\[0\] \(conv 0 weight\) must have shape \(16, 4, 3, 3\)", ValueError),
])
def test_bad_arguments(bad, match, exc):
    fused = _model().fused()
    with pytest.raises(exc, match=match):
        bad(fused)
