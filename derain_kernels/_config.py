"""Kernel settings: the choices between equivalent kernels that exist for tests and A/B runs.

One typed object, `derain_kernels.config`, holds them; every setting is on when True. The C++
kernels read them at each call (csrc/config.h), so a change takes effect at the next call::

    import derain_kernels as dk
    dk.config.conv_winograd = False            # direct convolutions from now on
    with dk.config.override(wgrad_pairs=False, output_cache_mb=0):
        ...                                     # restored on exit, also on an exception
    dk.config.as_dict()

The environment is read once, here, at import: ``DERAIN_<SETTING>`` (upper case) with ``1``/``0``
for the switches and a number of MiB for ``DERAIN_OUTPUT_CACHE_MB``.

| setting | default | what it chooses |
|---|---|---|
| conv_winograd | True | float32 3×3 convolutions of the block/network as Winograd F(4,3) rows (AVX-512 builds); False: direct |
| conv_pairs | True | those Winograd convolutions two output rows at a time (F(2,3) along y) |
| wgrad_winograd | True | weight gradients as Winograd F(4,3) rows (AVX-512 builds); False: direct |
| wgrad_pairs | True | those Winograd weight gradients two rows at a time |
| fused_epilogues | True | the block's epilogues in one vector pass (AVX-512 builds); on CUDA, cuDNN's fused convolution + bias + ReLU (+ add) for float32; False: scalar loops / ATen's element-wise passes |
| median_tracking | True | the median tracks its rank from pixel to pixel where that is faster; False: Perreault–Hebert histograms |
| gpu_tiles | True | the CUDA median and SSIM run thread-block tiles in shared memory; False: one thread per element (slower; bit-identical results) |
| output_cache_mb | 64 | MiB of freed fused-block outputs kept for reuse (0 turns the cache off) |

Every choice gives results within the op's documented accuracy (most are bit-identical;
docs/ops/block.md says which are not); they differ in speed only.
"""
from __future__ import annotations

import contextlib
import os
import warnings

from ._backend import HAS_CPP

if HAS_CPP:
    from . import _C

_SWITCHES = ("conv_winograd", "conv_pairs", "wgrad_winograd", "wgrad_pairs", "fused_epilogues", "median_tracking",
             "gpu_tiles")
_DEFAULTS = {**{name: True for name in _SWITCHES}, "output_cache_mb": 64}

# Variables of earlier releases: read no more, named so that a user who sets one is told.
_RETIRED = {
    "DERAIN_WGRAD_DIRECT": "DERAIN_WGRAD_WINOGRAD=0",
    "DERAIN_MEDIAN_TRACK": "DERAIN_MEDIAN_TRACKING",
    "DERAIN_CONV_PLAIN": None,
    "DERAIN_NO_PREFETCH": None,
    "DERAIN_MEDIAN_TH": None,
    "DERAIN_MEDIAN_TW": None,
}


def _check(name: str, value):
    if name not in _DEFAULTS:
        raise AttributeError(f"derain_kernels.config has no setting {name!r}; settings: {', '.join(_DEFAULTS)}")
    if name == "output_cache_mb":
        if isinstance(value, bool) or not isinstance(value, int):
            raise TypeError(f"output_cache_mb must be an int (MiB), got {type(value).__name__}")
        if not 0 <= value <= 1 << 40:
            raise ValueError(f"output_cache_mb must be in [0, 2**40] MiB, got {value}")
        return int(value)
    if not isinstance(value, bool):
        raise TypeError(f"{name} must be a bool, got {type(value).__name__}")
    return value


def _from_environment(environ) -> dict:
    values = {}
    for name, default in _DEFAULTS.items():
        var = "DERAIN_" + name.upper()
        raw = environ.get(var)
        if raw is None or raw.strip() == "":
            continue
        raw = raw.strip()
        if isinstance(default, bool):
            if raw not in ("0", "1"):
                warnings.warn(f"{var}={raw!r} ignored: use 1 (on) or 0 (off)", RuntimeWarning, stacklevel=3)
                continue
            values[name] = raw == "1"
        else:
            try:
                values[name] = _check(name, int(raw))
            except (TypeError, ValueError):
                warnings.warn(f"{var}={raw!r} ignored: use a whole number of MiB >= 0", RuntimeWarning, stacklevel=3)
    for var, instead in _RETIRED.items():
        if var in environ:
            hint = f"use {instead} or derain_kernels.config" if instead else "it is no longer a setting"
            warnings.warn(f"{var} is no longer read: {hint}", RuntimeWarning, stacklevel=3)
    return values


class KernelConfig:
    """The kernel settings (see the module docstring); `derain_kernels.config` is the one instance."""

    __slots__ = ("_local",)

    def __init__(self):
        object.__setattr__(self, "_local", dict(_DEFAULTS))

    def __getattr__(self, name):
        if name not in _DEFAULTS:
            raise AttributeError(f"derain_kernels.config has no setting {name!r}; settings: {', '.join(_DEFAULTS)}")
        if HAS_CPP:
            return _C.get_config()[name]
        return self._local[name]

    def __setattr__(self, name, value):
        value = _check(name, value)
        if HAS_CPP:
            _C.set_config(name, value)
        self._local[name] = value

    def __dir__(self):
        return list(_DEFAULTS) + ["as_dict", "override", "reset"]

    def as_dict(self) -> dict:
        """Every setting and its current value."""
        if HAS_CPP:
            return dict(_C.get_config())
        return dict(self._local)

    def reset(self) -> None:
        """Back to the defaults (not to the environment)."""
        for name, value in _DEFAULTS.items():
            setattr(self, name, value)

    @contextlib.contextmanager
    def override(self, **settings):
        """Set some settings inside a `with` block; the previous values come back on exit."""
        for name, value in settings.items():
            _check(name, value)
        before = {name: getattr(self, name) for name in settings}
        try:
            for name, value in settings.items():
                setattr(self, name, value)
            yield self
        finally:
            for name, value in before.items():
                setattr(self, name, value)

    def __repr__(self) -> str:
        return "derain_kernels.config(" + ", ".join(f"{k}={v!r}" for k, v in self.as_dict().items()) + ")"


config = KernelConfig()
for _name, _value in _from_environment(os.environ).items():
    setattr(config, _name, _value)
