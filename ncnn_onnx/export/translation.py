"""How `torch.onnx.export(dynamo=True)` lowers the opaque op `torch.ops.ncnn_onnx.normalized_conv`.

The op already carries resolved arguments (explicit per-side pads in ONNX order, no padding strings),
so the translation is a one-to-one rename into a single `ncnn_onnx::NormalizedConv` node.
"""

from __future__ import annotations

from typing import Optional, Sequence

import torch
from .. import _op  # noqa: F401  (registers torch.ops.ncnn_onnx.normalized_conv)
from onnxscript import values

from .schema import DOMAIN, VERSION, register_schema

# onnxscript validates calls against the registered schema, so it must exist before any translation.
register_schema()
_nc = values.Opset(DOMAIN, VERSION)


def normalized_conv(
    x,
    weight,
    bias=None,
    stride: Sequence[int] = (1,),
    pads: Sequence[int] = (0, 0),
    dilation: Sequence[int] = (1,),
    groups: int = 1,
    eps: float = 1e-5,
    center: bool = True,
    scale: bool = True,
):
    # Every attribute is written, kernel_shape included, so that consumers that need each function
    # attribute on the node (onnx.reference) run the file without knowing the op's defaults.
    return _nc.NormalizedConv(
        x,
        weight,
        bias,
        auto_pad="NOTSET",
        kernel_shape=list(weight.shape[2:]),
        strides=list(stride),
        pads=list(pads),
        dilations=list(dilation),
        group=int(groups),
        epsilon=float(eps),
        center=int(center),
        scale=int(scale),
    )


def translation_table(extra: Optional[dict] = None) -> dict:
    table = {torch.ops.ncnn_onnx.normalized_conv.default: normalized_conv}
    table.update(extra or {})
    return table
