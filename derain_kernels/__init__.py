"""derain-kernels: fused, exact, differentiable kernels for single-image rain removal.

Every op is a `torch.ops.derain.*` operator with a C++ CPU kernel and a CUDA kernel
(compiled CUDA C++, or Triton / ATen ops without nvcc), registered autograd and
fake-tensor rules (so it composes with autograd and torch.compile(fullgraph=True)),
and a pure-PyTorch reference in
`derain_kernels.reference`. See README.md for the API and conventions.
"""
from ._backend import backend_info, empty_output_cache  # noqa: F401  (loads the C++ extension)
from ._config import config  # noqa: F401  (kernel settings; reads the DERAIN_* environment once)
from .ops.composite import min_composite, rain_composite  # noqa: F401
from .ops.median import median_filter, soft_label  # noqa: F401
from .ops.ssim import SSIMLoss, ssim, ssim_loss  # noqa: F401
from .ops.related import dark_channel, dark_channel_loss, directional_kernels, rain_direction_loss, tv_loss  # noqa: F401
from .ops.block import self_correcting_block  # noqa: F401
from .ops.conv_relu import conv3x3_relu  # noqa: F401
from .ops.conv3x3 import conv3x3  # noqa: F401
from . import nn  # noqa: F401  (derain_kernels.nn.SelfCorrectingBlock, FusedRainOerMe)

__version__ = "0.1.0"

__all__ = [
    "backend_info",
    "empty_output_cache",
    "config",
    "median_filter",
    "dark_channel",
    "dark_channel_loss",
    "directional_kernels",
    "rain_direction_loss",
    "tv_loss",
    "min_composite",
    "rain_composite",
    "soft_label",
    "ssim",
    "ssim_loss",
    "SSIMLoss",
    "self_correcting_block",
    "conv3x3_relu",
    "conv3x3",
    "nn",
]
