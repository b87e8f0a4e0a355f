"""The op-contract test base: one declarative description per op, one set of generic tests.

Every public op promises the same things: it matches its pure-PyTorch reference in every
memory layout (contiguous, channels-last, strided, transposed) and supported dtype, values
and gradients; its gradients pass gradcheck in float64; its torch.ops.derain schemas pass
torch.library.opcheck (fake tensors, autograd registration, strides); it compiles under
torch.compile(fullgraph=True); bad arguments raise TypeError / ValueError naming the
argument; empty inputs give empty (or NaN / 0 reduced) results and empty gradients, like
the reference. An op's test file states its `Contract` here and collects the generic tests
with

    TestContract = contract_tests(CONTRACTS["min_composite"])

keeping beside it only what is particular to the op (peers, tie rules, borders, NaN rules…).
"""
from __future__ import annotations

import itertools
import math
from dataclasses import dataclass, field
from typing import Callable

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import derain_kernels as dk
from derain_kernels import reference as ref

LAYOUTS = ("contiguous", "channels_last", "strided", "transposed")
FLOATS = (torch.float32, torch.float64)
EXACT = dict(rtol=0, atol=0)


def as_layout(t: torch.Tensor, layout: str) -> torch.Tensor:
    """t's values in a memory layout; tensors that are not 4-D (no channels-last) stay contiguous there."""
    if layout == "contiguous" or (layout == "channels_last" and t.dim() != 4) or t.dim() < 2:
        return t.contiguous()
    if layout == "channels_last":
        return t.contiguous(memory_format=torch.channels_last)
    if layout == "strided":  # every other column of a wider tensor
        wide = torch.empty(*t.shape[:-1], 2 * t.shape[-1], dtype=t.dtype, device=t.device)
        wide[..., ::2] = t
        return wide[..., ::2]
    if layout == "transposed":  # H and W swapped in memory
        return t.transpose(-1, -2).contiguous().transpose(-1, -2)
    raise ValueError(layout)


@dataclass
class Contract:
    """What an op promises, and how to exercise it.

    op / reference: callables over the tensor inputs (other arguments bound), the op under
        test and its pure-PyTorch reference.
    inputs(dtype): valid tensor inputs for the layout checks (a few thousand elements).
    dtypes: the dtypes those checks run in; grad_dtypes: those in which gradients are compared.
    grads: indices of the inputs that get gradients (none: an inference-only op).
    tol(dtype): assert_close tolerances of values against the reference; grad_tol(dtype): of
        gradients (default: tol).
    layout_inputs: indices of the inputs put through the layouts (every combination when
        there are two); default: all 4-D inputs.
    channels_last_out: a channels-last first input gives a channels-last output.
    gradchecks(): [(fn, float64 inputs requiring grad, also gradgradcheck)].
    opchecks(): [(torch.ops.derain.<op>, args)] for torch.library.opcheck.
    compiled(): (fn, inputs): fn is compiled with fullgraph=True; values and the gradients
        of the inputs that require grad must match eager.
    bad: [(id, call, exception type, message pattern)]: the pattern names the argument.
    empty_shapes / empty_inputs(shape) / empty_calls: empty inputs of each shape (float64)
        through each (id, op, reference) pair: the same shapes and values (NaN where the
        reference gives NaN), and gradients of the inputs' shapes equal to the reference's.
    """

    name: str
    op: Callable
    reference: Callable
    inputs: Callable[[torch.dtype], tuple]
    dtypes: tuple = FLOATS
    grad_dtypes: tuple = FLOATS
    grads: tuple = ()
    tol: Callable[[torch.dtype], dict] = lambda dtype: EXACT
    grad_tol: Callable[[torch.dtype], dict] | None = None
    layout_inputs: tuple | None = None
    channels_last_out: bool = False
    gradchecks: Callable[[], list] = lambda: []
    opchecks: Callable[[], list] = lambda: []
    compiled: Callable[[], tuple] | None = None
    bad: list = field(default_factory=list)
    empty_shapes: list = field(default_factory=list)
    empty_inputs: Callable[[tuple], tuple] | None = None
    empty_calls: list = field(default_factory=list)


def _leaves(inputs, grads):
    return [t.detach().clone().requires_grad_(i in grads) for i, t in enumerate(inputs)]


def _run(fn, inputs, grads, upstream=None):
    """(output, gradients of the inputs in `grads`) of fn for an upstream gradient (default: ones)."""
    out = fn(*inputs)
    if not grads:
        return out.detach(), []
    out.backward(torch.ones_like(out) if upstream is None else upstream(out))
    return out.detach(), [inputs[i].grad for i in grads]


def contract_tests(c: Contract):
    """A pytest class of the generic checks of contract `c` (assign it to a Test* name)."""

    layout_inputs = c.layout_inputs
    if layout_inputs is None:
        layout_inputs = tuple(i for i, t in enumerate(c.inputs(torch.float64)) if t.dim() == 4)

    class ContractTests:
        contract = c

        @pytest.mark.parametrize("dtype", c.dtypes, ids=lambda d: str(d).replace("torch.", ""))
        def test_layouts_match_reference(self, dtype):
            inputs = c.inputs(dtype)
            grads = c.grads if dtype in c.grad_dtypes else ()
            g = []  # one random upstream gradient, drawn for the reference and reused for every layout

            def upstream(out):
                if not g:
                    g.append(torch.randn(out.shape, dtype=torch.float64).to(out.dtype))
                return g[0]

            want, want_grads = _run(c.reference, _leaves(inputs, grads), grads, upstream)
            for combo in itertools.product(LAYOUTS, repeat=len(layout_inputs)):
                laid = list(inputs)
                for i, layout in zip(layout_inputs, combo):
                    laid[i] = as_layout(inputs[i], layout)
                leaves = [t.detach().requires_grad_(i in grads) for i, t in enumerate(laid)]
                got, got_grads = _run(c.op, leaves, grads, upstream)
                what = f"{c.name}, {dtype}, layouts {combo}"
                assert got.dtype == want.dtype and got.shape == want.shape, what
                torch.testing.assert_close(got, want, **c.tol(dtype), equal_nan=True, msg=what)
                for i, a, b in zip(grads, got_grads, want_grads):
                    assert a.shape == inputs[i].shape, what
                    tol = (c.grad_tol or c.tol)(dtype)
                    torch.testing.assert_close(a, b, **tol, msg=f"gradient of input {i}, {what}")
            if c.channels_last_out:
                cl = [as_layout(t, "channels_last") if i == layout_inputs[0] else t for i, t in enumerate(inputs)]
                assert c.op(*cl).is_contiguous(memory_format=torch.channels_last)

        def test_gradcheck_float64(self):
            cases = c.gradchecks()
            if not c.grads:
                assert not cases
                pytest.skip(f"{c.name} has no gradient")
            assert cases, f"{c.name} gets gradients: its contract needs gradchecks"
            for fn, inputs, gradgrad in cases:
                assert torch.autograd.gradcheck(fn, inputs)
                if gradgrad:
                    assert torch.autograd.gradgradcheck(fn, inputs)

        def test_opcheck(self):
            cases = c.opchecks()
            assert cases, f"{c.name}: its contract needs opchecks of its torch.ops.derain schemas"
            for op, args in cases:
                torch.library.opcheck(op, args)

        def test_compiles_fullgraph(self):
            fn, inputs = c.compiled()
            compiled = torch.compile(fn, fullgraph=True, backend="aot_eager")
            eager_inputs = [t.detach().clone().requires_grad_(t.requires_grad) for t in inputs]
            got, want = compiled(*inputs), fn(*eager_inputs)
            torch.testing.assert_close(got, want)
            if got.requires_grad:
                got.sum().backward()
                want.sum().backward()
                for a, b in zip(inputs, eager_inputs):
                    if a.requires_grad:
                        assert a.grad is not None
                        torch.testing.assert_close(a.grad, b.grad)

        @pytest.mark.parametrize("case", c.bad, ids=[case[0] for case in c.bad])
        def test_bad_arguments(self, case):
            _, call, exc, match = case
            with pytest.raises(exc, match=match) as info:
                call()
            assert type(info.value) in (TypeError, ValueError), f"{type(info.value).__name__}: {info.value}"

        @pytest.mark.parametrize("shape", c.empty_shapes, ids=str)
        def test_empty_inputs(self, shape):
            assert any(t.numel() == 0 for t in c.empty_inputs(shape)), "not an empty input"
            for name, op, reference in c.empty_calls:
                inputs = c.empty_inputs(shape)
                grads = tuple(i for i in c.grads if i < len(inputs))
                got, got_grads = _run(op, _leaves(inputs, grads), grads)
                want, want_grads = _run(reference, _leaves(inputs, grads), grads)
                what = f"{c.name} {name}, shape {shape}"
                assert got.shape == want.shape, what
                torch.testing.assert_close(got, want, equal_nan=True, msg=what)
                for i, a, b in zip(grads, got_grads, want_grads):
                    assert a.shape == inputs[i].shape, what
                    torch.testing.assert_close(a, b, msg=f"gradient of input {i}, {what}")

    ContractTests.__name__ = ContractTests.__qualname__ = f"ContractTests_{c.name}"
    return ContractTests


