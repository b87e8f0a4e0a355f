"""Pure-PyTorch reference implementations of every op: the oracle for the tests.

Each function has the public op's signature and semantics, gradients included
(through PyTorch autograd). They are exact but not fast.
"""
from .composite import min_composite, rain_composite  # noqa: F401
from .median import median_filter  # noqa: F401
from .ssim import ssim, ssim_loss  # noqa: F401
from .related import dark_channel, dark_channel_loss, rain_direction_loss, tv_loss  # noqa: F401
from .block import rain_oer_me_derain, self_correcting_block  # noqa: F401
from .conv_relu import conv3x3_relu  # noqa: F401
from .conv3x3 import conv3x3  # noqa: F401
