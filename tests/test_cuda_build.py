"""The extension built with its CUDA kernels (CI's second build, in a CUDA build of torch; no GPU needed).

Runs with DERAIN_TEST_CUDA_BUILD=1 under a torch with CUDA (torch.version.cuda set): every public
op must have a CUDA kernel registered from C++ (TORCH_LIBRARY_IMPL in csrc/ops/cuda), not a
Triton launcher registered from Python, and backend_info() must say "compiled".
"""
import os
import subprocess
import sys

import pytest
import torch

import derain_kernels as dk

pytestmark = pytest.mark.skipif(
    not (os.environ.get("DERAIN_TEST_CUDA_BUILD", "0") == "1" and torch.version.cuda),
    reason="CUDA build check: set DERAIN_TEST_CUDA_BUILD=1 under a CUDA build of torch with the extension "
           "built with FORCE_CUDA=1")

# Every op with a C++ CPU kernel (the schemas of csrc/ops/*.cpp; internal ones with a leading underscore).
KERNEL_OPS = sorted([
    "min_composite", "_min_composite_backward", "rain_composite", "_rain_composite_backward",
    "median_filter", "_median_filter_backward", "_median_filter_with_index",
    "_dark_channel", "_dark_channel_backward", "_tv_sums", "_tv_sums_backward",
    "_rain_direction_sums", "_rain_direction_sums_backward",
    "ssim", "_ssim_backward", "_ssim_backward_x", "_ssim_with_grad",
    "self_correcting_block", "_self_correcting_block_backward", "_self_correcting_block_train",
    "_self_correcting_block_backward_la", "_rain_oer_me_derain", "conv3x3_relu", "_conv3x3_relu_backward",
    "conv3x3", "_conv3x3_backward",
])


def test_every_public_op_has_a_compiled_cuda_kernel():
    info = dk.backend_info()
    assert info["cpp_extension"] is True, info.get("cpp_error")
    assert info["cpu_ops"] == KERNEL_OPS
    assert info["cuda_ops"] == KERNEL_OPS
    assert info["cuda_kernel_per_op"] == {op: "compiled" for op in KERNEL_OPS}
    assert info["cuda_kernels"] == "compiled"


@pytest.mark.parametrize("op", KERNEL_OPS)
def test_cuda_kernel_is_registered_from_cpp(op):
    dump = torch._C._dispatch_dump(f"derain::{op}")
    line = next(ln for ln in dump.splitlines() if ln.startswith("CUDA:"))
    assert "csrc/ops/cuda/" in line and ".cu:" in line, line  # TORCH_LIBRARY_IMPL in a .cu file
    assert "unboxed" in line, line  # a C++ function, not a Python callable


def test_no_triton_launcher_is_registered_over_the_compiled_kernels():
    # importing the ops (done by `import derain_kernels`) must not have replaced a compiled kernel
    out = subprocess.run(
        [sys.executable, "-c",
         "import derain_kernels as dk; print(dk.backend_info()['cuda_kernels'])"],
        capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "compiled"
