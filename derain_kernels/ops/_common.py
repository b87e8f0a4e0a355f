"""Helpers of the public ops: Triton on CUDA, the call-first error path, the cache of scalar facts."""
from __future__ import annotations

import functools

import torch


def register_triton_cuda(op: str, module: str) -> bool:
    """Register `derain_kernels.triton.<module>.<fn>` as the CUDA kernel of `derain::<op>`.

    `fn` is the op's name without the leading underscore of internal ops
    (`_ssim_backward` -> `ssim_backward`).

    Only a fallback: when the extension was built with its CUDA kernels, `derain::<op>`
    already has a CUDA kernel registered from C++ (csrc/ops/cuda) and nothing is registered
    here, so an eager CUDA call never goes through Python. The Triton module is imported on
    first use, so `import derain_kernels` does not pay for importing triton. Returns False
    when nothing was registered (a compiled kernel exists, or triton is not installed).
    """
    import importlib
    import importlib.util

    if torch._C._dispatch_has_kernel_for_dispatch_key(f"derain::{op}", "CUDA"):
        return False  # registered from C++ when derain_kernels._C was loaded
    if importlib.util.find_spec("triton") is None:
        return False

    fn = op.lstrip("_")

    def cuda_kernel(*args, **kwargs):
        mod = importlib.import_module(f"derain_kernels.triton.{module}")
        return getattr(mod, fn)(*args, **kwargs)

    cuda_kernel.__name__ = f"{op}_cuda"
    torch.library.register_kernel(f"derain::{op}", "cuda", cuda_kernel)
    return True


def explain_failure(check, *args) -> None:
    """Called where an op call raised: run the Python checks of its arguments.

    The public functions call the op first: every kernel refuses bad arguments itself, so a good
    call costs one dispatcher call and no Python checks. When the call raised, `check(*args)`
    names the argument and the rule in a TypeError / ValueError, raised in place of the kernel's
    message (which is hidden). If the checks pass, the failure was something else (out of
    memory, say) and the caller re-raises the original error.
    """
    try:
        check(*args)
    except (TypeError, ValueError) as err:
        err.__suppress_context__ = True
        raise


def eager_cache(maxsize: int = 64, typed: bool = True):
    """functools.lru_cache for eager calls only: torch.compile traces the function itself.

    For facts derived from scalar arguments (checked values, divisors, selected kernels),
    computed once per distinct set of arguments. typed=True keeps True, 1 and 1.0 apart, so a
    value the checks refuse is never served from the cache of an accepted one.
    """
    def wrap(fn):
        cached = functools.lru_cache(maxsize=maxsize, typed=typed)(fn)

        @functools.wraps(fn)
        def call(*args):
            if torch.compiler.is_compiling():
                return fn(*args)
            return cached(*args)

        call.cache_clear = cached.cache_clear
        return call

    return wrap
