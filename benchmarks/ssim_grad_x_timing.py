"""Single-thread CPU time (time.process_time) of ssim_loss fwd+bwd: grad of pred only vs both inputs, vs pytorch_msssim.

Run from the repo root: python benchmarks/ssim_grad_x_timing.py [repeats]. Medians of repeats, median of 3 rounds, ms.
"""
import time, sys, torch
torch.set_num_threads(1)
import derain_kernels as dk, pytorch_msssim

def cpu_time(f, reps):
    best = []
    for _ in range(reps):
        t = time.process_time(); f(); best.append(time.process_time() - t)
    best.sort(); return best[len(best)//2] * 1e3  # median ms
R = int(sys.argv[1]) if len(sys.argv) > 1 else 5
for shape in [(8, 3, 128, 128), (1, 3, 512, 512)]:
    torch.manual_seed(0)
    x = torch.rand(shape); y = (x + 0.1 * torch.randn(shape)).clamp(0, 1)
    def peer():
        a = x.clone().requires_grad_()
        (1 - pytorch_msssim.ssim(a, y, data_range=1.0, size_average=True)).backward()
    def ours_x():  # training: pred requires grad, target doesn't
        a = x.clone().requires_grad_()
        dk.ssim_loss(a, y).backward()
    def ours_both():  # old path: both gradients
        a = x.clone().requires_grad_(); b = y.clone().requires_grad_()
        dk.ssim_loss(a, b).backward()
    def fwd():
        dk.ssim_loss(x, y)
    for f in (peer, ours_x, ours_both, fwd): f()
    res = {}
    for rnd in range(3):
        for name, f in (("peer", peer), ("ours_x", ours_x), ("ours_both", ours_both), ("fwd", fwd)):
            res.setdefault(name, []).append(cpu_time(f, R))
    med = {k: sorted(v)[1] for k, v in res.items()}
    print(shape, {k: round(v, 2) for k, v in med.items()},
          "ratio peer/ours_x=%.2f peer/ours_both=%.2f" % (med["peer"] / med["ours_x"], med["peer"] / med["ours_both"]))
