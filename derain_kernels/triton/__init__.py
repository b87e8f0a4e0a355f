"""Triton kernels: the CUDA implementations of the ops, one module per op.

Each module exposes launchers that take tensors on one device and return the
op's result; they are registered as the CUDA kernels of `torch.ops.derain.*`
(see derain_kernels/ops). Without a GPU they run under Triton's interpreter
(`TRITON_INTERPRET=1`, set before triton is imported) on CPU tensors, which
is how CI tests them.
"""
