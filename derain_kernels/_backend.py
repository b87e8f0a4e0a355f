"""Loading of the compiled kernels and the Triton kernels; `backend_info()`.

The C++ extension `derain_kernels._C` registers the `torch.ops.derain.*`
schemas and their CPU kernels when imported. If it is missing (the build
failed, or torch was absent at install time) the package still works: every
public op then runs its pure-PyTorch reference, and one warning says so.
"""
from __future__ import annotations

import importlib.metadata
import importlib.util
import os
import warnings

import torch

try:
    from . import _C  # noqa: F401  (registers torch.ops.derain.*)

    HAS_CPP = True
    _CPP_ERROR = None
except ImportError as exc:  # pragma: no cover - exercised only on broken installs
    HAS_CPP = False
    _CPP_ERROR = str(exc)
    warnings.warn(
        "derain_kernels: the C++ extension is not available "
        f"({exc}); ops run on their pure-PyTorch reference implementations, which are "
        "exact but slow. Reinstall with `pip install --no-build-isolation -e .` to build it.",
        RuntimeWarning,
        stacklevel=2,
    )

# Triton is imported lazily by the kernels that need it; here we only look it up.
HAS_TRITON = importlib.util.find_spec("triton") is not None
try:
    TRITON_VERSION = importlib.metadata.version("triton") if HAS_TRITON else None
except importlib.metadata.PackageNotFoundError:  # pragma: no cover
    TRITON_VERSION = None

TRITON_INTERPRET = os.environ.get("TRITON_INTERPRET", "0") == "1"


def has_op(name: str) -> bool:
    """True when the schema `derain::<name>` is registered (the C++ extension loaded)."""
    return HAS_CPP and hasattr(torch.ops.derain, name)


def cpu_kernel_ops() -> list[str]:
    """Names of the `derain::` ops that have a C++ CPU kernel."""
    if not HAS_CPP:
        return []
    names = []
    for name in sorted(torch._C._dispatch_get_all_op_names()):
        if name.startswith("derain::") and torch._C._dispatch_has_kernel_for_dispatch_key(name, "CPU"):
            names.append(name.split("::", 1)[1])
    return names


def cuda_kernel_ops() -> list[str]:
    """Names of the `derain::` ops that have a CUDA kernel (Triton, registered from Python)."""
    names = []
    for name in sorted(torch._C._dispatch_get_all_op_names()):
        if name.startswith("derain::") and torch._C._dispatch_has_kernel_for_dispatch_key(name, "CUDA"):
            names.append(name.split("::", 1)[1])
    return names


def empty_output_cache() -> int:
    """Free the buffers the C++ kernels keep for reuse; return the bytes freed.

    Outputs of 1 MiB and more of the fused block's CPU kernels come from a small cache of the
    buffers of outputs the caller has already freed (at most `DERAIN_OUTPUT_CACHE_MB` MiB, default
    64; 0 turns it off): a training loop then writes pages that are already mapped instead of
    faulting fresh ones in every step. Call this to hand that memory back, e.g. before measuring
    a process's memory.
    """
    if not HAS_CPP:
        return 0
    return int(_C.empty_output_cache())


def backend_info() -> dict:
    """Which kernels are active: C++ CPU kernels, Triton CUDA kernels, build flags, versions."""
    info = {
        "cpp_extension": HAS_CPP,
        "cpu_kernels": "C++" if HAS_CPP else "reference (pure PyTorch)",
        "cpu_ops": cpu_kernel_ops(),
        "triton": TRITON_VERSION,
        "triton_interpret": TRITON_INTERPRET,
        "cuda_available": torch.cuda.is_available(),
        "cuda_kernels": "Triton" if HAS_TRITON and cuda_kernel_ops() else "none",
        "cuda_ops": cuda_kernel_ops(),
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
    }
    if HAS_CPP:
        info["build"] = _C.build_info()
    else:
        info["cpp_error"] = _CPP_ERROR
    return info
