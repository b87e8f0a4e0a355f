"""References of the related methods' ops (SSID-KD, UDRDR), gathered for `reference.__init__`."""
from .dark_channel import dark_channel, dark_channel_loss  # noqa: F401
from .rain_direction import rain_direction_loss  # noqa: F401
from .tv import tv_loss  # noqa: F401
