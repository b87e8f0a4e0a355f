"""Triton kernels of the self-correcting dilated block (forward and backward).

Forward, two fused kernels: (1) conv3x3 + bias + ReLU -> la, and e = x - la in
the same pass; (2) dilated conv3x3 of e + bias + la, ReLU. Backward: (1) again
to recompute la and e; (2) ge = adjoint dilated conv of gq = grad * [out > 0]
(the mask applied on load) with gp = (gq - ge) * [la > 0] in the same pass;
(3) gx = ge + adjoint conv of gp; (4) weight and bias gradients as per-program
partial sums (reduced by torch). Each program computes BLOCK pixels x all
channels (padded to a power of two). Semantics: derain_kernels.reference.block.
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl

from ..ops.block import empty_like_layout

BLOCK = 128

# epilogues of _conv3x3
RELU_SPLIT, ADD_RELU, BACKWARD_E, ADD = 0, 1, 2, 3


@triton.jit
def _conv3x3(src_ptr, mask_ptr, w_ptr, b_ptr, aux_ptr, aux2_ptr, out_ptr, out2_ptr, H, W, C, D, nblk,
             MODE: tl.constexpr, TRANSPOSED: tl.constexpr, MASK_SRC: tl.constexpr, HAS_BIAS: tl.constexpr,
             IS_F64: tl.constexpr, CP: tl.constexpr, BLOCK: tl.constexpr):
    pid = tl.program_id(0)
    n = pid // nblk
    p = (pid % nblk) * BLOCK + tl.arange(0, BLOCK)
    hw = H * W
    pin = p < hw
    y = p // W
    x = p % W
    co = tl.arange(0, CP)
    cmask = co < C
    base = n * C * hw
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
        for ci in range(C):
            v = tl.load(src_ptr + base + ci * hw + yy * W + xx, mask=ok, other=0.0)
            if MASK_SRC:
                m = tl.load(mask_ptr + base + ci * hw + yy * W + xx, mask=ok, other=0.0)
                v = tl.where(m > 0, v, 0.0)
            if TRANSPOSED:  # input channel ci of the adjoint is output channel ci of the conv
                wv = tl.load(w_ptr + ci * C * 9 + co * 9 + t, mask=cmask, other=0.0)
            else:
                wv = tl.load(w_ptr + co * C * 9 + ci * 9 + t, mask=cmask, other=0.0)
            acc += v[:, None] * wv[None, :]
    if HAS_BIAS:
        acc += tl.load(b_ptr + co, mask=cmask, other=0.0)[None, :]
    offs = base + co[None, :] * hw + p[:, None]
    om = pin[:, None] & cmask[None, :]
    if MODE == 0:  # la = relu(acc) -> out; e = aux - la -> out2
        la = tl.where(acc < 0, 0.0, acc)
        xv = tl.load(aux_ptr + offs, mask=om, other=0.0)
        tl.store(out_ptr + offs, la, mask=om)
        tl.store(out2_ptr + offs, xv - la, mask=om)
    elif MODE == 1:  # relu(acc + aux)
        s = acc + tl.load(aux_ptr + offs, mask=om, other=0.0)
        tl.store(out_ptr + offs, tl.where(s < 0, 0.0, s), mask=om)
    elif MODE == 2:  # ge = acc -> out; gp = (gq - ge) * [aux2 > 0] -> out2, gq = src * [mask > 0]
        gq = tl.load(src_ptr + offs, mask=om, other=0.0)
        gm = tl.load(mask_ptr + offs, mask=om, other=0.0)
        gq = tl.where(gm > 0, gq, 0.0)
        la = tl.load(aux2_ptr + offs, mask=om, other=0.0)
        tl.store(out_ptr + offs, acc, mask=om)
        tl.store(out2_ptr + offs, tl.where(la > 0, gq - acc, 0.0), mask=om)
    else:  # acc + aux
        tl.store(out_ptr + offs, acc + tl.load(aux_ptr + offs, mask=om, other=0.0), mask=om)


@triton.jit
def _weight_grad(inp_ptr, g_ptr, mask_ptr, part_w_ptr, part_b_ptr, H, W, C, D, nblk,
                 MASK_G: tl.constexpr, CP: tl.constexpr, BLOCK: tl.constexpr):
    # part_w[pid, t, ci, co] = sum_p g[co](p) * inp[ci](p + offset_t);  part_b[pid, co] = sum_p g[co](p)
    pid = tl.program_id(0)
    n = pid // nblk
    p = (pid % nblk) * BLOCK + tl.arange(0, BLOCK)
    hw = H * W
    pin = p < hw
    y = p // W
    x = p % W
    co = tl.arange(0, CP)
    cmask = co < C
    base = n * C * hw
    offs = base + co[None, :] * hw + p[:, None]
    om = pin[:, None] & cmask[None, :]
    g = tl.load(g_ptr + offs, mask=om, other=0.0)
    if MASK_G:
        m = tl.load(mask_ptr + offs, mask=om, other=0.0)
        g = tl.where(m > 0, g, 0.0)
    tl.store(part_b_ptr + pid * CP + co, tl.sum(g, axis=0))
    for t in tl.static_range(9):
        yy = y + (t // 3 - 1) * D
        xx = x + (t % 3 - 1) * D
        ok = pin & (yy >= 0) & (yy < H) & (xx >= 0) & (xx < W)
        for ci in range(C):
            v = tl.load(inp_ptr + base + ci * hw + yy * W + xx, mask=ok, other=0.0)
            tl.store(part_w_ptr + ((pid * 9 + t) * C + ci) * CP + co, tl.sum(g * v[:, None], axis=0))


def _geometry(x):
    n, c, h, w = x.shape
    nblk = triton.cdiv(max(h * w, 1), BLOCK)
    return n, c, h, w, nblk, triton.next_power_of_2(c)


def _conv(src, w, b, d, mode, *, transposed=False, mask=None, aux=None, aux2=None, two_outputs=False):
    n, c, h, wd, nblk, cp = _geometry(src)
    out = torch.empty_like(src)
    out2 = torch.empty_like(src) if two_outputs else out
    _conv3x3[(n * nblk,)](src, mask if mask is not None else src, w, b if b is not None else w,
                          aux if aux is not None else src, aux2 if aux2 is not None else src, out, out2,
                          h, wd, c, d, nblk, MODE=mode, TRANSPOSED=transposed, MASK_SRC=mask is not None,
                          HAS_BIAS=b is not None, IS_F64=src.dtype == torch.float64, CP=cp, BLOCK=BLOCK)
    return (out, out2) if two_outputs else out


def _weight_grads(inp, g, d, mask=None):
    n, c, h, w, nblk, cp = _geometry(inp)
    nprog = n * nblk
    part_w = torch.empty(nprog, 9, c, cp, dtype=inp.dtype, device=inp.device)
    part_b = torch.empty(nprog, cp, dtype=inp.dtype, device=inp.device)
    _weight_grad[(nprog,)](inp, g, mask if mask is not None else g, part_w, part_b, h, w, c, d, nblk,
                           MASK_G=mask is not None, CP=cp, BLOCK=BLOCK)
    gw = part_w.sum(0)[..., :c].permute(2, 1, 0).reshape(c, c, 3, 3).contiguous()
    return gw, part_b.sum(0)[:c].contiguous()


def _restore_layout(t, like):
    out = empty_like_layout(like)
    out.copy_(t)
    return out


def _forward(xc, w1c, b1c, w3c, b3c, dilation):
    """(out, la, e) on contiguous tensors."""
    la, e = _conv(xc, w1c, b1c, 1, RELU_SPLIT, aux=xc, two_outputs=True)
    return _conv(e, w3c, b3c, dilation, ADD_RELU, aux=la), la, e


def _backward(gc, xc, oc, la, e, w1c, w3c, dilation):
    """(gx, gw1, gb1, gw3, gb3) on contiguous tensors, from la and e = x - la."""
    ge, gp = _conv(gc, w3c, None, dilation, BACKWARD_E, transposed=True, mask=oc, aux2=la, two_outputs=True)
    gx = _conv(gp, w1c, None, 1, ADD, transposed=True, aux=ge)
    gw3, gb3 = _weight_grads(e, gc, dilation, mask=oc)
    gw1, gb1 = _weight_grads(xc, gp, 1)
    return gx, gw1, gb1, gw3, gb3


def self_correcting_block(x, w1, b1, w3, b3, dilation=3):
    xc = x.contiguous()
    if xc.numel() == 0:
        return empty_like_layout(x)
    out, _, _ = _forward(xc, *(t.contiguous() for t in (w1, b1, w3, b3)), dilation)
    return _restore_layout(out, x)


def self_correcting_block_backward(grad, x, out, w1, b1, w3, b3, dilation=3):
    xc, gc, oc = x.contiguous(), grad.contiguous(), out.contiguous()
    w1c, b1c, w3c = w1.contiguous(), b1.contiguous(), w3.contiguous()
    if xc.numel() == 0:
        return (empty_like_layout(x), torch.zeros_like(w1), torch.zeros_like(b1), torch.zeros_like(w3),
                torch.zeros_like(b3))
    la, e = _conv(xc, w1c, b1c, 1, RELU_SPLIT, aux=xc, two_outputs=True)  # recomputed
    gx, *gw = _backward(gc, xc, oc, la, e, w1c, w3c, dilation)
    return (_restore_layout(gx, x), *gw)


def self_correcting_block_train(x, w1, b1, w3, b3, dilation=3):
    """(out, la): the forward that also returns la = relu(conv3x3(x; w1, b1)) for the backward."""
    xc = x.contiguous()
    if xc.numel() == 0:
        return empty_like_layout(x), empty_like_layout(x)
    out, la, _ = _forward(xc, *(t.contiguous() for t in (w1, b1, w3, b3)), dilation)
    return _restore_layout(out, x), _restore_layout(la, x)


def self_correcting_block_backward_la(grad, x, la, out, w1, w3, dilation=3):
    """Backward of self_correcting_block_train: la is read, not recomputed."""
    xc, gc, oc, lac = x.contiguous(), grad.contiguous(), out.contiguous(), la.contiguous()
    c = x.shape[1]
    if xc.numel() == 0:
        return (empty_like_layout(x), torch.zeros_like(w1), x.new_zeros(c), torch.zeros_like(w3), x.new_zeros(c))
    gx, *gw = _backward(gc, xc, oc, lac, xc - lac, w1.contiguous(), w3.contiguous(), dilation)
    return (_restore_layout(gx, x), *gw)
