"""Ops of the related methods (SSID-KD, UDRDR), gathered for `derain_kernels.__init__`."""
from .dark_channel import dark_channel, dark_channel_loss  # noqa: F401
from .rain_direction import directional_kernels, rain_direction_loss  # noqa: F401
from .tv import tv_loss  # noqa: F401
