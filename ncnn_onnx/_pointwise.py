"""Pointwise (1x1) NC: standardize the input over each group's channels, then an ordinary convolution.

A 1x1 patch is the `cg = C/groups` channel values at one input location, and every location lies in at
most one patch. So the standardized patches form a tensor of the input's own size,

    xhat = (x - center * mu) * (rstd if scale else 1)       per group and location,

and NC is conv(xhat, W, B) with stride 1 and no padding on the sampled locations. That is a channel
LayerNorm followed by a GEMM: no output-sized work beyond the convolution itself, and a training step
saves only x and W (the backward recomputes xhat, one pass over the input).

Numerics: the values are shifted by the group's first channel before the mean is taken, so an exactly
flat patch has deviations, mean and variance of exactly 0 and gives exactly B; the variance is the
two-pass one. Statistics are never computed in less than float32.

Contiguous float32 CPU inputs run the standardization and its backward natively
(`_native_channels`, one pass over the input in cache); everything else (float64, half types,
channels_last, torch.func transforms) runs the same steps in PyTorch ops below.
"""

from __future__ import annotations

import math
from typing import Optional

import torch
import torch.nn.functional as F
from torch import Tensor

from . import _native_channels
from ._tensors import memory_format_of, statistics_dtype


def applies(weight: Tensor, geo) -> bool:
    """A 1x1 kernel with more than one channel per group (one channel per group is depthwise)."""
    return math.prod(weight.shape[2:]) == 1 and weight.shape[1] > 1


def _sampled(x: Tensor, geo) -> Tensor:
    """The input locations the 1x1 patches read: zero padded, then every stride-th location (a view
    where there is no padding)."""
    if any(geo.pads):
        x = F.pad(x, geo.torch_pad())
    if any(s > 1 for s in geo.stride):
        x = x[(slice(None), slice(None), *(slice(None, None, s) for s in geo.stride))]
    return x


def _unsample(grad: Tensor, x: Tensor, geo) -> Tensor:
    """Adjoint of `_sampled`: the gradient of the sampled locations placed back on x."""
    if not any(geo.pads) and not any(s > 1 for s in geo.stride):
        return grad
    k = geo.ndim
    padded = [x.shape[2 + d] + geo.pads[d] + geo.pads[k + d] for d in range(k)]
    full = grad.new_zeros(x.shape[0], x.shape[1], *padded)
    full[(slice(None), slice(None), *(slice(None, None, s) for s in geo.stride))] = grad
    crop = [slice(geo.pads[d], geo.pads[d] + x.shape[2 + d]) for d in range(k)]
    return full[(slice(None), slice(None), *crop)].contiguous(memory_format=memory_format_of(x))