# ====================================================================== the ops' contracts
def _f64(*shapes):
    return tuple(torch.rand(s, dtype=torch.float64) for s in shapes)


def _req(*ts):
    return tuple(t.requires_grad_() for t in ts)


# ---------------------------------------------------------------- min_composite
def _tied_pair(shape, dtype):
    x = torch.rand(shape, dtype=dtype)
    y = torch.rand(shape, dtype=dtype)
    tie = torch.rand(shape) < 0.3  # about a third of the elements equal
    y[tie] = x[tie]
    return x, y


def _min_composite_opchecks():
    x, y = _tied_pair((2, 3, 8, 9), torch.float64)
    g = torch.randn(2, 3, 8, 9, dtype=torch.float64)
    return [(torch.ops.derain.min_composite, (x.clone().requires_grad_(), y.clone().requires_grad_())),
            (torch.ops.derain.min_composite, (x, y[:1])),
            (torch.ops.derain.min_composite, (x.contiguous(memory_format=torch.channels_last), y)),
            (torch.ops.derain._min_composite_backward, (g, x, y))]


def _min_composite_compiled():
    x, y = _tied_pair((2, 3, 16, 16), torch.float32)
    return (lambda a, b: dk.min_composite(a * 2, b).sum()), (x.requires_grad_(), y)


MIN_COMPOSITE = Contract(
    name="min_composite",
    op=dk.min_composite,
    reference=ref.min_composite,
    inputs=lambda dtype: _tied_pair((2, 3, 11, 13), dtype),
    dtypes=FLOATS + (torch.float16, torch.bfloat16),
    grads=(0, 1),
    channels_last_out=True,
    gradchecks=lambda: [(dk.min_composite, _req(*_f64((2, 3, 7, 9), (1, 3, 7, 9))), True)],  # y broadcast
    opchecks=_min_composite_opchecks,
    compiled=_min_composite_compiled,
    bad=[
        ("dtypes differ", lambda: dk.min_composite(torch.rand(3), torch.rand(3, dtype=torch.float64)),
         TypeError, "same dtype"),
        ("y a list", lambda: dk.min_composite(torch.rand(3), [1.0, 2.0, 3.0]), TypeError, "y must be a torch.Tensor"),
        ("int64", lambda: dk.min_composite(torch.ones(3, dtype=torch.int64), torch.ones(3, dtype=torch.int64)),
         TypeError, "x must have dtype"),
        ("shapes", lambda: dk.min_composite(torch.rand(3, 4), torch.rand(5, 4)), ValueError, "not broadcastable"),
        ("devices", lambda: dk.min_composite(torch.rand(3), torch.rand(3, device="meta")), ValueError, "same device"),
    ],
    empty_shapes=[((0, 3, 4, 5), (0, 3, 4, 5)), ((2, 3, 0, 5), (1, 3, 1, 5)), ((2, 0), (1,)), ((3, 1), (3, 0))],
    empty_inputs=lambda shapes: _f64(*shapes),
    empty_calls=[("", dk.min_composite, ref.min_composite)],
)


# ---------------------------------------------------------------- rain_composite
def _clean_rain(shape, dtype, rain_shape=None):
    return torch.rand(shape, dtype=dtype), torch.rand(rain_shape or shape, dtype=dtype) - 0.3


def _rain_composite_gradchecks():
    out = []
    for clamp in (True, False):
        clean = torch.rand(2, 3, 6, 7, dtype=torch.float64)
        # keep sums away from the clamp bounds, where the derivative jumps
        rain = torch.rand(1, 3, 6, 7, dtype=torch.float64) * 0.8 - 0.4
        rain = torch.where((clean[:1] + rain - 0.5).abs() > 0.45, rain * 0.2, rain)
        out.append((lambda c, r, clamp=clamp: dk.rain_composite(c, r, clamp=clamp), _req(clean, rain), True))
    return out


def _rain_composite_opchecks():
    clean, rain = _clean_rain((2, 3, 8, 9), torch.float64)
    g = torch.randn(2, 3, 8, 9, dtype=torch.float64)
    return [(torch.ops.derain.rain_composite, (clean.clone().requires_grad_(), rain.clone().requires_grad_(), True)),
            (torch.ops.derain.rain_composite, (clean, rain[:1], False)),
            (torch.ops.derain.rain_composite, (clean.contiguous(memory_format=torch.channels_last), rain, True)),
            (torch.ops.derain._rain_composite_backward, (g, clean, rain, True))]


def _rain_composite_compiled():
    clean, rain = _clean_rain((2, 3, 16, 16), torch.float32)
    return (lambda c, r: dk.rain_composite(c, r.detach()).square().sum()), (clean.requires_grad_(), rain)


RAIN_COMPOSITE = Contract(
    name="rain_composite",
    op=dk.rain_composite,
    reference=ref.rain_composite,
    inputs=lambda dtype: _clean_rain((2, 3, 11, 13), dtype),
    dtypes=FLOATS + (torch.float16, torch.bfloat16),
    grads=(0, 1),
    tol=lambda dtype: dict(rtol=0, atol=1e-12) if dtype == torch.float64 else EXACT,
    channels_last_out=True,
    gradchecks=_rain_composite_gradchecks,
    opchecks=_rain_composite_opchecks,
    compiled=_rain_composite_compiled,
    bad=[
        ("clamp an int", lambda: dk.rain_composite(torch.rand(3), torch.rand(3), clamp=1), TypeError,
         "clamp must be a bool"),
        ("dtypes differ", lambda: dk.rain_composite(torch.rand(3), torch.rand(3).double()), TypeError, "same dtype"),
        ("shapes", lambda: dk.rain_composite(torch.rand(2, 3), torch.rand(3, 2)), ValueError, "not broadcastable"),
        ("clean a str", lambda: dk.rain_composite("image", torch.rand(3)), TypeError, "clean must be a torch.Tensor"),
        ("devices", lambda: dk.rain_composite(torch.rand(3), torch.rand(3, device="meta")), ValueError,
         "same device"),
    ],
    empty_shapes=MIN_COMPOSITE.empty_shapes,
    empty_inputs=lambda shapes: _f64(*shapes),
    empty_calls=[("clamp", dk.rain_composite, ref.rain_composite),
                 ("no clamp", lambda c, r: dk.rain_composite(c, r, False),
                  lambda c, r: ref.rain_composite(c, r, False))],
)


