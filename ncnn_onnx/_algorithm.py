"""Forward and backward math of Normalized Convolution, in plain PyTorch ops.

The patch vector of output position p (group g) holds `cg = C/groups` channel values at each of the
`K = prod(kernel)` input locations j it covers. Writing `m_j` for the group's channel mean at location j,

    v - mu_p  =  (x_cj - m_j)  +  (m_j - mu_p)

splits every deviation into a channel-centred input (an ordinary tensor the size of x) and a patch term
that lives on `m`, which is `cg` times smaller than x. Hence, exactly and without cancellation:

    mu_p          = mean of m over the patch's K locations
    I * var_p     = sum_j q_j  +  cg * sum_j (m_j - mu_p)^2        with q_j = sum_c (x_cj - m_j)^2
    W . (v - mu)  = conv(x - m, W)_p  +  sum_k Wsum[k] * (m_j(k) - mu_p)

so NC costs one ordinary convolution plus a GroupNorm-sized amount of elementwise work; the k^2-times
im2col matrix of the input is never formed. Zero padding is exact too: a padded location has m = q = 0.

Everything here works on any number of spatial dims (1, 2 or 3) and takes explicit per-side pads.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass
from typing import Optional, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from ._arguments import output_size


@dataclass(frozen=True)
class ConvGeometry:
    """Resolved convolution arguments, one entry per spatial dim; pads as (before..., after...)."""

    stride: tuple[int, ...]
    pads: tuple[int, ...]
    dilation: tuple[int, ...]
    groups: int

    @property
    def ndim(self) -> int:
        return len(self.stride)

    @property
    def symmetric(self) -> bool:
        k = self.ndim
        return self.pads[:k] == self.pads[k:]

    def torch_pad(self) -> list[int]:
        """The pads in F.pad's order (last dim first)."""
        k = self.ndim
        out: list[int] = []
        for d in reversed(range(k)):
            out += [self.pads[d], self.pads[k + d]]
        return out

    def output_size(self, spatial: Sequence[int], kernel: Sequence[int]) -> list[int]:
        return output_size(spatial, kernel, self.stride, self.pads, self.dilation)


def statistics_dtype(dtype: torch.dtype) -> torch.dtype:
    """Patch statistics are never computed in less than float32 (DESIGN.md §3)."""
    return torch.float64 if dtype == torch.float64 else torch.float32


def _windows(padded: Tensor, kernel: Sequence[int], geo: ConvGeometry, out: Sequence[int]):
    """Yield, for every kernel offset, the strided view of `padded` that the offset reads."""
    for offset in itertools.product(*(range(k) for k in kernel)):
        index = [slice(None), slice(None)]
        for d, o in enumerate(offset):
            start = o * geo.dilation[d]
            index.append(slice(start, start + (out[d] - 1) * geo.stride[d] + 1, geo.stride[d]))
        yield padded[tuple(index)]


def _unfold(t: Tensor, kernel, geo: ConvGeometry, out) -> Tensor:
    """(N, G, *spatial) -> (N, G, K, *out): the patch values of a small per-group map, zero padded."""
    padded = F.pad(t, geo.torch_pad())
    return torch.stack(list(_windows(padded, kernel, geo, out)), dim=2)


def _box_sum(t: Tensor, kernel, geo: ConvGeometry, out) -> Tensor:
    padded = F.pad(t, geo.torch_pad())
    windows = _windows(padded, kernel, geo, out)
    total = next(windows).clone()
    for w in windows:
        total += w
    return total


def _fold(patches: Tensor, kernel, geo: ConvGeometry, spatial) -> Tensor:
    """Adjoint of `_unfold`: (N, G, K, *out) -> (N, G, *spatial), summing overlapping patches."""
    k = geo.ndim
    padded_shape = [spatial[d] + geo.pads[d] + geo.pads[k + d] for d in range(k)]
    padded = patches.new_zeros(*patches.shape[:2], *padded_shape)
    out = patches.shape[3:]
    for i, w in enumerate(_windows(padded, kernel, geo, out)):
        w += patches[:, :, i]
    crop = [slice(None), slice(None)] + [
        slice(geo.pads[d], geo.pads[d] + spatial[d]) for d in range(k)
    ]
    return padded[tuple(crop)]


