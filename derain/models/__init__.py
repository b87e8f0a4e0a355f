"""Models of the method: RainOerMeNet (G and the detail-enhancement block g)."""
from .rain_oer_me import RainOerMeNet, fused_params  # noqa: F401