# ---------------------------------------------------------------- median_filter
def _distinct(shape, dtype=torch.float64):
    """Distinct values (no ties): the median's gradient is then differentiable for gradcheck."""
    n = math.prod(shape)
    return (torch.randperm(n).to(dtype) / n).reshape(shape)


def _median_inputs(dtype):
    x = torch.rand(2, 3, 14, 15) * 200
    return ((x.round() if dtype == torch.uint8 else x).to(dtype),)


def _median_gradchecks():
    return [(lambda t, k=k, padding=padding: dk.median_filter(t, k, padding), _req(_distinct((2, 2, 6, 7))), False)
            for padding in ("reflect", "replicate", "zeros") for k in (3, (5, 3), 9)]


def _median_opchecks():
    x = _distinct((2, 2, 7, 6))
    g = torch.randn(2, 2, 7, 6, dtype=torch.float64)
    return [(torch.ops.derain.median_filter, (x.clone().requires_grad_(), [3, 5], "reflect")),
            (torch.ops.derain.median_filter, ((x * 200).to(torch.uint8), [3, 3], "zeros")),
            (torch.ops.derain.median_filter, (x.float().contiguous(memory_format=torch.channels_last), [5, 5],
                                              "replicate")),
            (torch.ops.derain._median_filter_backward, (g, x, [3, 3], "zeros"))]


def _t55():
    return torch.rand(1, 5, 5)


MEDIAN_FILTER = Contract(
    name="median_filter",
    op=lambda x: dk.median_filter(x, 5),
    reference=lambda x: ref.median_filter(x, 5),
    inputs=_median_inputs,
    dtypes=FLOATS + (torch.float16, torch.bfloat16, torch.uint8),
    grads=(0,),
    channels_last_out=True,
    gradchecks=_median_gradchecks,
    opchecks=_median_opchecks,
    compiled=lambda: ((lambda a: dk.median_filter(a * 2, 5).sum()), (torch.rand(2, 3, 16, 16, requires_grad=True),)),
    bad=[
        ("even", lambda: dk.median_filter(_t55(), 4), ValueError, "kernel_size must be odd"),
        ("zero", lambda: dk.median_filter(_t55(), 0), ValueError, "kernel_size must be >= 1"),
        ("negative", lambda: dk.median_filter(_t55(), -3), ValueError, "kernel_size must be >= 1"),
        ("even pair", lambda: dk.median_filter(_t55(), (3, 2)), ValueError, "kernel_size must be odd"),
        ("float size", lambda: dk.median_filter(_t55(), 3.0), TypeError, "kernel_size must be an int"),
        ("bool size", lambda: dk.median_filter(_t55(), True), TypeError, "kernel_size"),
        ("int32", lambda: dk.median_filter(torch.ones(1, 5, 5, dtype=torch.int32), 3), TypeError, "x must have dtype"),
        ("1-D", lambda: dk.median_filter(torch.ones(5, dtype=torch.float32), 3), ValueError, "x must have at least 2"),
        ("numpy", lambda: dk.median_filter(np.ones((5, 5)), 3), TypeError, "x must be a torch.Tensor"),
        ("padding", lambda: dk.median_filter(torch.rand(5, 5), 3, padding="circular"), ValueError,
         "padding must be one of"),
        ("padding None", lambda: dk.median_filter(torch.rand(5, 5), 3, padding=None), TypeError,
         "padding must be a str"),
        ("padding array", lambda: dk.median_filter(torch.rand(5, 5), 3, padding=np.array(["zeros"])), TypeError,
         "padding must be a str"),
        ("soft_label min_composite", lambda: dk.soft_label(torch.rand(5, 5), 3, min_composite=1), TypeError,
         "min_composite must be a bool"),
        ("soft_label even", lambda: dk.soft_label(torch.rand(5, 5), 6), ValueError, "kernel_size must be odd"),
    ],
    empty_shapes=[(0, 3, 4, 5), (2, 0, 5), (2, 5, 0), (0, 0), (1, 1, 3, 13, 0)],
    empty_inputs=lambda shape: _f64(shape),
    empty_calls=[(padding, lambda x, padding=padding: dk.median_filter(x, (3, 5), padding),
                  lambda x, padding=padding: ref.median_filter(x, (3, 5), padding))
                 for padding in ("reflect", "replicate", "zeros")],
)


# ---------------------------------------------------------------- dark_channel
def _quantised(shape, dtype=torch.float64, levels=4):
    """Random values on a coarse grid: many ties."""
    return (torch.rand(shape, dtype=dtype) * levels).round() / levels


def _dark_channel_gradchecks():
    x = _req(*_f64((1, 2, 5, 6)))
    return [(lambda t: dk.dark_channel(t, 3), x, True), (lambda t: dk.dark_channel_loss(t, 5), x, False)]


def _dark_channel_opchecks():
    x = torch.rand(2, 3, 5, 6, dtype=torch.float64)
    _, index = torch.ops.derain._dark_channel(x, 5)
    g = torch.randn(2, 1, 5, 6, dtype=torch.float64, requires_grad=True)
    return [(torch.ops.derain._dark_channel, (x.clone().requires_grad_(), 5)),
            (torch.ops.derain._dark_channel, (x.contiguous(memory_format=torch.channels_last), 21)),
            (torch.ops.derain._dark_channel_backward, (g, index, 3))]


def _img(*shape, **kw):
    return torch.rand(*shape, **kw)


DARK_CHANNEL = Contract(
    name="dark_channel",
    op=lambda x: dk.dark_channel(x, 5),
    reference=lambda x: ref.dark_channel(x, 5),
    inputs=lambda dtype: (_quantised((2, 3, 11, 13), dtype),),
    grads=(0,),
    # gradients of elements selected by several windows are sums, in another order than the reference's
    grad_tol=lambda dtype: dict(rtol=0, atol=1e-12 if dtype == torch.float64 else 1e-5),
    gradchecks=_dark_channel_gradchecks,
    opchecks=_dark_channel_opchecks,
    compiled=lambda: ((lambda t: dk.dark_channel_loss(t * 0.5, 7)), (torch.rand(2, 3, 16, 16, requires_grad=True),)),
    bad=[
        ("even", lambda: dk.dark_channel(_img(1, 3, 8, 8), 4), ValueError, "patch must be odd"),
        ("zero", lambda: dk.dark_channel(_img(1, 3, 8, 8), 0), ValueError, "patch must be >= 1"),
        ("float", lambda: dk.dark_channel(_img(1, 3, 8, 8), 3.0), TypeError, "patch must be an int"),
        ("bool", lambda: dk.dark_channel(_img(1, 3, 8, 8), True), TypeError, "patch must be an int"),
        ("2-D", lambda: dk.dark_channel(_img(8, 8), 3), ValueError, "x must have at least 3 dimensions"),
        ("no channel", lambda: dk.dark_channel(_img(1, 0, 8, 8), 3), ValueError, "at least one channel"),
        ("int64", lambda: dk.dark_channel(torch.ones(1, 3, 8, 8, dtype=torch.int64), 3), TypeError,
         "x must have dtype"),
        ("half", lambda: dk.dark_channel(_img(1, 3, 8, 8).half(), 3), TypeError, "x must have dtype"),
        ("list", lambda: dk.dark_channel([[1.0]], 3), TypeError, "x must be a torch.Tensor"),
        ("reduction", lambda: dk.dark_channel_loss(_img(1, 3, 8, 8), 3, reduction="avg"), ValueError,
         "reduction must be one of"),
        ("reduction None", lambda: dk.dark_channel_loss(_img(1, 3, 8, 8), 3, reduction=None), TypeError,
         "reduction must be a str"),
    ],
    empty_shapes=[(1, 1, 3, 13, 0), (2, 3, 0, 5), (0, 3, 4, 5), (3, 0, 4), (2, 2, 3, 0, 0)],
    empty_inputs=lambda shape: _f64(shape),
    empty_calls=[("map", lambda x: dk.dark_channel(x, 5), lambda x: ref.dark_channel(x, 5))] + [
        (f"loss {r}", lambda x, r=r: dk.dark_channel_loss(x, 5, r), lambda x, r=r: ref.dark_channel_loss(x, 5, r))
        for r in ("mean", "sum", "none")],
)


