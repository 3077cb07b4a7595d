"""The two PyTorch entry points to the NC math.

- `NormalizedConvFunction`: the training path. Saves x, the pre-bias output and the small patch
  statistics, and runs the analytic backward of `_algorithm.backward` (no k^2-times buffers).
- `torch.ops.ncnn_onnx.normalized_conv`: an opaque `torch.library` op used for inference and export.
  It has a fake kernel so `torch.export` and `torch.compile` see output shapes, and it is the single
  node that `ncnn_onnx.export` lowers to `ncnn_onnx::NormalizedConv`. Its own autograd formula
  (recomputing the forward) lets it train too, should someone export or compile a training graph.

Only `ncnn_onnx.export` lowers the op to ONNX. Any other ONNX export that captures it (the TorchScript
exporter, or torch.onnx's dynamo exporter called directly) is refused with an error that says so.
"""

from __future__ import annotations

import contextlib
import threading
from typing import Iterator, Optional

from ._extras import require

require("torch", "ncnn_onnx")

import torch
from torch import Tensor

from . import _algorithm
from ._algorithm import ConvGeometry


# Set while ncnn_onnx.export runs torch.onnx.export: the one ONNX export that lowers the op faithfully.
_export_state = threading.local()

_WRONG_EXPORTER = (
    "{how} cannot write NormalizedConv layers: use ncnn_onnx.export.export(model, args, f) (or the command "
    "`ncnn-onnx export`), which writes one ncnn_onnx::NormalizedConv node per layer and the standard-op fallback "
    "function, so that the file runs with the ncnn_onnx library, in plain onnxruntime and in onnx.reference"
)


@contextlib.contextmanager
def ncnn_onnx_export() -> Iterator[None]:
    """Marks the calling thread as running ncnn_onnx.export (which knows how to lower the op)."""
    depth = getattr(_export_state, "depth", 0)
    _export_state.depth = depth + 1
    try:
        yield
    finally:
        _export_state.depth = depth


def _refuse_foreign_onnx_export(how: str) -> None:
    """Raises ExportError when an ONNX exporter other than ncnn_onnx.export is capturing the op: the
    TorchScript exporter would write a wrong graph without a word, torch.onnx's dynamo exporter has no
    translation for it."""
    if getattr(_export_state, "depth", 0) or not torch.onnx.is_in_onnx_export():
        return
    from .export.errors import ExportError

    raise ExportError(_WRONG_EXPORTER.format(how=how))


def _geometry(stride, pads, dilation, groups) -> ConvGeometry:
    return ConvGeometry(tuple(stride), tuple(pads), tuple(dilation), int(groups))


class NormalizedConvFunction(torch.autograd.Function):
    """The training path, in the `setup_context` style that torch.func transforms (vmap, grad,
    functional_call, and Opacus' per-sample gradients built on them) require.

    `forward` may not touch ctx in that style, so it returns what backward needs as extra outputs,
    (y, ylin, *statistics), marked non-differentiable; `apply` hands back y alone. Its vmap rule is
    generated (`generate_vmap_rule`): forward and backward are plain PyTorch ops, which vmap batches.
    """

    generate_vmap_rule = True

    @staticmethod
    def forward(x, weight, bias, geo: ConvGeometry, eps: float, center: bool, scale: bool):
        y, ylin, stats = _algorithm.forward(x, weight, bias, geo, eps, center, scale)
        if stats is None:  # `_algorithm.recomputes_statistics`: backward needs x and W only
            return (y,)
        # Keep the patch statistics only while they are no larger than x (not for depthwise layers,
        # whose patch maps are K times the input): memory stays O(input), else recompute.
        if center:
            stats.patches = None  # only the uncentred product needs the raw patches
        if stats.nbytes() > x.numel() * x.element_size():
            return y, ylin
        return (y, ylin, *_stat_tensors(stats, center, scale))

    @staticmethod
    def setup_context(ctx, inputs, output):
        x, weight, bias, geo, eps, center, scale = inputs
        ctx.args = (geo, eps, center, scale)
        ctx.has_bias = bias is not None
        ctx.keep_stats = len(output) > 2
        ctx.mark_non_differentiable(*output[1:])
        # The extra outputs never get a gradient: without this, autograd would hand backward zero-filled
        # tensors of their sizes (ylin is as large as y), 20% more peak memory on a training step.
        ctx.set_materialize_grads(False)
        ctx.save_for_backward(x, weight, *output[1:])

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_y, *_unused):
        if grad_y is None:  # grads are not materialized (setup_context): y took no part in the loss
            return None, None, None, None, None, None, None
        x, weight, *rest = ctx.saved_tensors
        geo, eps, center, scale = ctx.args
        ylin = rest[0] if rest else None
        stats = _stats_from_tensors(rest[1:], center, scale) if ctx.keep_stats else None
        gx, gw, gb = _algorithm.backward(
            grad_y.contiguous(), x, weight, ctx.has_bias, ylin, stats, *ctx.args, ctx.needs_input_grad[:3]
        )
        return gx, gw, gb, None, None, None, None


def _stat_tensors(stats: _algorithm.PatchStatistics, center: bool, scale: bool) -> tuple:
    """The statistics as a flat tuple of tensors: m, dev, then patches (center off), rstd (scale on)."""
    return (stats.m, stats.dev) + (() if center else (stats.patches,)) + ((stats.rstd,) if scale else ())


def _stats_from_tensors(tensors, center: bool, scale: bool) -> _algorithm.PatchStatistics:
    m, dev, *rest = tensors
    patches = None if center else rest.pop(0)
    return _algorithm.PatchStatistics(m=m, patches=patches, dev=dev, rstd=rest[0] if scale else None)


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
    _refuse_foreign_onnx_export("torch.onnx.export called directly (the dynamo exporter)")
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
    if not _algorithm.recomputes_statistics(x, weight, bias, geo, center, scale):
        _, ylin, stats = _algorithm.forward(x, weight, bias, *ctx.args)
    gx, gw, gb = _algorithm.backward(
        grad_y.contiguous(), x, weight, ctx.has_bias, ylin, stats, *ctx.args, ctx.needs_input_grad[:3]
    )
    return gx, gw, gb, None, None, None, None, None, None, None


normalized_conv.register_autograd(_op_backward, setup_context=_setup_context)


def apply(x, weight, bias, geo: ConvGeometry, eps: float, center: bool, scale: bool) -> Tensor:
    """Dispatch: the opaque op while exporting or tracing (torch.jit.trace records it as one node, whose
    registered autograd formula keeps the traced model trainable) or when no gradient is needed, else the
    training path. The TorchScript ONNX exporter traces too, and is refused (it cannot write the op)."""
    if torch.jit.is_tracing():
        _refuse_foreign_onnx_export("torch.onnx.export(..., dynamo=False) (the TorchScript exporter)")
    wants_grad = torch.is_grad_enabled() and (
        x.requires_grad or weight.requires_grad or (bias is not None and bias.requires_grad)
    )
    # Under torch.compile the op stays opaque too (its registered autograd formula trains it): traced
    # through, the training path's views gave Inductor symbolic strides it failed on ("Invalid ranges")
    # once a new input size made it recompile with dynamic shapes.
    if torch.compiler.is_exporting() or torch.compiler.is_compiling() or torch.jit.is_tracing() or not wants_grad:
        return torch.ops.ncnn_onnx.normalized_conv(
            x, weight, bias, list(geo.stride), list(geo.pads), list(geo.dilation), geo.groups,
            eps, center, scale,
        )
    return NormalizedConvFunction.apply(x, weight, bias, geo, eps, center, scale)[0]
