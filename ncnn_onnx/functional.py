"""Functional Normalized Convolution, with the argument conventions of torch.nn.functional.conv*d.

Every im2col patch (C/groups * prod(kernel) values, zero padding included) is standardized to zero
mean and unit variance before the dot product with the kernel:

    Y[n, m, p] = sum_i W[m, i] * (v_i - mu_p * center) / sqrt(var_p + eps)^scale + B[m]
"""

from __future__ import annotations

from typing import Optional, Union

from ._extras import require

require("torch", "ncnn_onnx.functional")

import torch
from torch import Tensor

from . import _arguments, _op
from ._algorithm import ConvGeometry

__all__ = ["normalized_conv1d", "normalized_conv2d", "normalized_conv3d", "normalized_conv"]

Padding = Union[str, int, tuple]


def normalized_conv(
    input: Tensor,
    weight: Tensor,
    bias: Optional[Tensor] = None,
    stride=1,
    padding: Padding = 0,
    dilation=1,
    groups: int = 1,
    eps: float = 1e-5,
    center: bool = True,
    scale: bool = True,
) -> Tensor:
    """NC of any spatial rank; the rank is taken from `weight` (1, 2 or 3 spatial dims)."""
    ndim = weight.dim() - 2
    if ndim not in (1, 2, 3):
        raise ValueError(
            f"weight must be 3-D, 4-D or 5-D (out_channels, in_channels/groups, *kernel), got shape "
            f"{tuple(weight.shape)}"
        )
    return _normalized_conv(input, weight, bias, stride, padding, dilation, groups, eps, center, scale, ndim)


def normalized_conv1d(input, weight, bias=None, stride=1, padding=0, dilation=1, groups=1,
                      eps=1e-5, center=True, scale=True) -> Tensor:
    """1d NC: input (N, C, L) or (C, L), weight (M, C/groups, k)."""
    return _normalized_conv(input, weight, bias, stride, padding, dilation, groups, eps, center, scale, 1)


def normalized_conv2d(input, weight, bias=None, stride=1, padding=0, dilation=1, groups=1,
                      eps=1e-5, center=True, scale=True) -> Tensor:
    """2d NC: input (N, C, H, W) or (C, H, W), weight (M, C/groups, kh, kw)."""
    return _normalized_conv(input, weight, bias, stride, padding, dilation, groups, eps, center, scale, 2)


def normalized_conv3d(input, weight, bias=None, stride=1, padding=0, dilation=1, groups=1,
                      eps=1e-5, center=True, scale=True) -> Tensor:
    """3d NC: input (N, C, D, H, W) or (C, D, H, W), weight (M, C/groups, kd, kh, kw)."""
    return _normalized_conv(input, weight, bias, stride, padding, dilation, groups, eps, center, scale, 3)


def _normalized_conv(input, weight, bias, stride, padding, dilation, groups, eps, center, scale, ndim):
    for name, t in (("input", input), ("weight", weight), ("bias", bias)):
        if t is not None and not isinstance(t, Tensor):
            raise TypeError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
    unbatched = input.dim() == ndim + 1
    if unbatched:
        input = input.unsqueeze(0)
    stride_t = _arguments.expand("stride", stride, ndim, 1)
    dilation_t = _arguments.expand("dilation", dilation, ndim, 1)
    kernel = tuple(weight.shape[2:]) if weight.dim() == ndim + 2 else (1,) * ndim
    pads = _arguments.resolve_pads(padding, kernel, stride_t, dilation_t)
    _arguments.check_shapes(
        input.shape, weight.shape, None if bias is None else bias.shape, ndim, groups,
        stride_t, pads, dilation_t,
    )
    eps = _arguments.check_eps(eps)
    input, weight, bias = _compute_dtype(input, weight, bias)
    geo = ConvGeometry(stride_t, pads, dilation_t, groups)
    y = _op.apply(input, weight, bias, geo, eps, bool(center), bool(scale))
    return y.squeeze(0) if unbatched else y


def _compute_dtype(input: Tensor, weight: Tensor, bias: Optional[Tensor]):
    """Cast like autocast does for conv; the op then computes its statistics in float32 regardless."""
    device = input.device.type
    if torch.amp.is_autocast_available(device) and torch.is_autocast_enabled(device):
        dtype = torch.get_autocast_dtype(device)
    else:
        if not input.is_floating_point():
            raise TypeError(f"input must be a floating-point tensor, got {input.dtype}")
        if weight.dtype != input.dtype:
            raise TypeError(f"input and weight must have the same dtype, got {input.dtype} and {weight.dtype}")
        if bias is not None and bias.dtype != input.dtype:
            # F.conv*d refuses it too ("Input type (float) and bias type (double) should be the same").
            raise TypeError(f"input and bias must have the same dtype, got {input.dtype} and {bias.dtype}")
        dtype = input.dtype
    input, weight = input.to(dtype), weight.to(dtype)
    if bias is not None:
        bias = bias.to(dtype)
    return input, weight, bias
