"""Test configuration.

Triton's interpreter must be chosen before triton is imported: without a GPU
(every machine this project runs CI on) the Triton kernels run interpreted on
CPU tensors. Set DERAIN_TEST_CUDA=1 on a GPU machine to run them compiled.
"""
import os

if os.environ.get("DERAIN_TEST_CUDA", "0") != "1":
    os.environ.setdefault("TRITON_INTERPRET", "1")

from pathlib import Path  # noqa: E402

import pytest  # noqa: E402
import torch  # noqa: E402

# $DERAIN_SHARED overrides (e.g. a git worktree whose parent folder has no shared/).
SHARED = Path(os.environ.get("DERAIN_SHARED") or Path(__file__).resolve().parents[1].parent / "shared")


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


@pytest.fixture(autouse=True)
def _kernel_config():
    """Tests may switch derain_kernels.config; every test starts from, and leaves, the same settings."""
    import derain_kernels as dk

    before = dk.config.as_dict()
    yield
    for name, value in before.items():
        setattr(dk.config, name, value)


@pytest.fixture
def shared_dir():
    """../shared next to the checkout; tests that need it skip with a reason when absent."""
    if not SHARED.is_dir():
        pytest.skip(f"shared data folder not found at {SHARED}")
    return SHARED


