"""Benchmarks behind `derain bench`: one harness, one module of cases per op family.

Each module in SUITES defines `cases(quick: bool) -> list[Case]`; a Case times
our op and its peers with the same harness (derain.bench.harness).
"""
SUITES = ["composite", "median", "ssim", "related", "block"]

#: The peers `derain bench` compares against: import name -> pip package (the `bench` extra of
#: setup.py installs them all; none is a runtime dependency).
PEERS = {"kornia": "kornia", "pytorch_msssim": "pytorch-msssim", "torchmetrics": "torchmetrics",
         "cv2": "opencv-python-headless", "scipy": "scipy"}


def peers_install_command(modules) -> str:
    """The pip command that installs the peers imported as `modules`."""
    return "pip install " + " ".join(PEERS.get(m, m) for m in modules)
