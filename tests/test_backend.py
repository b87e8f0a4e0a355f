"""The C++ extension must be built and active (CI fails otherwise)."""
import subprocess
import sys

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
