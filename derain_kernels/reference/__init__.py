"""Pure-PyTorch reference implementations of every op: the oracle for the tests.

Each function has the public op's signature and semantics, gradients included
(through PyTorch autograd). They are exact but not fast.
"""
from .composite import min_composite, rain_composite  # noqa: F401
from .median import median_filter  # noqa: F401
from .ssim import ssim, ssim_loss  # noqa: F401
