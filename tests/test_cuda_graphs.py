"""torch.compile of a training step with our ops (the path CUDA graphs take on a GPU), on the CPU.

The ops are custom ops with fake registrations and registered autograd, so Dynamo captures a
training step that uses them as one graph (fullgraph=True: a graph break is an error) and
AOTAutograd traces its backward; on a GPU the same graph runs under CUDA graphs
(tests/test_cuda.py::test_cuda_training_step_under_cuda_graphs, mode="reduce-overhead").
"""
import pytest
import torch

import derain_kernels as dk

if not dk.backend_info()["cpp_extension"]:
    pytest.skip("the C++ extension is not built", allow_module_level=True)


def test_training_step_compiles_without_graph_breaks():
    torch._dynamo.reset()
    block = dk.nn.SelfCorrectingBlock(4, 3)
    head = torch.nn.Conv2d(3, 4, 3, padding=1)
    tail = torch.nn.Conv2d(4, 3, 3, padding=1)
    params = [*block.parameters(), *head.parameters(), *tail.parameters()]

    def loss_fn(x, y):
        r = tail(block(head(x)))
        d = x - r
        return (dk.ssim_loss(d, y) + 0.1 * dk.tv_loss(r) + dk.dark_channel_loss(d, 5)
                + (dk.min_composite(dk.rain_composite(d, r), dk.median_filter(x, 3)) - y).abs().mean())

    compiled = torch.compile(loss_fn, backend="aot_eager", fullgraph=True)
    x, y = torch.rand(2, 3, 12, 14), torch.rand(2, 3, 12, 14)
    want = loss_fn(x, y)
    want_g = torch.autograd.grad(want, params)
    got = compiled(x, y)
    got_g = torch.autograd.grad(got, params)
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6)
    for a, b in zip(got_g, want_g):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6)


def test_ops_are_not_tagged_cudagraph_unsafe():
    # no host syncs or host-to-device copies in the kernels: CUDA graphs may capture them
    unsafe = getattr(torch.Tag, "cudagraph_unsafe", None)
    if unsafe is None:
        pytest.skip("this torch has no cudagraph_unsafe tag")
    for name in dk.backend_info()["cpu_ops"]:
        op = getattr(torch.ops.derain, name).default
        assert unsafe not in op.tags, name