def _conv_input(xc: Tensor, geo: ConvGeometry) -> tuple[Tensor, list[int]]:
    """torch convolutions take symmetric padding only; pad asymmetric cases ('same', even kernels) by hand."""
    k = geo.ndim
    if geo.symmetric:
        return xc, list(geo.pads[:k])
    return F.pad(xc, geo.torch_pad()), [0] * k


def _per_group(t: Tensor, groups: int) -> Tensor:
    """(N, M, *s) -> (N, G, M/G, flat s)."""
    return t.reshape(t.shape[0], groups, t.shape[1] // groups, -1)


@dataclass
class PatchStatistics:
    """Per group: channel means m (N, G, *spatial), channel-centred x (N, G, cg, *spatial), the raw
    patches of m and their deviations dev[k] = m_j(k) - mu_p (N, G, K, *out), and rstd (or None)."""

    m: Tensor
    xcg: Tensor
    patches: Tensor
    dev: Tensor
    rstd: Optional[Tensor]


def patch_statistics(x: Tensor, kernel, geo: ConvGeometry, out, eps: float, scale: bool) -> PatchStatistics:
    """Exact patch statistics in the statistics dtype.

    The channel mean m_j is rounded; the residual s_j = sum_c (x_cj - m_j) it leaves is small and is
    carried into the patch mean and the variance, so the decomposition stays exact up to rounding of
    small numbers (without it, a near-flat bright patch loses digits in rstd).
    """
    n, c = x.shape[:2]
    spatial = x.shape[2:]
    g = geo.groups
    cg = c // g
    fan_in = cg * math.prod(kernel)
    xg = x.to(statistics_dtype(x.dtype)).reshape(n, g, cg, *spatial)
    m = xg.mean(2)
    xcg = xg - m.unsqueeze(2)
    both = _unfold(torch.cat([m, xcg.sum(2)], 1), kernel, geo, out)
    patches, residual = both[:, :g], both[:, g:]
    dev = patches - patches.mean(2, keepdim=True)
    # The corrected two-pass step: the deviations' own mean plus the residual, all small numbers.
    dev -= dev.mean(2, keepdim=True) + residual.sum(2, keepdim=True) / fan_in
    rstd = None
    if scale:
        squares = _box_sum(xcg.square().sum(2), kernel, geo, out)
        var = (squares + 2 * (dev * residual).sum(2) + cg * dev.square().sum(2)) / fan_in
        rstd = torch.rsqrt(var.clamp_min(0) + eps)
    return PatchStatistics(m=m, xcg=xcg, patches=patches, dev=dev, rstd=rstd)


def forward(
    x: Tensor,
    weight: Tensor,
    bias: Optional[Tensor],
    geo: ConvGeometry,
    eps: float,
    center: bool,
    scale: bool,
) -> tuple[Tensor, Tensor]:
    """Y = W . standardize(patch) + B at every output position; returns (Y, Y before bias).

    x and weight share one dtype; statistics are computed in at least float32.
    """
    n, c = x.shape[:2]
    kernel = list(weight.shape[2:])
    out_ch = weight.shape[0]
    g = geo.groups
    n_k = math.prod(kernel)
    out = geo.output_size(x.shape[2:], kernel)
    sdt = statistics_dtype(x.dtype)

    st = patch_statistics(x, kernel, geo, out, eps, scale)
    conv_in, conv_pad = _conv_input(st.xcg.reshape(x.shape).to(x.dtype), geo)
    ylin = torch.convolution(
        conv_in, weight, None, list(geo.stride), conv_pad, list(geo.dilation), False, [0] * geo.ndim, g
    ).to(sdt)
    patch_term = st.dev if center else st.patches
    wsum = weight.to(sdt).reshape(g, out_ch // g, c // g, n_k).sum(2)  # (G, M/G, K)
    ylin_g = _per_group(ylin, g)
    ylin_g += torch.einsum("gmk,ngkp->ngmp", wsum, patch_term.reshape(n, g, n_k, -1))
    if scale:
        ylin_g *= st.rstd.reshape(n, g, 1, -1)

    y = ylin if bias is None else ylin + bias.to(sdt).reshape(1, -1, *([1] * geo.ndim))
    return y.to(x.dtype), ylin.to(x.dtype)


def backward(
    grad_y: Tensor,
    x: Tensor,
    weight: Tensor,
    has_bias: bool,
    ylin: Tensor,
    geo: ConvGeometry,
    eps: float,
    center: bool,
    scale: bool,
    needs: tuple[bool, bool, bool],
) -> tuple[Optional[Tensor], Optional[Tensor], Optional[Tensor]]:
    """Gradients for (x, weight, bias).

    With r = rstd (1 when scale is off), G_p = mean_i (W^T gy)_i and A_p = mean_i vhat_i (W^T gy)_i
    = sum_m gy_m ylin_m / I, the patch gradient is
        dv_i = r (W^T gy)_i  -  center * r G_p  -  scale * r^2 (v_i - mu_p) A_p
    and dx is its col2im: one transposed convolution plus per-group patch terms that use the same
    decomposition as the forward pass, so no cancellation appears here either.
    """
    need_x, need_w, need_b = needs
    n, c = x.shape[:2]
    spatial = list(x.shape[2:])
    kernel = list(weight.shape[2:])
    out_ch = weight.shape[0]
    g = geo.groups
    cg = c // g
    n_k = math.prod(kernel)
    fan_in = cg * n_k
    out = list(grad_y.shape[2:])
    sdt = statistics_dtype(x.dtype)

    gy = grad_y.to(sdt)
    gy_g = _per_group(gy, g)  # (N, G, M/G, P)
    # Recomputing the statistics costs a GroupNorm-sized pass and keeps only x and ylin saved.
    st = patch_statistics(x, kernel, geo, out, eps, scale)
    r = st.rstd.reshape(n, g, 1, -1) if scale else None
    s_g = gy_g * r if scale else gy_g
    s = s_g.reshape(gy.shape)
    xcg, dev = st.xcg, st.dev
    xc = xcg.reshape(n, c, *spatial)
    patch_term = (dev if center else st.patches).reshape(n, g, n_k, -1)

    grad_x = grad_w = grad_b = None
    if need_x or need_w:
        conv_in, conv_pad = _conv_input(xc.to(x.dtype), geo)
        gx, gw, _ = torch.ops.aten.convolution_backward(
            s.to(x.dtype), conv_in, weight, None, list(geo.stride), conv_pad, list(geo.dilation),
            False, [0] * geo.ndim, g, [need_x, need_w, False],
        )
        if need_w:
            w_patch = torch.einsum("ngmp,ngkp->gmk", s_g, patch_term)  # (G, M/G, K)
            gw = gw.to(sdt).reshape(out_ch, cg, n_k) + w_patch.reshape(out_ch, 1, n_k)
            grad_w = gw.reshape(weight.shape).to(weight.dtype)
        if need_x:
            if not geo.symmetric:
                k = geo.ndim
                crop = [slice(None), slice(None)] + [
                    slice(geo.pads[d], geo.pads[d] + spatial[d]) for d in range(k)
                ]
                gx = gx[tuple(crop)]
            gx = gx.to(sdt)
            per_patch = torch.zeros(n, g, n_k, *out, dtype=sdt, device=x.device)
            coeff_x = None
            if center:
                wtot = weight.to(sdt).reshape(g, out_ch // g, -1).sum(2)  # (G, M/G)
                mean_grad = torch.einsum("gm,ngmp->ngp", wtot, gy_g) / fan_in
                rg = mean_grad * r.squeeze(2) if scale else mean_grad
                per_patch -= rg.reshape(n, g, 1, *out)
            if scale:
                a = (gy_g * _per_group(ylin.to(sdt), g)).sum(2) / fan_in  # (N, G, P)
                e = (a * r.squeeze(2).square()).reshape(n, g, *out)
                per_patch -= e.unsqueeze(2) * dev
                coeff_x = _fold(e.unsqueeze(2).expand(n, g, n_k, *out), kernel, geo, spatial)
            extra = _fold(per_patch, kernel, geo, spatial).unsqueeze(2)  # (N, G, 1, *spatial)
            if coeff_x is not None:
                extra = extra - coeff_x.unsqueeze(2) * xcg
            gx = (gx.reshape(n, g, cg, *spatial) + extra).reshape(x.shape)
            grad_x = gx.to(x.dtype)
    if need_b and has_bias:
        grad_b = gy.sum(dim=[0] + list(range(2, gy.dim()))).to(weight.dtype)
    return grad_x, grad_w, grad_b