# ---------------------------------------------------------------- tv_loss
def _tv_gradchecks():
    x = _req(*_f64((2, 2, 4, 5)))
    return [(lambda t, p=p, r=r, pad=pad: dk.tv_loss(t, r, p, pad), x, False)
            for p in (1, 2) for r in ("mean", "none") for pad in ("valid", "zeros")]


def _tv_opchecks():
    x = torch.rand(2, 3, 5, 6, dtype=torch.float64)
    g = torch.randn(2, 2, dtype=torch.float64)
    out = []
    for p in (1, 2):
        out += [(torch.ops.derain._tv_sums, (x.clone().requires_grad_(), p)),
                (torch.ops.derain._tv_sums, (x.contiguous(memory_format=torch.channels_last), p)),
                (torch.ops.derain._tv_sums_backward, (g, x, p))]
        for padding in ("valid", "zeros"):
            out += [(torch.ops.derain._tv_sums, (x.clone().requires_grad_(), p, padding)),
                    (torch.ops.derain._tv_sums, (x.contiguous(memory_format=torch.channels_last), p, padding)),
                    (torch.ops.derain._tv_sums_backward, (g, x, p, padding))]
    return out


def _tv_x():
    return torch.rand(1, 3, 8, 8)


TV_LOSS = Contract(
    name="tv_loss",
    op=lambda x: torch.stack([dk.tv_loss(x, "none", p, pad) for p in (1, 2) for pad in ("valid", "zeros")]),
    reference=lambda x: torch.stack([ref.tv_loss(x, "none", p, pad) for p in (1, 2) for pad in ("valid", "zeros")]),
    inputs=lambda dtype: (torch.rand(2, 3, 11, 13, dtype=dtype),),
    grads=(0,),
    tol=lambda dtype: dict(rtol=1e-5, atol=1e-5) if dtype == torch.float32 else dict(rtol=1e-12, atol=1e-12),
    gradchecks=_tv_gradchecks,
    opchecks=_tv_opchecks,
    compiled=lambda: ((lambda t: dk.tv_loss(t * 2.0) + dk.tv_loss(t, "sum", p=2) + dk.tv_loss(t, padding="zeros")),
                      (torch.rand(2, 3, 16, 16, requires_grad=True),)),
    bad=[
        ("p 3", lambda: dk.tv_loss(_tv_x(), p=3), ValueError, "p must be 1 or 2"),
        ("p bool", lambda: dk.tv_loss(_tv_x(), p=True), TypeError, "p must be 1 or 2"),
        ("p float", lambda: dk.tv_loss(_tv_x(), p=1.0), TypeError, "p must be 1 or 2"),
        ("p huge", lambda: dk.tv_loss(_tv_x(), p=2 ** 64), ValueError, "p must be 1 or 2"),
        ("padding", lambda: dk.tv_loss(_tv_x(), padding="reflect"), ValueError, "padding must be one of"),
        ("padding int", lambda: dk.tv_loss(_tv_x(), padding=0), TypeError, "padding must be a str"),
        ("reduction tensor", lambda: dk.tv_loss(_tv_x(), torch.tensor(1)), TypeError, "reduction must be a str"),
        ("reduction", lambda: dk.tv_loss(_tv_x(), "avg"), ValueError, "reduction must be one of"),
        ("1-D", lambda: dk.tv_loss(torch.rand(8)), ValueError, "x must have at least 2 dimensions"),
        ("int32", lambda: dk.tv_loss(torch.ones(1, 3, 8, 8, dtype=torch.int32)), TypeError, "x must have dtype"),
        ("str", lambda: dk.tv_loss("image"), TypeError, "x must be a torch.Tensor"),
    ],
    empty_shapes=[(3, 0, 4), (1, 3, 2, 5, 0), (0, 8), (8, 0), (2, 3, 0, 8), (0, 3, 4, 4), (2, 0, 4, 4)],
    empty_inputs=lambda shape: _f64(shape),
    empty_calls=[(f"{r} p={p} {pad}", lambda x, r=r, p=p, pad=pad: dk.tv_loss(x, r, p, pad),
                  lambda x, r=r, p=p, pad=pad: ref.tv_loss(x, r, p, pad))
                 for r in ("mean", "sum", "none") for p in (1, 2) for pad in ("valid", "zeros")],
)


# ---------------------------------------------------------------- rain_direction_loss
def _rd_gradchecks():
    z, g = _req(*_f64((2, 1, 4, 5), (2, 1, 4, 5)))
    angle = torch.tensor([20.0, 100.0])
    return [(lambda a, b: dk.rain_direction_loss(a, b, angle), (z, g), False),
            (lambda a, b: dk.rain_direction_loss(a, b, 45.0, "none", n=8, size=3), (z, g), False)]


def _rd_opchecks():
    z, g = _f64((2, 3, 6, 7), (2, 3, 6, 7))
    k = torch.stack([dk.directional_kernels(dtype=torch.float64)[[1, 10]]] * 2)
    cl = z.contiguous(memory_format=torch.channels_last)
    w = torch.randn(2, 2, dtype=torch.float64)
    return [(torch.ops.derain._rain_direction_sums, (z.clone().requires_grad_(), g.clone().requires_grad_(), k)),
            (torch.ops.derain._rain_direction_sums, (cl, g, k)),
            (torch.ops.derain._rain_direction_sums_backward, (w, cl, g, k))]


def _rd_compiled():
    z, g = torch.rand(2, 3, 16, 16, requires_grad=True), torch.rand(2, 3, 16, 16)
    return (lambda a, b, t: 1.2 * dk.rain_direction_loss(a, b, t)), (z, g, torch.tensor([30.0, 150.0]))


def _zz(*shape, **kw):
    return torch.rand(*shape, **kw), torch.rand(*shape, **kw)


_ANGLES = torch.tensor([10.0, 80.0])

