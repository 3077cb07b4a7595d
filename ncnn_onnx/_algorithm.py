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

Non-finite inputs (docs/op.md, "Non-finite values"): every step above is local to a location (m, x - m)
or to a patch (its statistics, the product), so a NaN or inf reaches exactly the outputs whose patch
holds it, where the centring (inf - inf) or the variance makes them NaN. With center=0 and scale=0 the op
is a plain convolution and must give its IEEE results (inf stays inf): that case calls the convolution
itself instead of the decomposition.

Everything here works on any number of spatial dims (1, 2 or 3) and takes explicit per-side pads.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass
from typing import Optional, Sequence

from ._extras import require

require("torch", "ncnn_onnx")

import torch
import torch.nn.functional as F
from torch import Tensor

from . import _native_channels, _native_conv, _native_depthwise, _pointwise
from ._arguments import output_size
from ._tensors import in_memory_format_of, statistics_dtype


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


def _window_view(t: Tensor, kernel: Sequence[int], geo: ConvGeometry) -> Tensor:
    """(N, G, *spatial) -> a zero-padded strided view (N, G, *out, *kernel) of every patch; no copy
    beyond the padding."""
    view = F.pad(t, geo.torch_pad())
    k = geo.ndim
    for d in range(k):
        span = geo.dilation[d] * (kernel[d] - 1) + 1
        view = view.unfold(2 + d, span, geo.stride[d])
        if geo.dilation[d] > 1:
            view = view[..., :: geo.dilation[d]]
    return view


def _unfold(t: Tensor, kernel, geo: ConvGeometry, out) -> Tensor:
    """(N, G, *spatial) -> (N, G, K, *out): the patch values of a small per-group map, zero padded."""
    view = _window_view(t, kernel, geo)
    k = geo.ndim
    perm = [0, 1, *range(2 + k, 2 + 2 * k), *range(2, 2 + k)]
    return view.permute(perm).reshape(t.shape[0], t.shape[1], -1, *out)


def _box_sum(t: Tensor, kernel, geo: ConvGeometry, out) -> Tensor:
    k = geo.ndim
    return _window_view(t, kernel, geo).sum(dim=list(range(2 + k, 2 + 2 * k)))


def _fold(patches: Tensor, kernel, geo: ConvGeometry, spatial) -> Tensor:
    """Adjoint of `_unfold`: (N, G, K, *out) -> (N, G, *spatial), summing overlapping patches."""
    k = geo.ndim
    n, g, n_k = patches.shape[:3]
    padded_shape = [spatial[d] + geo.pads[d] + geo.pads[k + d] for d in range(k)]
    if k <= 2:
        # F.fold is col2im for 2-d maps; a 1-d map is a 2-d map of height 1.
        lift = (lambda v: [1, *v]) if k == 1 else (lambda v: list(v))
        folded = F.fold(
            patches.reshape(n, g * n_k, math.prod(patches.shape[3:])), lift(padded_shape), lift(kernel),
            dilation=lift(geo.dilation), stride=lift(geo.stride),
        ).reshape(n, g, *padded_shape)
    else:
        folded = patches.new_zeros(n, g, *padded_shape)
        out = patches.shape[3:]
        for i, offset in enumerate(itertools.product(*(range(kk) for kk in kernel))):
            index = [slice(None), slice(None)]
            for d, o in enumerate(offset):
                start = o * geo.dilation[d]
                index.append(slice(start, start + (out[d] - 1) * geo.stride[d] + 1, geo.stride[d]))
            folded[tuple(index)] += patches[:, :, i]
    crop = [slice(None), slice(None)] + [slice(geo.pads[d], geo.pads[d] + spatial[d]) for d in range(k)]
    return folded[tuple(crop)]


def _conv_input(xc: Tensor, geo: ConvGeometry) -> tuple[Tensor, list[int]]:
    """torch convolutions take symmetric padding only; pad asymmetric cases ('same', even kernels) by hand."""
    k = geo.ndim
    if geo.symmetric:
        return xc, list(geo.pads[:k])
    return F.pad(xc, geo.torch_pad()), [0] * k


def is_plain(center: bool, scale: bool) -> bool:
    """center=0 and scale=0: the op is exactly a convolution (IEEE arithmetic of sum_i W_i v_i + B)."""
    return not center and not scale