def _standardize(xs: Tensor, groups: int, eps: float, center: bool, scale: bool, keep_dev: bool = False):
    """xhat (N, G, cg, *s) in the statistics dtype, rstd (N, G, 1, *s) or None, and with `keep_dev` the
    deviations x - mu (N, G, cg, *s) that the backward needs.

    The values are shifted by the group's first channel before the mean is taken: an exactly flat patch
    then gives deviations, mean and variance of exactly 0 (so exactly B with center=1, as the contract
    wants, however the mean of equal values would round). The variance is the two-pass one, of the
    deviations from the mean of the shifted values.
    """
    sdt = statistics_dtype(xs.dtype)
    xg = xs.unflatten(1, (groups, xs.shape[1] // groups)).to(sdt)  # a view in either memory format
    dev = xg - xg[:, :, :1]
    dev -= dev.mean(2, keepdim=True)
    rstd = None
    if scale:
        var = torch.linalg.vecdot(dev, dev, dim=2).unsqueeze(2).div_(xg.shape[2])
        rstd = var.add_(eps).rsqrt_()
    if not center:
        xhat = xg * rstd
    elif not scale:
        xhat = dev
    else:
        xhat = dev * rstd if keep_dev else dev.mul_(rstd)
    return xhat, rstd, dev if keep_dev else None


def forward(x: Tensor, weight: Tensor, bias: Optional[Tensor], geo, eps: float, center: bool, scale: bool) -> Tensor:
    xs = _sampled(x, geo)
    if _native_channels.applies(x):
        xhat = _native_channels.standardize(xs.contiguous(), geo.groups, eps, center, scale)
    else:
        xhat = _as_input(_standardize(xs, geo.groups, eps, center, scale)[0], x)
    return _conv(xhat, weight, bias, geo.groups)


def _as_input(xhat: Tensor, x: Tensor) -> Tensor:
    """(N, G, cg, *s) statistics-dtype xhat as a convolution input in x's dtype and memory format."""
    return xhat.flatten(1, 2).to(x.dtype).contiguous(memory_format=memory_format_of(x))


def _conv(xhat: Tensor, weight: Tensor, bias: Optional[Tensor], groups: int) -> Tensor:
    k = xhat.dim() - 2
    return torch.convolution(xhat, weight, bias, [1] * k, [0] * k, [1] * k, False, [0] * k, groups)


def _conv_backward(grad_y: Tensor, xhat: Tensor, weight: Tensor, groups: int, need_x: bool, need_w: bool):
    k = xhat.dim() - 2
    return torch.ops.aten.convolution_backward(
        grad_y.to(xhat.dtype), xhat, weight, None, [1] * k, [0] * k, [1] * k, False, [0] * k, groups,
        [need_x, need_w, False],
    )[:2]


def backward(grad_y: Tensor, x: Tensor, weight: Tensor, geo, eps: float, center: bool, scale: bool,
             need_x: bool, need_w: bool) -> tuple[Optional[Tensor], Optional[Tensor]]:
    """Gradients for x and W, recomputing xhat. With g = dL/dxhat, u = x - center * mu and r = rstd
    (1 when scale is off), over each group's channels (a LayerNorm backward):
        dx = r g  -  center * r mean(g)  -  scale * r^3 (x - mu) mean(g u)"""
    xs = _sampled(x, geo)
    if _native_channels.applies(x):
        xs = xs.contiguous()
        xhat = _native_channels.standardize(xs, geo.groups, eps, center, scale)
        ghat, gw = _conv_backward(grad_y, xhat, weight, geo.groups, need_x, need_w)
        del xhat
        if not need_x:
            return None, gw
        return _unsample(_native_channels.standardize_backward(ghat.contiguous(), xs, geo.groups, eps, center, scale), x, geo), gw
    xhat, rstd, dev = _standardize(xs, geo.groups, eps, center, scale, keep_dev=need_x)
    xhat_in = _as_input(xhat, x)
    ghat, gw = _conv_backward(grad_y, xhat_in, weight, geo.groups, need_x, need_w)
    del xhat_in
    if not need_x:
        return None, gw
    # In place from here on: every input-sized buffer not allocated is one that glibc does not page-fault
    # in afresh on each step.
    g = ghat.to(dev.dtype).unflatten(1, dev.shape[1:3])
    del ghat
    # torch.func transforms have no out= variants, nor a batching rule for addcmul_: out of place there.
    wrapped = torch._C._functorch.is_functorch_wrapped_tensor(g)
    if scale:
        u = dev if center else xs.unflatten(1, dev.shape[1:3]).to(dev.dtype)
        product = g * u if wrapped else torch.mul(g, u, out=xhat)  # xhat's buffer is free now
        coeff = product.sum(2, keepdim=True).mul_(rstd.square().div_(dev.shape[2]))
        del u, xhat, product
    if center:
        mean_g = g.mean(2, keepdim=True)
        g = g - mean_g if wrapped else g.sub_(mean_g)
    if scale:
        g = (torch.addcmul(g, dev, coeff, value=-1) if wrapped else g.addcmul_(dev, coeff, value=-1)).mul_(rstd)
    return _unsample(g.flatten(1, 2).to(x.dtype), x, geo), gw