RAIN_DIRECTION_LOSS = Contract(
    name="rain_direction_loss",
    op=lambda z, g: dk.rain_direction_loss(z, g, _ANGLES, "none"),
    reference=lambda z, g: ref.rain_direction_loss(z, g, _ANGLES, "none"),
    inputs=lambda dtype: _zz(2, 3, 11, 13, dtype=dtype),
    grads=(0, 1),
    tol=lambda dtype: dict(rtol=1e-5, atol=1e-5) if dtype == torch.float32 else dict(rtol=1e-10, atol=1e-12),
    gradchecks=_rd_gradchecks,
    opchecks=_rd_opchecks,
    compiled=_rd_compiled,
    bad=[
        ("z_gt shape", lambda: dk.rain_direction_loss(torch.rand(2, 3, 8, 8), torch.rand(2, 3, 8, 7), 0.0),
         ValueError, "z_gt must have z's shape"),
        ("dtypes differ", lambda: dk.rain_direction_loss(torch.rand(2, 3, 8, 8), torch.rand(2, 3, 8, 8).double(), 0.0),
         TypeError, "same dtype"),
        ("3-D", lambda: dk.rain_direction_loss(*_zz(3, 8, 8), 0.0), ValueError, "z must be \\(B, C, H, W\\)"),
        ("angle shape", lambda: dk.rain_direction_loss(*_zz(2, 3, 8, 8), torch.zeros(3)), ValueError, "angle must be"),
        ("angle str", lambda: dk.rain_direction_loss(*_zz(2, 3, 8, 8), "left"), TypeError, "angle must be a number"),
        ("angle nan", lambda: dk.rain_direction_loss(*_zz(2, 3, 8, 8), float("nan")), ValueError,
         "angle must be a finite number"),
        ("angle huge", lambda: dk.rain_direction_loss(*_zz(2, 3, 8, 8), 10 ** 400), ValueError,
         "angle must be a finite number"),
        ("angle device", lambda: dk.rain_direction_loss(*_zz(2, 3, 8, 8), torch.zeros(2, device="meta")),
         ValueError, "angle must be on z's device"),
        ("reduction", lambda: dk.rain_direction_loss(*_zz(2, 3, 8, 8), 0.0, "avg"), ValueError, "reduction must be"),
        ("reduction None", lambda: dk.rain_direction_loss(*_zz(2, 3, 8, 8), 0.0, None), TypeError,
         "reduction must be a str"),
        ("size even", lambda: dk.rain_direction_loss(*_zz(2, 3, 8, 8), 0.0, size=4), ValueError, "size must be odd"),
        ("n huge", lambda: dk.rain_direction_loss(*_zz(2, 3, 8, 8), 0.0, n=10 ** 9), ValueError, "at most 1048576"),
        ("bank n 0", lambda: dk.directional_kernels(0), ValueError, "n must be >= 1"),
        ("bank size even", lambda: dk.directional_kernels(18, 4), ValueError, "size must be odd"),
        ("bank n float", lambda: dk.directional_kernels(18.0), TypeError, "n must be an int"),
        ("bank n huge", lambda: dk.directional_kernels(10 ** 9), ValueError, r"at most 1048576 \(2\*\*20\)"),
        ("bank size huge", lambda: dk.directional_kernels(1, 100001), ValueError, r"at most 1048576 \(2\*\*20\)"),
        ("bank n 2**64", lambda: dk.directional_kernels(2 ** 64), ValueError, r"at most 1048576"),
        ("bank dtype int", lambda: dk.directional_kernels(dtype=torch.int64), TypeError,
         "dtype must be a floating dtype"),
        ("bank dtype bool", lambda: dk.directional_kernels(dtype=torch.bool), TypeError,
         "dtype must be a floating dtype"),
        ("bank dtype str", lambda: dk.directional_kernels(dtype="float32"), TypeError, "dtype must be a torch.dtype"),
        ("bank device", lambda: dk.directional_kernels(device="gpu0"), ValueError, "device"),
        ("bank device float", lambda: dk.directional_kernels(device=1.5), TypeError, "device must be a torch.device"),
    ],
    empty_shapes=[(0, 3, 4, 4), (2, 3, 0, 4), (2, 0, 4, 4), (2, 3, 4, 0)],
    empty_inputs=lambda shape: _f64(shape, shape),
    empty_calls=[(r, lambda z, g, r=r: dk.rain_direction_loss(z, g, 30.0, r),
                  lambda z, g, r=r: ref.rain_direction_loss(z, g, 30.0, r)) for r in ("mean", "sum", "none")],
)


# ---------------------------------------------------------------- ssim
def _ssim_images(shape, dtype=torch.float32):
    """A pair of correlated images in [0, 1] (y = x + noise), like a restored / clean pair."""
    x = torch.rand(shape, dtype=torch.float64)
    x = 0.5 * x + 0.5 * F.avg_pool2d(x.reshape(-1, 1, *shape[-2:]), 3, 1, 1).reshape(shape)
    y = (x + 0.1 * torch.randn(shape, dtype=torch.float64)).clamp(0, 1)
    return x.to(dtype), y.to(dtype)


def _ssim_gradchecks():
    out = []
    for padding in ("zeros", "valid", "reflect"):
        for reduction in ("mean", "none", "map"):
            x, y = _ssim_images((2, 1, 10, 9), torch.float64)
            out.append((lambda a, b, p=padding, r=reduction: dk.ssim(a, b, window_size=7, padding=p, reduction=r),
                        _req(x, y), False))
    return out


def _ssim_opchecks():
    out = []
    for padding, reduction in (("zeros", "mean"), ("valid", "none"), ("reflect", "map")):
        x, y = _ssim_images((2, 2, 14, 13), torch.float64)
        args = (x.clone().requires_grad_(), y.clone().requires_grad_(), 5, 1.5, 1.0, padding, reduction, 0.01, 0.03)
        g = torch.randn_like(torch.ops.derain.ssim(x, y, *args[2:]))
        out += [(torch.ops.derain.ssim, args),
                (torch.ops.derain.ssim, (x.contiguous(memory_format=torch.channels_last), y, *args[2:])),
                (torch.ops.derain._ssim_backward, (g, x, y, *args[2:])),
                (torch.ops.derain._ssim_backward_x, (g, x, y, *args[2:]))]
        if reduction != "map":
            out += [(torch.ops.derain._ssim_with_grad, (*args, need_y)) for need_y in (True, False)]
    return out


def _ssim_compiled():
    x, y = _ssim_images((2, 3, 20, 20))
    f = lambda a, b: dk.ssim_loss(a, b) + dk.ssim_loss(a, b, padding="valid", reduction="none").sum()  # noqa: E731
    return f, (x.requires_grad_(), y)


def _ssim_x():
    return torch.rand(1, 2, 12, 12)


