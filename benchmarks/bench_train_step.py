"""One distillation training step (batch 8, 128×128): our ops vs the peers' ops, same model.

The contenders are those of `derain bench` (derain/bench/train_step.py); one group.
"""
import pytest
import torch

from derain.bench import train_step

(CASE,) = train_step.cases(devices=["cpu"])


@pytest.mark.parametrize("contender", CASE.contenders, ids=[c.name for c in CASE.contenders])
def test_train_step(benchmark, contender):
    benchmark.group = f"{CASE.op} {CASE.shape}"
    step = contender.make()
    loss = benchmark(step)
    assert torch.isfinite(loss)

