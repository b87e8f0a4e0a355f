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


def _derain_ops() -> list[str]:
    """Qualified names `derain::<op>` of the registered ops, without the test-only `_emulate_*` ones.

    Internal ops (backwards, training forms, the fused network) have a leading underscore and are
    listed: they run kernels too.
    """
    return sorted(n for n in torch._C._dispatch_get_all_op_names()
                  if n.startswith("derain::") and not n.split("::", 1)[1].startswith("_emulate_"))


def cpu_kernel_ops() -> list[str]:
    """Names of the `derain::` ops that have a C++ CPU kernel."""
    if not HAS_CPP:
        return []
    return [n.split("::", 1)[1] for n in _derain_ops()
            if torch._C._dispatch_has_kernel_for_dispatch_key(n, "CPU")]


def cuda_kernel_source(name: str) -> str:
    """Where the CUDA kernel of `derain::<name>` comes from.

    "compiled": a C++/CUDA kernel of the extension (csrc/ops/cuda, registered with
    TORCH_LIBRARY_IMPL); "Triton JIT": a Triton launcher registered from Python
    (derain_kernels/ops/_common.py); "none": no CUDA kernel.
    """
    qualified = f"derain::{name}"
    if not HAS_CPP or not torch._C._dispatch_has_kernel_for_dispatch_key(qualified, "CUDA"):
        return "none"
    for line in torch._C._dispatch_dump(qualified).splitlines():
        if line.startswith("CUDA:"):
            # kernels registered through torch.library (Python) are listed as registered
            # at torch/library.py and are boxed only
            return "Triton JIT" if ".py:" in line else "compiled"
    return "none"  # pragma: no cover - the dump always lists a registered kernel


def cuda_kernel_ops() -> list[str]:
    """Names of the `derain::` ops that have a CUDA kernel (compiled or Triton JIT)."""
    if not HAS_CPP:
        return []
    return [n.split("::", 1)[1] for n in _derain_ops()
            if torch._C._dispatch_has_kernel_for_dispatch_key(n, "CUDA")]


def _cuda_kernels_summary(per_op: dict) -> str:
    # ops without a CUDA kernel (the Triton build has none for _rain_oer_me_derain, whose public
    # entry point runs the reference on a GPU) do not change what the others run
    kinds = set(per_op.values()) - {"none"}
    if not kinds:
        return "none"
    return kinds.pop() if len(kinds) == 1 else "mixed"


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


def _kernel_config() -> dict:
    from ._config import config

    return config.as_dict()


def backend_info() -> dict:
    """Which kernels are active: C++ CPU kernels, CUDA kernels, build flags, versions.

    "cuda_kernels" is "compiled" (CUDA C++ kernels of the extension, registered from C++),
    "Triton JIT" (Triton kernels launched from Python: the extension was built without
    CUDA), "none" (no CUDA kernels: neither), or "mixed"; "cuda_kernel_per_op" gives it
    per public op.
    """
    cuda_per_op = {name: cuda_kernel_source(name) for name in cpu_kernel_ops()}
    info = {
        "cpp_extension": HAS_CPP,
        "cpu_kernels": "C++" if HAS_CPP else "reference (pure PyTorch)",
        "cpu_ops": cpu_kernel_ops(),
        "triton": TRITON_VERSION,
        "triton_interpret": TRITON_INTERPRET,
        "cuda_available": torch.cuda.is_available(),
        "cuda_kernels": _cuda_kernels_summary(cuda_per_op),
        "cuda_ops": cuda_kernel_ops(),
        "cuda_kernel_per_op": cuda_per_op,
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "config": _kernel_config(),
    }
    if HAS_CPP:
        info["build"] = _C.build_info()
    else:
        info["cpp_error"] = _CPP_ERROR
    return info