SSIM = Contract(
    name="ssim",
    op=lambda x, y: dk.ssim(x, y, reduction="map"),
    reference=lambda x, y: ref.ssim(x, y, reduction="map"),
    inputs=lambda dtype: _ssim_images((2, 3, 15, 13), dtype),
    dtypes=FLOATS + (torch.float16, torch.bfloat16),
    grads=(0, 1),
    tol=lambda dtype: {torch.float64: dict(rtol=1e-10, atol=1e-10), torch.float32: dict(rtol=0, atol=1e-5)}.get(
        dtype, dict(rtol=0, atol=1e-2)),
    gradchecks=_ssim_gradchecks,
    opchecks=_ssim_opchecks,
    compiled=_ssim_compiled,
    bad=[(f"{i}", call, exc, match) for i, (call, exc, match) in enumerate([
        (lambda: dk.ssim(_ssim_x(), _ssim_x().double()), TypeError, "same dtype"),
        (lambda: dk.ssim(_ssim_x(), _ssim_x()[..., :-1]), ValueError, "same shape"),
        (lambda: dk.ssim(_ssim_x(), "y"), TypeError, "y must be a torch.Tensor"),
        (lambda: dk.ssim(_ssim_x().long(), _ssim_x().long()), TypeError, "x must have dtype"),
        (lambda: dk.ssim(_ssim_x()[0, 0, 0], _ssim_x()[0, 0, 0]), ValueError, "x must have at least 2"),
        (lambda: dk.ssim(_ssim_x(), _ssim_x(), window_size=4), ValueError, "window_size must be an odd"),
        (lambda: dk.ssim(_ssim_x(), _ssim_x(), window_size=11.0), TypeError, "window_size must be an int"),
        (lambda: dk.ssim(_ssim_x(), _ssim_x(), sigma=0), ValueError, "sigma"),
        (lambda: dk.ssim(_ssim_x(), _ssim_x(), sigma="1.5"), TypeError, "sigma"),
        (lambda: dk.ssim(_ssim_x(), _ssim_x(), data_range=-1.0), ValueError, "data_range"),
        (lambda: dk.ssim(_ssim_x(), _ssim_x(), k1=float("nan")), ValueError, "k1"),
        (lambda: dk.ssim(_ssim_x(), _ssim_x(), k2=0), ValueError, "k2"),
        (lambda: dk.ssim(_ssim_x(), _ssim_x(), padding="same"), ValueError, "padding must be one of"),
        (lambda: dk.ssim(_ssim_x(), _ssim_x(), reduction="sum"), ValueError, "reduction must be one of"),
        (lambda: dk.ssim(_ssim_x(), _ssim_x()[..., :0]), ValueError, "same shape"),
        (lambda: dk.ssim(_ssim_x()[..., :0], _ssim_x()[..., :0], padding="valid"), ValueError, "window_size"),
        (lambda: dk.SSIMLoss(padding="valdi"), ValueError, "padding"),
        (lambda: dk.ssim(_ssim_x(), _ssim_x().to("meta")), ValueError, "same device"),
        (lambda: dk.ssim(_ssim_x(), _ssim_x(), window_size=10 ** 9 + 1), ValueError, "window_size must be <= 1023"),
        (lambda: dk.ssim(_ssim_x(), _ssim_x(), window_size=2 ** 64 + 1), ValueError, "window_size must be <= 1023"),
        (lambda: dk.SSIMLoss(window_size=1025), ValueError, "window_size must be <= 1023"),
        (lambda: dk.ssim(_ssim_x(), _ssim_x(), data_range=10 ** 400), ValueError, "data_range must be a finite"),
        (lambda: dk.ssim(_ssim_x(), _ssim_x(), sigma=torch.tensor(1.5)), TypeError, "sigma must be a real number"),
        (lambda: dk.ssim(_ssim_x(), _ssim_x(), padding=None), TypeError, "padding must be a str"),
        (lambda: dk.ssim(_ssim_x(), _ssim_x(), reduction=np.array(["mean", "none"])), TypeError,
         "reduction must be a str"),
    ])],
    # sizes where every padding applies to a 5-tap window; the refusals of "valid" and "reflect"
    # for images smaller than the window are op-specific tests
    empty_shapes=[(0, 3, 12, 12), (2, 0, 12, 12)],
    empty_inputs=lambda shape: _f64(shape, shape),
    empty_calls=[(f"{fn} {p} {r}", lambda x, y, fn=fn, p=p, r=r: getattr(dk, fn)(x, y, 5, padding=p, reduction=r),
                  lambda x, y, fn=fn, p=p, r=r: getattr(ref, fn)(x, y, 5, padding=p, reduction=r))
                 for fn in ("ssim", "ssim_loss") for p in ("zeros", "valid", "reflect")
                 for r in ("mean", "none", "map")],
)


# ---------------------------------------------------------------- self_correcting_block
def block_params(c, dtype=torch.float32, scale=0.25):
    """(w1, b1, w3, b3) of a block of c channels, weights ~ N(0, scale²)."""
    w1 = torch.randn(c, c, 3, 3, dtype=dtype) * scale
    b1 = torch.randn(c, dtype=dtype) * 0.1
    w3 = torch.randn(c, c, 3, 3, dtype=dtype) * scale
    b3 = torch.randn(c, dtype=dtype) * 0.1
    return w1, b1, w3, b3


def block_tol(dtype):
    # float32: both sides round (the reference's oneDNN convolution and ours); our Winograd F(4,3)
    # convolutions round about 1.5x more than direct summation (test_block.py bounds that separately)
    return dict(rtol=1e-5, atol=3e-5) if dtype == torch.float32 else dict(rtol=1e-10, atol=1e-10)


def _block_gradchecks():
    out = []
    for recompute in (False, True):
        for channels, dilation, shape in ((3, 2, (1, 3, 5, 7)), (16, 3, (1, 16, 5, 6))):
            inputs = _req(torch.randn(shape, dtype=torch.float64), *block_params(channels, torch.float64))
            out.append((lambda *a, d=dilation, r=recompute: dk.self_correcting_block(*a, dilation=d, recompute=r),
                        inputs, False))
    return out


def _block_opchecks():
    x = torch.randn(2, 3, 7, 9, dtype=torch.float64)
    p = block_params(3, torch.float64)
    xc = x.contiguous(memory_format=torch.channels_last)
    leaves = _req(x.clone(), *[t.clone() for t in p])
    out = torch.ops.derain.self_correcting_block(x, *p, 2)
    g = torch.randn_like(out)
    out2, la = torch.ops.derain._self_correcting_block_train(x, *p, 2)
    return [(torch.ops.derain.self_correcting_block, (*leaves, 2)),
            (torch.ops.derain.self_correcting_block, (xc, *p, 3)),
            (torch.ops.derain._self_correcting_block_backward, (g, x, out, *p, 2)),
            (torch.ops.derain._self_correcting_block_train, (*leaves, 2)),
            (torch.ops.derain._self_correcting_block_train, (xc, *p, 3)),
            (torch.ops.derain._self_correcting_block_backward_la, (g, x, la, p[0], p[2], 2))]


def _block_compiled():
    block = dk.nn.SelfCorrectingBlock(16)
    return (lambda t: block(t * 2).square().sum()), (torch.randn(2, 16, 12, 12, requires_grad=True),)


def _bx():
    return torch.randn(1, 16, 6, 6)


def _bp():
    return block_params(16)


SELF_CORRECTING_BLOCK = Contract(
    name="self_correcting_block",
    op=lambda *a: dk.self_correcting_block(*a, 3),
    reference=lambda *a: ref.self_correcting_block(*a, 3),
    inputs=lambda dtype: (torch.randn(2, 16, 11, 13, dtype=dtype), *block_params(16, dtype)),
    grads=(0, 1, 2, 3, 4),
    grad_dtypes=(torch.float64,),  # float32 gradients: test_block.py, with error bounds of their own
    tol=block_tol,
    layout_inputs=(0, 1),
    channels_last_out=True,
    gradchecks=_block_gradchecks,
    opchecks=_block_opchecks,
    compiled=_block_compiled,
    bad=[
        ("half", lambda: dk.self_correcting_block(_bx().half(), *_bp()), TypeError, "x must have dtype"),
        ("dtypes differ", lambda: dk.self_correcting_block(_bx().double(), *_bp()), TypeError, "same dtype"),
        ("3-D", lambda: dk.self_correcting_block(_bx()[0], *_bp()), ValueError, "x must be a 4-D"),
        ("w1 shape", lambda: dk.self_correcting_block(_bx()[:, :3], *_bp()), ValueError,
         r"w1 must have shape \(3, 3, 3, 3\)"),
        ("b1 shape", lambda: dk.self_correcting_block(_bx(), _bp()[0], _bp()[1][:3], *_bp()[2:]), ValueError,
         "b1 must have shape"),
        ("w3 shape", lambda: dk.self_correcting_block(_bx(), *_bp()[:2], _bp()[2][..., :2], _bp()[3]), ValueError,
         "w3 must have shape"),
        ("dilation 0", lambda: dk.self_correcting_block(_bx(), *_bp(), dilation=0), ValueError,
         "dilation must be >= 1"),
        ("dilation float", lambda: dk.self_correcting_block(_bx(), *_bp(), dilation=2.0), TypeError,
         "dilation must be an int"),
        ("dilation bool", lambda: dk.self_correcting_block(_bx(), *_bp(), dilation=True), TypeError,
         "dilation must be an int"),
        ("numpy", lambda: dk.self_correcting_block(_bx().numpy(), *_bp()), TypeError, "x must be a torch.Tensor"),
        ("devices", lambda: dk.self_correcting_block(_bx(), _bp()[0].to("meta"), *_bp()[1:]), ValueError,
         "same device"),
        ("recompute int", lambda: dk.self_correcting_block(_bx(), *_bp(), recompute=1), TypeError,
         "recompute must be a bool"),
        ("module recompute", lambda: dk.nn.SelfCorrectingBlock(16, recompute="yes"), TypeError,
         "recompute must be a bool"),
        ("module channels", lambda: dk.nn.SelfCorrectingBlock(0), ValueError, "channels must be >= 1"),
        ("module dilation", lambda: dk.nn.SelfCorrectingBlock(16, dilation=-1), ValueError, "dilation must be >= 1"),
    ],
    empty_shapes=[(0, 4, 5, 5), (2, 4, 0, 5), (2, 4, 5, 0), (2, 0, 5, 5)],
    empty_inputs=lambda shape: (torch.randn(shape, dtype=torch.float64), *block_params(shape[1], torch.float64)),
    empty_calls=[("saving la", lambda *a: dk.self_correcting_block(*a), lambda *a: ref.self_correcting_block(*a)),
                 ("recompute", lambda *a: dk.self_correcting_block(*a, recompute=True),
                  lambda *a: ref.self_correcting_block(*a))],
)


