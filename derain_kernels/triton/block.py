"""Triton kernels of the self-correcting dilated block (forward and backward).

Forward, two fused kernels: (1) conv3x3 + bias + ReLU -> la, and e = x - la in
the same pass; (2) dilated conv3x3 of e + bias + la, ReLU. Backward: (1) again
to recompute la and e; (2) ge = adjoint dilated conv of gq = grad * [out > 0]
(the mask applied on load) with gp = (gq - ge) * [la > 0] in the same pass;
(3) gx = ge + adjoint conv of gp; (4) the weight and bias gradients of both
convolutions, one program per (image chunk of WG_STEPS * BLOCK pixels, tap),
reduced over the chunks by torch.

Every tensor is addressed through its own strides (contiguous, channels-last,
strided views, the stride-0 gradient of `.sum()`): no layout copies; the
outputs and intermediates take x's layout (empty_like_layout). A convolution
program computes BLOCK pixels x all channels (padded to a power of two, at
least 16): in float32 each tap is one `tl.dot` of the shifted input tile
[BLOCK, C] with the tap's weights [C, C] (3xTF32 tensor-core products,
float32-level error; exact float32 products for tiles with an infinity: see
CONV_PRECISION); the weight gradient of a tap accumulates tl.dot(input
tile^T, gradient tile) over its chunk (exact float32 products). float64 uses per-channel
outer products (no float64 dot needed). Semantics: derain_kernels.reference.block.
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl

from .._layout import empty_like_layout

# Launch parameters, tuned on an H200 (benchmarks/results/gpu.md, GPU time of CUDA-graph replays,
# 8x16x128^2 and 1x16x512^2): the forward's two convolutions 49 / 98 us with these against 133 / 263 us
# with BLOCK 128, 4 warps and exact float32 dots, one weight gradient 64 / 120 us against 96 / 174 us.
BLOCK = 64      # pixels per convolution program and per weight-gradient step
WG_STEPS = 8    # BLOCK-pixel steps per weight-gradient program (fewer partial sums to reduce)
CONV_WARPS = 2  # num_warps of the convolution programs
WG_WARPS = 2    # and of the weight-gradient programs
# float32 tl.dot precision. Convolutions: "tf32x3" (three TF32 tensor-core products, a + b split
# in high and low TF32 parts: float32-level error, measured max |error| / max |output| 2e-7 against
# float64 on 8x16x128^2, as low as exact float32 products); a tile with an infinite input or weight
# takes exact float32 products instead (the split would turn the infinity into NaN). Weight
# gradients: "ieee" (exact float32 products; 3xTF32 measured slower there).
CONV_PRECISION = "tf32x3"
WG_PRECISION = "ieee"

# epilogues of _conv3x3
RELU_SPLIT, ADD_RELU, BACKWARD_E, ADD = 0, 1, 2, 3


@triton.jit
def _tile(ptr, n, s0, s1, s2, s3, yy, xx, ok, ch, cmask):
    """[pixels, channels] tile of a 4-D tensor at (n, ch, yy, xx); zeros where not ok / past C."""
    offs = n * s0 + ch[None, :] * s1 + (yy * s2 + xx * s3)[:, None]
    return tl.load(ptr + offs, mask=ok[:, None] & cmask[None, :], other=0.0)


@triton.jit
def _conv3x3(src, ss0, ss1, ss2, ss3, msk, ms0, ms1, ms2, ms3, w_ptr, b_ptr,
             aux, as0, as1, as2, as3, aux2, bs0, bs1, bs2, bs3,
             out, out2, os0, os1, os2, os3, H, W, C, D, nblk,
             MODE: tl.constexpr, TRANSPOSED: tl.constexpr, MASK_SRC: tl.constexpr, HAS_BIAS: tl.constexpr,
             IS_F64: tl.constexpr, CP: tl.constexpr, BLOCK: tl.constexpr, PREC: tl.constexpr):
    pid = tl.program_id(0)
    n = pid // nblk
    p = (pid % nblk) * BLOCK + tl.arange(0, BLOCK)
    pin = p < H * W
    y = p // W
    x = p % W
    ch = tl.arange(0, CP)
    cmask = ch < C
    if IS_F64:
        acc = tl.zeros([BLOCK, CP], dtype=tl.float64)
    else:
        acc = tl.zeros([BLOCK, CP], dtype=tl.float32)
    for t in tl.static_range(9):
        ky = t // 3
        kx = t % 3
        if TRANSPOSED:
            yy = y - (ky - 1) * D
            xx = x - (kx - 1) * D
        else:
            yy = y + (ky - 1) * D
            xx = x + (kx - 1) * D
        ok = pin & (yy >= 0) & (yy < H) & (xx >= 0) & (xx < W)
        if IS_F64:
            for ci in range(C):
                v = tl.load(src + n * ss0 + ci * ss1 + yy * ss2 + xx * ss3, mask=ok, other=0.0)
                if MASK_SRC:
                    m = tl.load(msk + n * ms0 + ci * ms1 + yy * ms2 + xx * ms3, mask=ok, other=0.0)
                    v = tl.where(m > 0, v, 0.0)
                if TRANSPOSED:  # input channel ci of the adjoint is output channel ci of the conv
                    wv = tl.load(w_ptr + ci * C * 9 + ch * 9 + t, mask=cmask, other=0.0)
                else:
                    wv = tl.load(w_ptr + ch * C * 9 + ci * 9 + t, mask=cmask, other=0.0)
                acc += v[:, None] * wv[None, :]
        else:
            v = _tile(src, n, ss0, ss1, ss2, ss3, yy, xx, ok, ch, cmask)
            if MASK_SRC:
                m = _tile(msk, n, ms0, ms1, ms2, ms3, yy, xx, ok, ch, cmask)
                v = tl.where(m > 0, v, 0.0)
            wm = cmask[:, None] & cmask[None, :]
            if TRANSPOSED:  # wt[ci, co] = w[ci, co, t]
                wt = tl.load(w_ptr + ch[:, None] * C * 9 + ch[None, :] * 9 + t, mask=wm, other=0.0)
            else:  # wt[ci, co] = w[co, ci, t]
                wt = tl.load(w_ptr + ch[None, :] * C * 9 + ch[:, None] * 9 + t, mask=wm, other=0.0)
            if PREC == "tf32x3":
                inf = tl.max(tl.where(tl.abs(v) == float("inf"), 1, 0)) + \
                    tl.max(tl.where(tl.abs(wt) == float("inf"), 1, 0))
                if inf > 0:  # 3xTF32 splits x = hi + lo, lo = inf - inf = NaN: exact products here
                    acc = tl.dot(v, wt, acc, input_precision="ieee")
                else:
                    acc = tl.dot(v, wt, acc, input_precision="tf32x3")
            else:
                acc = tl.dot(v, wt, acc, input_precision=PREC)
    if HAS_BIAS:
        acc += tl.load(b_ptr + ch, mask=cmask, other=0.0)[None, :]
    om = pin[:, None] & cmask[None, :]
    offs = n * os0 + ch[None, :] * os1 + (y * os2 + x * os3)[:, None]
    if MODE == 0:  # la = relu(acc) -> out; e = aux - la -> out2
        la = tl.where(acc < 0, 0.0, acc)
        xv = _tile(aux, n, as0, as1, as2, as3, y, x, pin, ch, cmask)
        tl.store(out + offs, la, mask=om)
        tl.store(out2 + offs, xv - la, mask=om)
    elif MODE == 1:  # relu(acc + aux)
        s = acc + _tile(aux, n, as0, as1, as2, as3, y, x, pin, ch, cmask)
        tl.store(out + offs, tl.where(s < 0, 0.0, s), mask=om)
    elif MODE == 2:  # ge = acc -> out; gp = (gq - ge) * [aux2 > 0] -> out2, gq = src * [msk > 0]
        gq = _tile(src, n, ss0, ss1, ss2, ss3, y, x, pin, ch, cmask)
        gm = _tile(msk, n, ms0, ms1, ms2, ms3, y, x, pin, ch, cmask)
        gq = tl.where(gm > 0, gq, 0.0)
        la = _tile(aux2, n, bs0, bs1, bs2, bs3, y, x, pin, ch, cmask)
        tl.store(out + offs, acc, mask=om)
        tl.store(out2 + offs, tl.where(la > 0, gq - acc, 0.0), mask=om)
    else:  # acc + aux
        tl.store(out + offs, acc + _tile(aux, n, as0, as1, as2, as3, y, x, pin, ch, cmask), mask=om)


@triton.jit
def _weight_grad(inp, is0, is1, is2, is3, g, gs0, gs1, gs2, gs3, msk, ms0, ms1, ms2, ms3, part_w, part_b,
                 H, W, C, D, nchunk, MASK_G: tl.constexpr, IS_F64: tl.constexpr, CP: tl.constexpr,
                 BLOCK: tl.constexpr, STEPS: tl.constexpr, PREC: tl.constexpr):
    # program (chunk, t): part_w[chunk, t, ci, co] = sum_p inp[ci](p + offset_t) g[co](p) and
    # part_b[chunk, t, co] = sum_p g[co](p) over the chunk's pixels p (g masked by msk > 0)
    pid = tl.program_id(0)
    t = tl.program_id(1)
    n = pid // nchunk
    chunk = pid % nchunk
    dy = (t // 3 - 1) * D
    dx = (t % 3 - 1) * D
    ch = tl.arange(0, CP)
    cmask = ch < C
    if IS_F64:
        acc = tl.zeros([CP, CP], dtype=tl.float64)
        accb = tl.zeros([CP], dtype=tl.float64)
    else:
        acc = tl.zeros([CP, CP], dtype=tl.float32)
        accb = tl.zeros([CP], dtype=tl.float32)
    for s in range(STEPS):
        p = (chunk * STEPS + s) * BLOCK + tl.arange(0, BLOCK)
        pin = p < H * W
        y = p // W
        x = p % W
        gt = _tile(g, n, gs0, gs1, gs2, gs3, y, x, pin, ch, cmask)
        if MASK_G:
            gt = tl.where(_tile(msk, n, ms0, ms1, ms2, ms3, y, x, pin, ch, cmask) > 0, gt, 0.0)
        accb += tl.sum(gt, axis=0)
        yy = y + dy
        xx = x + dx
        ok = pin & (yy >= 0) & (yy < H) & (xx >= 0) & (xx < W)
        if IS_F64:
            for ci in range(C):
                v = tl.load(inp + n * is0 + ci * is1 + yy * is2 + xx * is3, mask=ok, other=0.0)
                row = tl.sum(gt * v[:, None], axis=0)
                acc += tl.where(ch[:, None] == ci, row[None, :], 0.0)
        else:
            v = _tile(inp, n, is0, is1, is2, is3, yy, xx, ok, ch, cmask)
            acc = tl.dot(tl.trans(v), gt, acc, input_precision=PREC)
    tl.store(part_w + ((pid * 9 + t) * CP + ch[:, None]) * CP + ch[None, :], acc)
    tl.store(part_b + (pid * 9 + t) * CP + ch, accb)


def _padded_channels(c: int, dtype: torch.dtype) -> int:
    cp = triton.next_power_of_2(max(c, 1))
    return cp if dtype == torch.float64 else max(16, cp)  # tl.dot needs dimensions >= 16


def _conv(src, w, b, d, mode, like, *, transposed=False, mask=None, aux=None, aux2=None, two_outputs=False):
    """One _conv3x3 launch; outputs in the layout of `like`."""
    n, c, h, wd = src.shape
    nblk = triton.cdiv(max(h * wd, 1), BLOCK)
    out = empty_like_layout(like)
    out2 = empty_like_layout(like) if two_outputs else out
    msk = mask if mask is not None else src
    aux = aux if aux is not None else src
    aux2 = aux2 if aux2 is not None else src
    _conv3x3[(n * nblk,)](src, *src.stride(), msk, *msk.stride(), w, b if b is not None else w,
                          aux, *aux.stride(), aux2, *aux2.stride(), out, out2, *out.stride(),
                          h, wd, c, d, nblk, MODE=mode, TRANSPOSED=transposed, MASK_SRC=mask is not None,
                          HAS_BIAS=b is not None, IS_F64=src.dtype == torch.float64,
                          CP=_padded_channels(c, src.dtype), BLOCK=BLOCK, PREC=CONV_PRECISION,
                          num_warps=CONV_WARPS)
    return (out, out2) if two_outputs else out


def _weight_grads(inp, g, d, mask=None):
    """(gw (C, C, 3, 3), gb (C,)) of a convolution with input inp and output gradient g (* [mask > 0])."""
    n, c, h, w = inp.shape
    cp = _padded_channels(c, inp.dtype)
    nblk = triton.cdiv(max(h * w, 1), BLOCK)
    steps = max(1, min(WG_STEPS, nblk))
    nchunk = triton.cdiv(nblk, steps)
    nprog = n * nchunk
    part_w = torch.empty(nprog, 9, cp, cp, dtype=inp.dtype, device=inp.device)
    part_b = torch.empty(nprog, 9, cp, dtype=inp.dtype, device=inp.device)
    msk = mask if mask is not None else g
    _weight_grad[(nprog, 9)](inp, *inp.stride(), g, *g.stride(), msk, *msk.stride(), part_w, part_b,
                             h, w, c, d, nchunk, MASK_G=mask is not None, IS_F64=inp.dtype == torch.float64,
                             CP=cp, BLOCK=BLOCK, STEPS=steps, PREC=WG_PRECISION, num_warps=WG_WARPS)
    gw = part_w.sum(0)[:, :c, :c].permute(2, 1, 0).reshape(c, c, 3, 3)  # [t][ci][co] -> (co, ci, ky, kx)
    return gw.contiguous(), part_b[:, 0, :c].sum(0)


def _forward(x, w1, b1, w3, b3, dilation):
    """(out, la, e), all in x's layout."""
    la, e = _conv(x, w1, b1, 1, RELU_SPLIT, x, aux=x, two_outputs=True)
    return _conv(e, w3, b3, dilation, ADD_RELU, x, aux=la), la, e


