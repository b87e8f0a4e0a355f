"""The examples run (small sizes) and their drop-in checks against the papers' formulations pass."""
import importlib.util
import math
from pathlib import Path

import pytest

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


def _load(name):
    spec = importlib.util.spec_from_file_location(name, EXAMPLES / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.mark.parametrize("name", ["ssid_kd_student_loss", "udrdr_distillation_loss"])
def test_example_runs(name):
    loss = _load(name).main(size=32, batch=2, steps=2)
    assert math.isfinite(loss) and loss > 0