# ---------------------------------------------------------------- conv3x3_relu
def conv_relu_params(cin, cout, dtype=torch.float32):
    """(weight, bias) of a 3x3 convolution, weights ~ N(0, 1/(9 cin)): outputs of order one."""
    return torch.randn(cout, cin, 3, 3, dtype=dtype) * (9 * cin) ** -0.5, torch.randn(cout, dtype=dtype) * 0.1


def _conv_relu_gradchecks():
    out = []
    for c1, c2, cout, shape in ((3, 0, 5, (1, 3, 5, 7)), (4, 3, 2, (2, 4, 6, 5)), (16, 16, 16, (1, 16, 5, 6))):
        x = torch.randn(shape, dtype=torch.float64)
        x2 = [torch.randn(shape[0], c2, *shape[2:], dtype=torch.float64)] if c2 else []
        w, b = conv_relu_params(c1 + c2, cout, torch.float64)
        out.append((lambda x, w, b, *x2: dk.conv3x3_relu(x, w, b, *x2), _req(x, w, b, *x2), False))
    return out


def _conv_relu_opchecks():
    x, x2 = torch.randn(2, 3, 7, 9, dtype=torch.float64), torch.randn(2, 4, 7, 9, dtype=torch.float64)
    w, b = conv_relu_params(7, 5, torch.float64)
    out = torch.ops.derain.conv3x3_relu(x, w, b, x2)
    g = torch.randn_like(out)
    return [(torch.ops.derain.conv3x3_relu, (*_req(x.clone(), w.clone(), b.clone()), *_req(x2.clone()))),
            (torch.ops.derain.conv3x3_relu, (x.contiguous(memory_format=torch.channels_last), w[:, :3], b)),
            (torch.ops.derain._conv3x3_relu_backward, (g, out, x, w, x2)),
            (torch.ops.derain._conv3x3_relu_backward, (g[:, :, :, :], out, x, w[:, :3], None))]


def _cx():
    return torch.randn(1, 4, 6, 6)


def _cw(cin=4):
    return conv_relu_params(cin, 3)


CONV3X3_RELU = Contract(
    name="conv3x3_relu",
    op=lambda x, x2, w, b: dk.conv3x3_relu(x, w, b, x2),
    reference=lambda x, x2, w, b: ref.conv3x3_relu(x, w, b, x2),
    inputs=lambda dtype: (torch.randn(2, 16, 11, 13, dtype=dtype), torch.randn(2, 16, 11, 13, dtype=dtype),
                          *conv_relu_params(32, 16, dtype)),
    grads=(0, 1, 2, 3),
    grad_dtypes=(torch.float64,),  # float32 gradients: test_conv_relu.py, with error bounds of their own
    tol=block_tol,
    layout_inputs=(0, 1),
    channels_last_out=True,
    gradchecks=_conv_relu_gradchecks,
    opchecks=_conv_relu_opchecks,
    compiled=lambda: ((lambda x, y: dk.conv3x3_relu(x * 2, *_CONV_COMPILED_PARAMS, y).square().sum()),
                      (torch.randn(2, 16, 12, 12, requires_grad=True), torch.randn(2, 16, 12, 12))),
    bad=[
        ("half", lambda: dk.conv3x3_relu(_cx().half(), *_cw()), TypeError, "x must have dtype"),
        ("dtypes differ", lambda: dk.conv3x3_relu(_cx().double(), *_cw()), TypeError, "same dtype"),
        ("3-D", lambda: dk.conv3x3_relu(_cx()[0], *_cw()), ValueError, "x must be a 4-D"),
        ("weight channels", lambda: dk.conv3x3_relu(_cx(), *_cw(5)), ValueError,
         r"weight must have shape \(Cout, 4, 3, 3\)"),
        ("weight 5x5", lambda: dk.conv3x3_relu(_cx(), torch.randn(3, 4, 5, 5), torch.zeros(3)), ValueError,
         "weight must have shape"),
        ("bias shape", lambda: dk.conv3x3_relu(_cx(), _cw()[0], torch.zeros(4)), ValueError,
         r"bias must have shape \(3,\)"),
        ("x2 size", lambda: dk.conv3x3_relu(_cx(), *_cw(6), torch.randn(1, 2, 5, 6)), ValueError,
         "x2 must be"),
        ("x2 dtype", lambda: dk.conv3x3_relu(_cx(), *_cw(6), torch.randn(1, 2, 6, 6).double()), TypeError,
         "same dtype"),
        ("numpy", lambda: dk.conv3x3_relu(_cx().numpy(), *_cw()), TypeError, "x must be a torch.Tensor"),
        ("devices", lambda: dk.conv3x3_relu(_cx(), _cw()[0].to("meta"), _cw()[1]), ValueError, "same device"),
    ],
    empty_shapes=[(0, 4, 5, 5), (2, 4, 0, 5), (2, 4, 5, 0)],
    empty_inputs=lambda shape: (torch.randn(shape, dtype=torch.float64), torch.randn(shape, dtype=torch.float64),
                                *conv_relu_params(2 * shape[1], 3, torch.float64)),
    empty_calls=[("cat", lambda x, x2, w, b: dk.conv3x3_relu(x, w, b, x2),
                  lambda x, x2, w, b: ref.conv3x3_relu(x, w, b, x2))],
)
_CONV_COMPILED_PARAMS = conv_relu_params(32, 16)


# ---------------------------------------------------------------- conv3x3 (fused activation)
def conv3x3_tol(dtype):
    """Direct summation in the input's dtype, against the float64 reference."""
    return dict(rtol=1e-5, atol=2e-5) if dtype == torch.float32 else dict(rtol=1e-10, atol=1e-11)