def is_native(x: Tensor, weight: Tensor, bias: Optional[Tensor], geo: ConvGeometry, center: bool, scale: bool) -> bool:
    """Depthwise float32 CPU layers run native kernels: the deployed kernel's forward (`_native_conv`) and
    the layer's backward (`_native_depthwise`), which needs no saved statistics."""
    return _native_depthwise.applies(x, weight, bias, geo.groups, center, scale)


def recomputes_statistics(x: Tensor, weight: Tensor, bias: Optional[Tensor], geo: ConvGeometry, center: bool, scale: bool) -> bool:
    """True where `backward` needs nothing from the forward but x and W: a plain convolution, the native
    depthwise kernels and pointwise layers (whose statistics cost one pass over the input)."""
    return (is_plain(center, scale) or x.shape[0] == 0 or is_native(x, weight, bias, geo, center, scale)
            or _pointwise.applies(weight, geo))


def convolution(x: Tensor, weight: Tensor, bias: Optional[Tensor], geo: ConvGeometry) -> Tensor:
    """The plain convolution with the geometry's (possibly asymmetric) pads; differentiable."""
    conv_in, conv_pad = _conv_input(x, geo)
    return torch.convolution(
        conv_in, weight, bias, list(geo.stride), conv_pad, list(geo.dilation), False, [0] * geo.ndim, geo.groups
    )


