"""The layer's inference through the onnxruntime CPU kernel's own forward (runtime/layer/conv.cc), called
through ctypes: eager inference (no gradient, and the opaque op under torch.compile or torch.export)
costs what a deployed node costs and gives the deployed model's bits. Training keeps `_algorithm`'s
paths, whose backward needs the forward's intermediate results.

Used for float32 CPU tensors in the contiguous layout (see `_native` for the switches).
"""

from __future__ import annotations

import ctypes
from typing import Optional

import torch
from torch import Tensor

from . import _native
from ._native import POINTER, pointer

_I64x3 = ctypes.c_int64 * 3
_I64x5 = ctypes.c_int64 * 5
_I64x6 = ctypes.c_int64 * 6


class _Call(ctypes.Structure):
    """Mirrors NcnnOnnxConvCall (runtime/layer/conv.h)."""

    _fields_ = [
        ("rank", ctypes.c_int64), ("x_shape", _I64x5), ("w_shape", _I64x5), ("strides", _I64x3),
        ("dilations", _I64x3), ("pads", _I64x6), ("group", ctypes.c_int64), ("epsilon", ctypes.c_float),
        ("center", ctypes.c_int32), ("scale", ctypes.c_int32), ("threads", ctypes.c_int32),
        ("x", POINTER), ("w", POINTER), ("b", POINTER), ("y", POINTER),
    ]


_native.declare(_Call, "ncnn_onnx_conv_forward")


def applies(x: Tensor, weight: Tensor, bias: Optional[Tensor]) -> bool:
    return (
        3 <= x.dim() <= 5 and _native.plain(x) and _native.plain(weight) and _native.plain(bias)
        and x.is_contiguous() and _native.enabled()
    )


def forward(x: Tensor, weight: Tensor, bias: Optional[Tensor], geo, eps: float, center: bool, scale: bool) -> Tensor:
    """Y (contiguous float32) of NC with the geometry's stride, pads, dilation and groups."""
    x = x.detach()
    weight = weight.detach().contiguous()
    bias = None if bias is None else bias.detach().contiguous()
    k = geo.ndim
    y = x.new_empty(x.shape[0], weight.shape[0], *geo.output_size(x.shape[2:], weight.shape[2:]))
    call = _Call(rank=k, group=geo.groups, epsilon=eps, center=int(center), scale=int(scale),
                 threads=torch.get_num_threads())
    call.x_shape[:k + 2] = list(x.shape)
    call.w_shape[:k + 2] = list(weight.shape)
    call.strides[:k] = list(geo.stride)
    call.dilations[:k] = list(geo.dilation)
    call.pads[:2 * k] = list(geo.pads)
    call.x, call.w, call.b, call.y = pointer(x), pointer(weight), pointer(bias), pointer(y)
    _native.run("ncnn_onnx_conv_forward", call)
    return y
