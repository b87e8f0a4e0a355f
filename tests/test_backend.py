"""The C++ extension must be built and active (CI fails otherwise)."""
import subprocess
import sys

import pytest
import torch

import derain_kernels as dk


def test_cpp_extension_is_active():
    info = dk.backend_info()
    assert info["cpp_extension"] is True, info.get("cpp_error")
    assert info["cpu_kernels"] == "C++"
    for op in ("min_composite", "rain_composite"):
        assert op in info["cpu_ops"]
        assert torch._C._dispatch_has_kernel_for_dispatch_key(f"derain::{op}", "CPU")


def test_cuda_kernels_are_registered_when_triton_is_installed():
    info = dk.backend_info()
    per_op = info["cuda_kernel_per_op"]
    assert set(per_op) == set(info["cpu_ops"])
    if all(src == "compiled" for src in per_op.values()):
        # the extension was built with its CUDA kernels (tests/test_cuda_build.py checks them)
        assert info["cuda_kernels"] == "compiled"
        assert info["cuda_ops"] == info["cpu_ops"]
    elif info["triton"] is None:
        assert info["cuda_ops"] == []
        assert info["cuda_kernels"] == "none"
        assert set(per_op.values()) == {"none"}
    else:
        assert "min_composite" in info["cuda_ops"]
        assert info["cuda_kernels"] == "Triton JIT"
        assert per_op["min_composite"] == "Triton JIT"
        assert set(per_op.values()) <= {"Triton JIT", "none"}


def test_test_only_ops_are_not_listed():
    info = dk.backend_info()
    assert not any(name.startswith("_emulate_") for name in info["cpu_ops"] + info["cuda_ops"])
    assert "_ssim_backward" in info["cpu_ops"]  # internal ops run kernels and are listed


def test_backend_info_from_the_command_line():
    out = subprocess.run([sys.executable, "-c", "import derain_kernels as dk; print(dk.backend_info())"],
                         capture_output=True, text=True, check=True)
    assert "'cpp_extension': True" in out.stdout


# Ops whose autograd kernel is a C++ torch::autograd::Function (csrc/ops/autograd): a call does not
# enter Python, with or without grad (docs/design/call-cost.md). SSIM's stays in Python (its
# backward scales the saved gradient maps in place).
CPP_AUTOGRAD_OPS = ["min_composite", "rain_composite", "median_filter", "_dark_channel", "_tv_sums",
                    "_rain_direction_sums", "self_correcting_block", "_self_correcting_block_train",
                    "conv3x3_relu", "conv3x3"]


@pytest.mark.skipif(not dk.backend_info()["cpp_extension"], reason="needs the C++ extension")
@pytest.mark.parametrize("op", CPP_AUTOGRAD_OPS)
def test_autograd_kernel_is_registered_from_cpp(op):
    dump = torch._C._dispatch_dump(f"derain::{op}")
    line = next(ln for ln in dump.splitlines() if ln.startswith("Autograd"))
    assert "csrc/ops/autograd/" in line and "unboxed" in line, line
