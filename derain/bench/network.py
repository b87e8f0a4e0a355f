"""TIP Table IV reproduced: RainOerMeNet inference on 512×512 images, mean over N images.

Contenders, on CPU (and CUDA when torch sees one): (a) our fused path `model.fused()`
(when this build has it), (b) the same network in eager PyTorch (`eager_network`: every
block plain PyTorch, whatever the model uses), default contiguous layout and channels-last, (c) `torch.compile` of the eager network (its compilation
time is the contender's setup time; a failure is reported, not raised).
Weights are random N(0, 0.02) (the authors' initialisation): timing does not depend
on their values. Inputs: N pre-generated random images, one per call.
"""
from __future__ import annotations

import copy
import itertools

import torch
from torch import nn

from derain.models import RainOerMeNet

from .harness import Case, Contender

IMAGE_SHAPE = (1, 3, 512, 512)
QUOTED_SOURCE = "quoted from TIP Table IV (i7-8700K / GTX 1080 Ti), not measured here"
# (method, parameters, CPU seconds, GPU seconds) — docs/method.md#runtime-table.
QUOTED = [
    ("Rain O'er Me (paper)", 51_552, 1.45, 0.13),
    ("DDN", 58_175, 1.56, 0.13),
    ("DID-MDN", 135_800, 5.73, 0.20),
    ("RESCAN", 54_735, 4.62, 0.18),
    ("UMRL", 984_356, 15.50, 0.30),
    ("JORDER-E", 4_169_024, 55.21, 0.38),
    ("PReNet", 168_963, 24.66, 0.25),
    ("SPANet", 283_716, 8.53, 0.19),
    ("SS-IRR", 57_369, 1.92, 0.15),
    ("JCAS (non-deep)", None, 187.89, None),
]
PAPER_PARAMETERS = 51_552
PAPER_SECONDS = {"cpu": 1.45, "cuda": 0.13}
OP = "RainOerMeNet G"
MODE = "inference"


class EagerSelfCorrectingBlock(nn.Module):
    """The authors' block in plain PyTorch: la = ReLU(conv1(x)); ReLU(dilated_conv(x − la) + la).

    Same parameter names as the model's block (`conv1.0.*`, `dilated_conv.*`).
    """

    def __init__(self, channels: int = 16, dilation: int = 3):
        super().__init__()
        self.conv1 = nn.Sequential(nn.Conv2d(channels, channels, 3, padding=1), nn.ReLU())
        self.dilated_conv = nn.Conv2d(channels, channels, 3, padding=dilation, dilation=dilation)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        la = self.conv1(x)
        return torch.relu(self.dilated_conv(x - la) + la)


def eager_network(model: RainOerMeNet) -> RainOerMeNet:
    """A copy of `model` (same weights, mode and device) whose every self-correcting block and
    convolution + ReLU layer and output layer is plain PyTorch: the network as users run it without
    derain_kernels (the model uses fused blocks, derain_kernels.conv3x3_relu and conv3x3)."""
    eager = copy.deepcopy(model)
    eager.fused_layers = False  # and every convolution (+ ReLU / tanh) layer as torch.cat, nn.Conv2d, ReLU, tanh
    for m in eager.modules():
        if hasattr(m, "fused_op"):
            m.fused_op = False
    dilation = model.config["dilation"]
    for parent in list(eager.modules()):
        for name, child in list(parent.named_children()):
            if hasattr(child, "conv1") and hasattr(child, "dilated_conv"):
                c = child.dilated_conv.weight.shape[0]
                block = EagerSelfCorrectingBlock(c, dilation).to(child.dilated_conv.weight.device)
                block.load_state_dict(child.state_dict())
                block.train(child.training)
                setattr(parent, name, block)
    return eager


def parameter_counts(model: RainOerMeNet | None = None) -> dict:
    """Parameters of G (what Table IV counts: conv weights) and of g (training only)."""
    model = model or RainOerMeNet()
    g_net = [p for n, p in model.named_parameters() if not n.startswith("out2.")]
    g_detail = [p for n, p in model.named_parameters() if n.startswith("out2.")]
    return {
        "G_weights": sum(p.numel() for p in g_net if p.dim() == 4),
        "G_with_biases": sum(p.numel() for p in g_net),
        "g_weights": sum(p.numel() for p in g_detail if p.dim() == 4),
        "g_with_biases": sum(p.numel() for p in g_detail),
        "paper_G": PAPER_PARAMETERS,
    }


def image_count(quick: bool = False, smoke: bool = False, images: int | None = None) -> int:
    if images is not None:
        return images
    return 2 if smoke else 10 if quick else 100


def _cycling(run, images):
    it = itertools.cycle(images)

    def call():
        with torch.inference_mode():
            return run(next(it))
    return call


def has_fused() -> bool:
    return hasattr(RainOerMeNet, "fused")


def cases(quick: bool = False, smoke: bool = False, images: int | None = None, compile: bool = True,
          devices: list[str] | None = None) -> list[Case]:
    """One Case per device; each contender's call derains the next of the N images."""
    n = image_count(quick, smoke, images)
    shape = (1, 3, 64, 64) if smoke else IMAGE_SHAPE
    if devices is None:
        devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    return [_case(device, shape, n, compile and not smoke, smoke) for device in devices]


def _case(device: str, shape, n: int, compile: bool, smoke: bool) -> Case:
    gen = torch.Generator().manual_seed(0)
    images = [torch.rand(shape, generator=gen).to(device) for _ in range(n)]
    torch.manual_seed(0)
    model = RainOerMeNet().eval().to(device)
    cl = torch.channels_last

    def eager():
        return _cycling(eager_network(model), images)

    def eager_cl():
        m = eager_network(model).to(memory_format=cl)
        return _cycling(lambda x: m(x.contiguous(memory_format=cl)), images)

    def fused():
        return _cycling(model.fused(), images)

    def compiled():
        cm = torch.compile(eager_network(model))
        call = _cycling(cm, images)
        call()  # compiles: counted as setup time, not as inference time
        return call

    s = "x".join(map(str, shape))
    case = Case(OP, MODE, s, missing=[])
    if has_fused():
        case.contenders.append(Contender("fused (derain_kernels)", fused, ours=True, device=device,
                                         note="" if device == "cpu" else
                                         "no fused GPU kernel: runs the eager reference (cuDNN)"))
    else:
        case.missing.append("fused path: not available (RainOerMeNet.fused() is not in this build)")
    case.contenders += [
        Contender("eager contiguous", eager, device=device),
        Contender("eager channels-last", eager_cl, device=device),
    ]
    if compile:
        case.contenders.append(Contender("torch.compile (eager contiguous)", compiled, device=device,
                                         note="compile time = setup"))
    else:
        case.missing.append("torch.compile: not run (" + ("--smoke" if smoke else "--no-compile") + ")")
    return case
