"""Fused self-correcting block (forward, forward+backward) and fused network inference vs eager PyTorch."""
import pytest
import torch

from derain.bench import block as bb

BLOCK_SIZES = {"train-8x16x128": (8, 16, 128, 128), "infer-1x16x512": (1, 16, 512, 512)}


@pytest.mark.parametrize("size", BLOCK_SIZES)
@pytest.mark.parametrize("mode", ["forward", "forward+backward"])
@pytest.mark.parametrize("impl", ["derain_kernels", "eager contiguous", "eager channels-last"])
def test_block(benchmark, size, mode, impl):
    benchmark.group = f"self_correcting_block {mode} {size}"
    contenders = {c.name: c for c in bb.block_contenders(BLOCK_SIZES[size], mode != "forward")}
    benchmark(contenders[impl].make())


@pytest.mark.parametrize("impl", ["derain_kernels fused", "eager contiguous", "eager channels-last"])
def test_network_inference(benchmark, impl):
    benchmark.group = "rain_oer_me inference 1x3x512x512"
    contenders = {c.name: c for c in bb.network_contenders(with_compile=False)}
    out = benchmark(contenders[impl].make())
    assert out.shape == torch.Size(bb.NET_SHAPE)
