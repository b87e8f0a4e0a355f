"""derain_kernels.config: one typed seam for the kernel choices, the environment read once."""
import os
import subprocess
import sys

import pytest

import derain_kernels as dk
from derain_kernels import _backend

SETTINGS = {"conv_winograd": True, "conv_pairs": True, "wgrad_winograd": True, "wgrad_pairs": True,
            "fused_epilogues": True, "median_tracking": True, "gpu_tiles": True, "output_cache_mb": 64}


# tests/conftest.py restores the settings after every test.


def test_settings_and_defaults():
    dk.config.reset()
    assert dk.config.as_dict() == SETTINGS
    assert "conv_winograd=True" in repr(dk.config)


def test_set_reaches_the_kernels_side():
    dk.config.conv_pairs = False
    dk.config.output_cache_mb = 3
    assert dk.config.conv_pairs is False and dk.config.output_cache_mb == 3
    if _backend.HAS_CPP:
        seen = _backend._C.get_config()
        assert seen["conv_pairs"] is False and seen["output_cache_mb"] == 3
    assert dk.backend_info()["config"]["conv_pairs"] is False


def test_override_restores_also_on_error():
    dk.config.reset()
    with dk.config.override(wgrad_winograd=False, output_cache_mb=0):
        assert dk.config.wgrad_winograd is False and dk.config.output_cache_mb == 0
    assert dk.config.wgrad_winograd is True and dk.config.output_cache_mb == 64
    with pytest.raises(RuntimeError):
        with dk.config.override(median_tracking=False):
            raise RuntimeError("inside")
    assert dk.config.median_tracking is True


@pytest.mark.parametrize("name,value,exc", [
    ("conv_winograd", 0, TypeError), ("conv_winograd", "no", TypeError),
    ("output_cache_mb", 1.5, TypeError), ("output_cache_mb", True, TypeError),
    ("output_cache_mb", -1, ValueError), ("output_cache_mb", 2**41, ValueError),
    ("winograd", True, AttributeError),
])
def test_bad_settings_name_the_setting(name, value, exc):
    before = dk.config.as_dict()
    with pytest.raises(exc, match="winograd|output_cache_mb"):
        setattr(dk.config, name, value)
    with pytest.raises(exc):
        with dk.config.override(**{name: value}):
            pass
    assert dk.config.as_dict() == before  # a refused value changes nothing


def _config_in_subprocess(env_vars):
    env = {k: v for k, v in os.environ.items() if not k.startswith("DERAIN_") or k == "DERAIN_SHARED"}
    env.update(env_vars)
    code = "import warnings, derain_kernels as dk; print(sorted(dk.config.as_dict().items()))"
    return subprocess.run([sys.executable, "-W", "always", "-c", code], env=env, capture_output=True, text=True,
                          timeout=120, cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def test_environment_is_read_once_at_import_with_one_polarity():
    r = _config_in_subprocess({"DERAIN_CONV_WINOGRAD": "0", "DERAIN_WGRAD_PAIRS": "0",
                               "DERAIN_OUTPUT_CACHE_MB": "5", "DERAIN_MEDIAN_TRACKING": "1"})
    assert r.returncode == 0, r.stderr
    assert "('conv_winograd', False)" in r.stdout and "('wgrad_pairs', False)" in r.stdout
    assert "('output_cache_mb', 5)" in r.stdout and "('median_tracking', True)" in r.stdout
    assert "('conv_pairs', True)" in r.stdout
    assert "Warning" not in r.stderr


def test_bad_and_retired_environment_variables_are_named():
    r = _config_in_subprocess({"DERAIN_CONV_PAIRS": "yes", "DERAIN_WGRAD_DIRECT": "1",
                               "DERAIN_OUTPUT_CACHE_MB": "lots"})
    assert r.returncode == 0, r.stderr
    assert "DERAIN_CONV_PAIRS='yes' ignored" in r.stderr
    assert "DERAIN_OUTPUT_CACHE_MB='lots' ignored" in r.stderr
    assert "DERAIN_WGRAD_DIRECT is no longer read: use DERAIN_WGRAD_WINOGRAD=0" in r.stderr
    assert "('conv_pairs', True)" in r.stdout and "('output_cache_mb', 64)" in r.stdout
