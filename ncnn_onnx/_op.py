"""The two PyTorch entry points to the NC math.

- `NormalizedConvFunction`: the training path. Saves x, the pre-bias output and the small patch
  statistics, and runs the analytic backward of `_algorithm.backward` (no k^2-times buffers).
- `torch.ops.ncnn_onnx.normalized_conv`: an opaque `torch.library` op used for inference and export.
  It has a fake kernel so `torch.export` and `torch.compile` see output shapes, and it is the single
  node that `ncnn_onnx.export` lowers to `ncnn_onnx::NormalizedConv`. Its own autograd formula
  (recomputing the forward) lets it train too, should someone export or compile a training graph.
"""

from __future__ import annotations

from typing import Optional

from ._extras import require

require("torch", "ncnn_onnx")

import torch
from torch import Tensor

from . import _algorithm
from ._algorithm import ConvGeometry


def _geometry(stride, pads, dilation, groups) -> ConvGeometry:
    return ConvGeometry(tuple(stride), tuple(pads), tuple(dilation), int(groups))


class NormalizedConvFunction(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, weight, bias, geo: ConvGeometry, eps: float, center: bool, scale: bool):
        y, ylin, stats = _algorithm.forward(x, weight, bias, geo, eps, center, scale)
        ctx.args = (geo, eps, center, scale)
        ctx.has_bias = bias is not None
        if stats is None:  # a plain convolution (center=0, scale=0): its backward needs x and weight only
            ctx.keep_stats = False
            ctx.save_for_backward(x, weight, None)
            return y
        # Keep the patch statistics only while they are no larger than x (not for depthwise layers,
        # whose patch maps are K times the input): memory stays O(input), else recompute.
        if center:
            stats.patches = None  # only the uncentred product needs the raw patches
        keep = stats.nbytes() <= x.numel() * x.element_size()
        ctx.keep_stats = keep
        extra = (stats.m, stats.patches, stats.dev, stats.rstd) if keep else ()
        ctx.save_for_backward(x, weight, ylin, *extra)
        return y

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_y):
        x, weight, ylin, *extra = ctx.saved_tensors
        stats = _algorithm.PatchStatistics(*extra) if ctx.keep_stats else None
        gx, gw, gb = _algorithm.backward(
            grad_y.contiguous(), x, weight, ctx.has_bias, ylin, stats, *ctx.args, ctx.needs_input_grad[:3]
        )
        return gx, gw, gb, None, None, None, None


@torch.library.custom_op("ncnn_onnx::normalized_conv", mutates_args=())
def normalized_conv(
    x: Tensor,
    weight: Tensor,
    bias: Optional[Tensor],
    stride: list[int],
    pads: list[int],
    dilation: list[int],
    groups: int,
    eps: float,
    center: bool,
    scale: bool,
) -> Tensor:
    """NC with resolved arguments; pads in ONNX order (before..., after...)."""
    geo = _geometry(stride, pads, dilation, groups)
    with torch.no_grad():
        return _algorithm.forward(x, weight, bias, geo, eps, center, scale, for_backward=False)[0]


@normalized_conv.register_fake
def _(x, weight, bias, stride, pads, dilation, groups, eps, center, scale):
    out = _geometry(stride, pads, dilation, groups).output_size(x.shape[2:], weight.shape[2:])
    return x.new_empty(x.shape[0], weight.shape[0], *out)


def _setup_context(ctx, inputs, output):
    x, weight, bias, stride, pads, dilation, groups, eps, center, scale = inputs
    ctx.args = (_geometry(stride, pads, dilation, groups), eps, center, scale)
    ctx.has_bias = bias is not None
    ctx.save_for_backward(x, weight, bias)


def _op_backward(ctx, grad_y):
    x, weight, bias = ctx.saved_tensors
    geo, eps, center, scale = ctx.args
    ylin = stats = None
    if not _algorithm.is_plain(center, scale):  # a plain convolution's backward needs neither
        _, ylin, stats = _algorithm.forward(x, weight, bias, *ctx.args)
    gx, gw, gb = _algorithm.backward(
        grad_y.contiguous(), x, weight, ctx.has_bias, ylin, stats, *ctx.args, ctx.needs_input_grad[:3]
    )
    return gx, gw, gb, None, None, None, None, None, None, None


normalized_conv.register_autograd(_op_backward, setup_context=_setup_context)


def apply(x, weight, bias, geo: ConvGeometry, eps: float, center: bool, scale: bool) -> Tensor:
    """Dispatch: the opaque op while exporting or when no gradient is needed, else the training path."""
    wants_grad = torch.is_grad_enabled() and (
        x.requires_grad or weight.requires_grad or (bias is not None and bias.requires_grad)
    )
    if torch.compiler.is_exporting() or not wants_grad:
        return torch.ops.ncnn_onnx.normalized_conv(
            x, weight, bias, list(geo.stride), list(geo.pads), list(geo.dilation), geo.groups,
            eps, center, scale,
        )
    return NormalizedConvFunction.apply(x, weight, bias, geo, eps, center, scale)
