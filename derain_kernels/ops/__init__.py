"""Public ops, one module per op family: argument checks, dispatch to
torch.ops.derain.* (C++ on CPU, Triton on CUDA), autograd and fake-tensor rules."""