def _conv3x3_gradchecks():
    out = []
    for act, cin, cout, shape in (("tanh", 16, 3, (1, 16, 5, 7)), ("none", 16, 1, (2, 16, 4, 3)),
                                  ("relu", 5, 4, (1, 5, 6, 5)), ("tanh", 3, 6, (1, 3, 4, 5))):  # 6: ATen's path
        x = torch.randn(shape, dtype=torch.float64)
        w, b = conv_relu_params(cin, cout, torch.float64)
        out.append((lambda x, w, b, act=act: dk.conv3x3(x, w, b, act), _req(x, w, b), False))
    return out


def _conv3x3_opchecks():
    x = torch.randn(2, 16, 7, 9, dtype=torch.float64)
    w, b = conv_relu_params(16, 3, torch.float64)
    out = torch.ops.derain.conv3x3(x, w, b, "tanh")
    g = torch.randn_like(out)
    return [(torch.ops.derain.conv3x3, (*_req(x.clone(), w.clone(), b.clone()), "tanh")),
            (torch.ops.derain.conv3x3, (x.float().contiguous(memory_format=torch.channels_last), w.float(), b.float())),
            (torch.ops.derain._conv3x3_backward, (g, out, x, w, "tanh", True)),
            (torch.ops.derain._conv3x3_backward, (g, out, x, w, "relu", False))]


CONV3X3 = Contract(
    name="conv3x3",
    op=lambda x, w, b: dk.conv3x3(x, w, b, "tanh"),
    reference=lambda x, w, b: ref.conv3x3(x, w, b, "tanh"),
    inputs=lambda dtype: (torch.randn(2, 16, 11, 13, dtype=dtype), *conv_relu_params(16, 3, dtype)),
    grads=(0, 1, 2),
    tol=conv3x3_tol,
    grad_tol=lambda dtype: dict(rtol=2e-5, atol=5e-5) if dtype == torch.float32 else dict(rtol=1e-10, atol=1e-10),
    layout_inputs=(0,),
    channels_last_out=True,
    gradchecks=_conv3x3_gradchecks,
    opchecks=_conv3x3_opchecks,
    compiled=lambda: ((lambda x: dk.conv3x3(x * 2, *_CONV3X3_COMPILED_PARAMS, "tanh").square().sum()),
                      (torch.randn(2, 16, 12, 12, requires_grad=True),)),
    bad=[
        ("activation", lambda: dk.conv3x3(_cx(), *_cw(), "gelu"), ValueError, "activation must be one of"),
        ("half", lambda: dk.conv3x3(_cx().half(), *_cw()), TypeError, "x must have dtype"),
        ("dtypes differ", lambda: dk.conv3x3(_cx().double(), *_cw()), TypeError, "same dtype"),
        ("3-D", lambda: dk.conv3x3(_cx()[0], *_cw()), ValueError, "x must be a 4-D"),
        ("weight channels", lambda: dk.conv3x3(_cx(), *_cw(5)), ValueError, r"weight must have shape \(Cout, 4, 3, 3\)"),
        ("weight 5x5", lambda: dk.conv3x3(_cx(), torch.randn(3, 4, 5, 5), torch.zeros(3)), ValueError,
         "weight must have shape"),
        ("bias shape", lambda: dk.conv3x3(_cx(), _cw()[0], torch.zeros(4)), ValueError, r"bias must have shape \(3,\)"),
        ("numpy", lambda: dk.conv3x3(_cx().numpy(), *_cw()), TypeError, "x must be a torch.Tensor"),
        ("devices", lambda: dk.conv3x3(_cx(), _cw()[0].to("meta"), _cw()[1]), ValueError, "same device"),
    ],
    empty_shapes=[(0, 16, 5, 5), (2, 16, 0, 5), (2, 16, 5, 0)],
    empty_inputs=lambda shape: (torch.randn(shape, dtype=torch.float64), *conv_relu_params(shape[1], 3, torch.float64)),
    empty_calls=[("tanh", lambda x, w, b: dk.conv3x3(x, w, b, "tanh"), lambda x, w, b: ref.conv3x3(x, w, b, "tanh")),
                 ("none", lambda x, w, b: dk.conv3x3(x, w, b), lambda x, w, b: ref.conv3x3(x, w, b))],
)
_CONV3X3_COMPILED_PARAMS = conv_relu_params(16, 3)


# ---------------------------------------------------------------- the fused network (inference)
def network_model(seed=0):
    """RainOerMeNet with weights N(0, 1/fan_in) and nonzero biases: every layer carries signal of order one."""
    from derain.models.rain_oer_me import RainOerMeNet

    torch.manual_seed(seed)
    m = RainOerMeNet().eval()
    with torch.no_grad():
        for mod in m.modules():
            if isinstance(mod, torch.nn.Conv2d):
                mod.weight.normal_(0.0, mod.weight[0].numel() ** -0.5)
                mod.bias.normal_(0.0, 0.1)
    return m


_NETWORK_PARAMS = {}


def network_params(dtype=torch.float32):
    """The 38 tensors of network_model(6), in the fused op's order."""
    if dtype not in _NETWORK_PARAMS:
        from derain.models.rain_oer_me import fused_params

        _NETWORK_PARAMS[dtype] = [t.to(dtype) for t in fused_params(network_model(6).state_dict())]
    return _NETWORK_PARAMS[dtype]


def _network_opchecks():
    x = torch.rand(1, 3, 9, 11)
    params = network_params()
    return [(torch.ops.derain._rain_oer_me_derain, (x, params, 3)),
            (torch.ops.derain._rain_oer_me_derain, (x.contiguous(memory_format=torch.channels_last), params, 3))]


def _fused():
    return dk.nn.FusedRainOerMe(network_params())


FUSED_NETWORK = Contract(
    name="rain_oer_me_derain",
    op=lambda x: dk.nn.FusedRainOerMe(network_params(x.dtype))(x),
    reference=lambda x: ref.rain_oer_me_derain(x, network_params(x.dtype)),
    inputs=lambda dtype: (torch.rand(2, 3, 15, 21, dtype=dtype),),
    tol=lambda dtype: dict(rtol=0, atol=2e-5) if dtype == torch.float32 else dict(rtol=0, atol=1e-11),
    channels_last_out=True,
    opchecks=_network_opchecks,
    compiled=lambda: (_fused(), (torch.rand(1, 3, 16, 16),)),
    bad=[
        ("4 channels", lambda: _fused()(torch.rand(1, 4, 8, 8)), ValueError, r"params\[0\] \(conv 0 weight\)"),
        ("3-D", lambda: _fused()(torch.rand(3, 8, 8)), ValueError, "x must be a 4-D"),
        ("half", lambda: _fused()(torch.rand(1, 3, 8, 8).half()), TypeError, "x must have dtype"),
        ("str", lambda: _fused()("image"), TypeError, "x must be a torch.Tensor"),
        ("dilation", lambda: dk.nn.FusedRainOerMe(network_params(), dilation=0), ValueError, "dilation must be >= 1"),
        ("state dict", lambda: dk.nn.FusedRainOerMe(network_model().state_dict()), TypeError,
         "params must be a list of 38 tensors.*fused_params"),
        ("37 tensors", lambda: dk.nn.FusedRainOerMe(network_params()[:-1]), ValueError, "params must hold 38"),
        ("not a tensor", lambda: dk.nn.FusedRainOerMe(network_params()[:1] + [None] * 37), TypeError,
         r"params\[1\] \(conv 0 bias\)"),
    ],
)


CONTRACTS = {c.name: c for c in (MIN_COMPOSITE, RAIN_COMPOSITE, MEDIAN_FILTER, DARK_CHANNEL, TV_LOSS,
                                 RAIN_DIRECTION_LOSS, SSIM, SELF_CORRECTING_BLOCK, CONV3X3_RELU,
                                 CONV3X3, FUSED_NETWORK)}