def _per_group(t: Tensor, groups: int) -> Tensor:
    """(N, M, *s) -> (N, G, M/G, flat s)."""
    return t.reshape(t.shape[0], groups, t.shape[1] // groups, math.prod(t.shape[2:]))


@dataclass
class PatchStatistics:
    """Per group: channel means m (N, G, *spatial); the patches of m and their deviations
    dev[k] = m_j(k) - mu_p (N, G, K, *out); rstd (N, G, *out), None when scale is off."""

    m: Tensor
    patches: Tensor
    dev: Tensor
    rstd: Optional[Tensor]

    def nbytes(self) -> int:
        return sum(t.numel() * t.element_size() for t in (self.m, self.patches, self.dev) if t is not None)


def _grouped(x: Tensor, groups: int) -> Tensor:
    """x as (N, G, cg, *spatial) in the statistics dtype."""
    n, c = x.shape[:2]
    return x.to(statistics_dtype(x.dtype)).reshape(n, groups, c // groups, *x.shape[2:])


def centre_channels(x: Tensor, groups: int) -> tuple[Tensor, Tensor]:
    """Per group and location: channel mean m and channel-centred x (N, G, cg, *spatial), statistics dtype.

    Where a location's channels all hold one value, m is that value itself: the rounded mean of equal
    values need not give it back (3 x 7.7 in float32), and an exactly flat patch must centre to exactly 0,
    or 1/sqrt(eps) amplifies the rounding (docs/op.md, "Limits").
    """
    xg = _grouped(x, groups)
    if xg.shape[2] == 1:
        m = xg[:, :, 0]
    elif xg.dtype == torch.float32:
        # Summed in float64: exact for equal values (and no slower than a float32 mean over the channels,
        # where torch's aminmax took 20 times as long).
        m = xg.sum(2, dtype=torch.float64).div_(xg.shape[2]).to(torch.float32)
    else:
        low, high = torch.aminmax(xg, dim=2)
        m = torch.where(low == high, low, xg.mean(2))
    return m, xg - m.unsqueeze(2)


def _centred(x: Tensor, m: Tensor) -> Tensor:
    """x - m (N, G, cg, *spatial) for channel means m (N, G, *spatial) taken earlier."""
    return _grouped(x, m.shape[1]) - m.unsqueeze(2)


def centred_moments(x: Tensor, groups: int) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """`centre_channels`' m and x - m, plus the location moments s = sum_c (x - m) and
    q = sum_c (x - m)^2 (N, G, *spatial); in one native pass for contiguous float32 CPU inputs."""
    if _native_channels.applies(x):
        return _native_channels.centre(x, groups)
    m, xcg = centre_channels(x, groups)
    return m, xcg, xcg.sum(2), xcg.square().sum(2)


def patch_statistics(m: Tensor, s: Tensor, q: Tensor, cg: int, kernel, geo: ConvGeometry, out, eps: float,
                     scale: bool) -> PatchStatistics:
    """Exact patch statistics from the channel means m and the location moments s and q
    (`centred_moments`) of groups of cg channels.

    The channel mean m_j is rounded; the residual s_j = sum_c (x_cj - m_j) it leaves is small and is
    carried into the patch mean and the variance, so the decomposition stays exact up to rounding of
    small numbers (without it, a near-flat bright patch loses digits in rstd).
    """
    fan_in = cg * math.prod(kernel)
    both = _unfold(torch.cat([m, s], 1), kernel, geo, out)
    g = m.shape[1]
    patches, residual = both[:, :g], both[:, g:]
    dev = patches - patches.mean(2, keepdim=True)
    # The corrected two-pass step: the deviations' own mean plus the residual, all small numbers.
    dev -= dev.mean(2, keepdim=True) + residual.sum(2, keepdim=True) / fan_in
    rstd = None
    if scale:
        squares = _box_sum(q, kernel, geo, out)
        var = (squares + 2 * (dev * residual).sum(2) + cg * dev.square().sum(2)) / fan_in
        rstd = torch.rsqrt(var.clamp_min(0) + eps)
    return PatchStatistics(m=m, patches=patches, dev=dev, rstd=rstd)


def forward(
    x: Tensor,
    weight: Tensor,
    bias: Optional[Tensor],
    geo: ConvGeometry,
    eps: float,
    center: bool,
    scale: bool,
    for_backward: bool = True,
) -> tuple[Tensor, Optional[Tensor], Optional[PatchStatistics]]:
    """Y = W . standardize(patch) + B at every output position.

    Returns Y and, `for_backward`, the unscaled pre-bias output W . (v - mu*center) and the patch
    statistics. x and weight share one dtype; statistics are computed in at least float32.
    With center=0 and scale=0 it is the plain convolution, and the other two are None (`backward`
    needs neither then).
    """
    if is_plain(center, scale) or x.shape[0] == 0:
        # An empty batch has no patch to standardize: the convolution gives its (empty) output.
        return convolution(x, weight, bias, geo), None, None
    # Inference runs the deployed kernel's forward, and so does depthwise training, whose backward
    # recomputes the statistics (a native depthwise layer is one the deployed kernel takes too).
    if (not for_backward or is_native(x, weight, bias, geo, center, scale)) and _native_conv.applies(x, weight, bias):
        return in_memory_format_of(_native_conv.forward(x, weight, bias, geo, eps, center, scale), x), None, None
    if _pointwise.applies(weight, geo):
        return in_memory_format_of(_pointwise.forward(x, weight, bias, geo, eps, center, scale), x), None, None
    n, c = x.shape[:2]
    kernel = list(weight.shape[2:])
    out_ch = weight.shape[0]
    g = geo.groups
    n_k = math.prod(kernel)
    out = geo.output_size(x.shape[2:], kernel)
    sdt = statistics_dtype(x.dtype)

    m, xcg, s, q = centred_moments(x, g)
    conv_in, conv_pad = _conv_input(xcg.reshape(x.shape).to(x.dtype), geo)
    # Contiguous: the per-group views below split the channel dim, which a channels_last result cannot.
    ylin = torch.convolution(
        conv_in, weight, None, list(geo.stride), conv_pad, list(geo.dilation), False, [0] * geo.ndim, g
    ).to(sdt).contiguous()
    del conv_in
    del xcg
    st = patch_statistics(m, s, q, c // g, kernel, geo, out, eps, scale)
    patch_term = st.dev if center else st.patches
    wsum = weight.to(sdt).reshape(g, out_ch // g, c // g, n_k).sum(2)  # (G, M/G, K)
    # Explicit sizes, no -1: under torch.compile with dynamic shapes a -1 asks the compiler to prove a
    # division of symbolic sizes exact, which Inductor failed at ("Invalid ranges").
    p_out = math.prod(out)
    ylin_b = ylin.view(n * g, out_ch // g, p_out)
    ylin_b.baddbmm_(
        wsum.expand(n, -1, -1, -1).reshape(n * g, out_ch // g, n_k), patch_term.reshape(n * g, n_k, p_out)
    )

    # Broadcasting views (N, G, M/G, P): rstd varies per group and position, bias per channel.
    ylin_g = ylin.view(n, g, out_ch // g, p_out)
    rstd_g = st.rstd.reshape(n, g, 1, p_out) if scale else None
    bias_g = None if bias is None else bias.to(sdt).reshape(1, g, out_ch // g, 1)
    if not for_backward:
        if scale:
            ylin_g.mul_(rstd_g)
        if bias_g is not None:
            ylin_g.add_(bias_g)
        return in_memory_format_of(ylin.to(x.dtype), x), None, None
    y = torch.empty_like(ylin)  # a fresh base tensor, not a view: callers may modify it in place
    y_g = y.view(ylin_g.shape)
    if scale:
        _into(y_g, torch.mul, ylin_g, rstd_g) if bias_g is None else _into(y_g, torch.addcmul, bias_g, ylin_g, rstd_g)
    else:
        y_g.copy_(ylin_g) if bias_g is None else _into(y_g, torch.add, ylin_g, bias_g)
    return in_memory_format_of(y.to(x.dtype), x), ylin.to(x.dtype), st


def _into(out: Tensor, fn, *args) -> None:
    """fn(*args, out=out); under torch.func.vmap, which has no batching rule for out= variants, a copy."""
    if torch._C._functorch.is_batchedtensor(out):
        out.copy_(fn(*args))
    else:
        fn(*args, out=out)


def backward(
    grad_y: Tensor,
    x: Tensor,
    weight: Tensor,
    has_bias: bool,
    ylin: Tensor,
    stats: Optional[PatchStatistics],
    geo: ConvGeometry,
    eps: float,
    center: bool,
    scale: bool,
    needs: tuple[bool, bool, bool],
) -> tuple[Optional[Tensor], Optional[Tensor], Optional[Tensor]]:
    """Gradients for (x, weight, bias).

    `ylin` is the unscaled pre-bias output W . (v - mu*center) of `forward`; `stats` its patch
    statistics, or None to recompute them. With r = rstd (1 when scale is off),
    G_p = mean_i (W^T gy)_i and A_p = mean_i vhat_i (W^T gy)_i = r * sum_m gy_m ylin_m / I,
        dv_i = r (W^T gy)_i  -  center * r G_p  -  scale * r^2 (v_i - mu_p) A_p
    and dx is its col2im: one transposed convolution plus per-group patch terms that use the same
    decomposition as the forward pass, so no cancellation appears here either.
    """
    need_x, need_w, need_b = needs
    if is_plain(center, scale) or x.shape[0] == 0:
        return _convolution_backward(grad_y, x, weight, has_bias, geo, needs)
    own = None  # a path that gives x's and W's gradients itself (the bias' is the same for all)
    if is_native(x, weight, None, geo, center, scale):
        own = _native_depthwise
    elif _pointwise.applies(weight, geo):
        own = _pointwise
    if own is not None:
        gx, gw = own.backward(grad_y, x, weight, geo, eps, center, scale, need_x, need_w)
        return (None if gx is None else in_memory_format_of(gx, x),
                None if gw is None else in_memory_format_of(gw, weight), _bias_gradient(grad_y, x, weight, has_bias, need_b))
    n, c = x.shape[:2]
    spatial = list(x.shape[2:])
    kernel = list(weight.shape[2:])
    out_ch = weight.shape[0]
    g = geo.groups
    cg, mg = c // g, out_ch // g
    n_k = math.prod(kernel)
    out = list(grad_y.shape[2:])
    sdt = statistics_dtype(x.dtype)

    xcg = None
    if stats is None:
        m, xcg, s, q = centred_moments(x, g)
        stats = patch_statistics(m, s, q, cg, kernel, geo, out, eps, scale)
    p_out = math.prod(out)  # explicit sizes, no -1 (see forward)
    gy_b = grad_y.to(sdt).reshape(n * g, mg, p_out)  # (N*G, M/G, P)
    r_b = stats.rstd.reshape(n * g, 1, p_out) if scale else None
    patch_term = (stats.dev if center else stats.patches).reshape(n * g, n_k, p_out)
    # sum_m gy_m ylin_m is taken first, so its temporary is gone before the large buffers below exist.
    dot = torch.linalg.vecdot(gy_b, ylin.to(sdt).view(gy_b.shape), dim=1).unsqueeze(1) if need_x and scale else None

    def conv_grads(s, conv_in, conv_pad, mask):
        return torch.ops.aten.convolution_backward(
            s, conv_in, weight, None, list(geo.stride), conv_pad, list(geo.dilation), False, [0] * geo.ndim, g, mask
        )

    grad_x = grad_w = None
    if need_x or need_w:
        s_b = gy_b * r_b if scale else gy_b
        s = s_b.view(grad_y.shape).to(x.dtype)
        # Two calls, weights first: the centred input that the weight gradient needs is freed before the
        # input gradient (which reads only the input's shape) is allocated: one input-sized buffer less.
        if need_w:
            if xcg is None:
                xcg = _centred(x, stats.m)
            conv_in, conv_pad = _conv_input(xcg.reshape(x.shape).to(x.dtype), geo)
            gw = conv_grads(s, conv_in, conv_pad, [False, True, False])[1]
            del conv_in
            w_patch = torch.bmm(s_b, patch_term.transpose(1, 2)).view(n, out_ch, n_k).sum(0)
            gw = gw.to(sdt).reshape(out_ch, cg, n_k).add_(w_patch.unsqueeze(1))
            grad_w = in_memory_format_of(gw.view(weight.shape).to(weight.dtype), weight)
        xcg = None  # freed here, before the input gradient is allocated
        if need_x:
            shape_in, conv_pad = _conv_input(x, geo)
            gx = conv_grads(s, shape_in, conv_pad, [True, False, False])[0]
            del shape_in, s, s_b
            grad_x = _input_gradient(gx, x, weight, gy_b, dot, stats, r_b, geo, kernel, spatial, out, center, scale)
    return grad_x, grad_w, _bias_gradient(grad_y, x, weight, has_bias, need_b)


def _bias_gradient(grad_y: Tensor, x: Tensor, weight: Tensor, has_bias: bool, need_b: bool) -> Optional[Tensor]:
    if not (need_b and has_bias):
        return None
    return grad_y.to(statistics_dtype(x.dtype)).sum(dim=[0] + list(range(2, grad_y.dim()))).to(weight.dtype)


def _crop_padding(gx: Tensor, geo: ConvGeometry, spatial) -> Tensor:
    """The gradient of a hand-padded input (`_conv_input`, asymmetric pads) back on the input itself."""
    if geo.symmetric:
        return gx
    crop = [slice(None), slice(None)] + [slice(geo.pads[d], geo.pads[d] + spatial[d]) for d in range(geo.ndim)]
    return gx[tuple(crop)].contiguous()


def _convolution_backward(grad_y, x, weight, has_bias, geo: ConvGeometry, needs):
    """Gradients of the plain convolution (center=0, scale=0)."""
    need_x, need_w, need_b = needs
    conv_in, conv_pad = _conv_input(x, geo)
    gx, gw, _ = torch.ops.aten.convolution_backward(
        grad_y.to(x.dtype), conv_in, weight, None, list(geo.stride), conv_pad, list(geo.dilation), False,
        [0] * geo.ndim, geo.groups, [need_x, need_w, False],
    )
    if gx is not None:
        gx = _crop_padding(gx, geo, list(x.shape[2:]))
    return gx, gw, _bias_gradient(grad_y, x, weight, has_bias, need_b)


def _input_gradient(gx, x, weight, gy_b, dot, stats, r_b, geo, kernel, spatial, out, center, scale):
    """Adds the centring and scaling terms of dv to the transposed convolution's gx."""
    n, c = x.shape[:2]
    g = geo.groups
    cg = c // g
    out_ch = weight.shape[0]
    n_k = math.prod(kernel)
    fan_in = cg * n_k
    sdt = statistics_dtype(x.dtype)
    gx = _crop_padding(gx, geo, spatial)
    gx_g = gx.to(sdt).reshape(n, g, cg, *spatial)
    # The per-patch terms (N, G, K, *out), built out of place: under torch.func.vmap an in-place update of
    # an unbatched buffer by batched terms is not allowed.
    per_patch = None
    coeff_x = None
    if center:
        wtot = weight.to(sdt).reshape(g, out_ch // g, fan_in).sum(2)  # (G, M/G)
        mean_grad = torch.bmm(wtot.expand(n, -1, -1).reshape(n * g, 1, out_ch // g), gy_b) / fan_in  # (N*G, 1, P)
        if scale:
            mean_grad *= r_b
        per_patch = mean_grad.view(n, g, 1, *out).neg()  # the same for every k: broadcast below
    if scale:
        # e = r^2 A = r^3 sum_m gy_m ylin_m / I, the weight of (v_i - mu) in dv.
        e = (dot * r_b.pow(3) / fan_in).view(n, g, 1, *out)
        per_patch = torch.mul(e, stats.dev).neg_() if per_patch is None else torch.addcmul(per_patch, e, stats.dev, value=-1)
        coeff_x = _fold(e.expand(n, g, n_k, *out), kernel, geo, spatial)
    gx_g += _fold(per_patch.expand(n, g, n_k, *out), kernel, geo, spatial).unsqueeze(2)
    if coeff_x is not None:
        # x - m again (freed while the convolution gradients were taken): centred before the product, so
        # no cancellation on bright inputs.
        gx_g.addcmul_(coeff_x.unsqueeze(2), _centred(x, stats.m), value=-1)
    return in_memory_format_of(gx_g.view(gx.shape).to(gx.dtype), x)