def _backward(grad, x, out, la, e, w1, w3, dilation):
    """(gx, gw1, gb1, gw3, gb3) from la and e = x - la."""
    ge, gp = _conv(grad, w3, None, dilation, BACKWARD_E, x, transposed=True, mask=out, aux2=la, two_outputs=True)
    gx = _conv(gp, w1, None, 1, ADD, x, transposed=True, aux=ge)
    gw3, gb3 = _weight_grads(e, grad, dilation, mask=out)
    gw1, gb1 = _weight_grads(x, gp, 1)
    return gx, gw1, gb1, gw3, gb3


def _params(*ts):
    return [t.contiguous() for t in ts]


def self_correcting_block(x, w1, b1, w3, b3, dilation=3):
    if x.numel() == 0:
        return empty_like_layout(x)
    return _forward(x, *_params(w1, b1, w3, b3), dilation)[0]


def self_correcting_block_backward(grad, x, out, w1, b1, w3, b3, dilation=3):
    w1c, b1c, w3c = _params(w1, b1, w3)
    if x.numel() == 0:
        return (empty_like_layout(x), torch.zeros_like(w1), torch.zeros_like(b1), torch.zeros_like(w3),
                torch.zeros_like(b3))
    la, e = _conv(x, w1c, b1c, 1, RELU_SPLIT, x, aux=x, two_outputs=True)  # recomputed
    return _backward(grad, x, out, la, e, w1c, w3c, dilation)


def self_correcting_block_train(x, w1, b1, w3, b3, dilation=3):
    """(out, la): the forward that also returns la = relu(conv3x3(x; w1, b1)) for the backward, with
    the mask of the final ReLU in la's sign bit (set where out is not > 0; -0.0 where la is 0)."""
    if x.numel() == 0:
        return empty_like_layout(x), empty_like_layout(x)
    out, la, _ = _forward(x, *_params(w1, b1, w3, b3), dilation)
    # (a separate pass on the GPU; the CPU kernel writes it from its last epilogue)
    return out, torch.where(out > 0, la.abs(), -la.abs())


def self_correcting_block_backward_la(grad, x, la, w1, w3, dilation=3):
    """Backward of self_correcting_block_train: la (and the mask in its sign bit) read, not recomputed."""
    c = x.shape[1]
    if x.numel() == 0:
        return (empty_like_layout(x), torch.zeros_like(w1), x.new_zeros(c), torch.zeros_like(w3), x.new_zeros(c))
    mask = torch.where(torch.signbit(la), 0.0, 1.0).to(la.dtype)  # > 0 where out > 0
    la = la.abs()
    return _backward(grad, x, mask, la, x - la, *_params(w1, w3), dilation)
