"""The layer's native depthwise backward (runtime/layer/depthwise.cc), called through ctypes.

A depthwise NC patch is K values of one channel, so `_algorithm`'s decomposition has nothing to factor
out and builds K-times-the-input patch maps; this kernel reads each patch straight from the input and
recomputes the statistics, so training saves only x and W. The forward, training included, is the
deployed CPU kernel's (`_native_conv`).

Used for float32 CPU tensors of layers with one input channel per group, outside torch.func transforms
(vmap and grad wrap tensors that have no data pointer); everything else takes `_algorithm`'s path
(see `_native` for the switches).
"""

from __future__ import annotations

import ctypes
from typing import Optional

import torch
from torch import Tensor

from . import _native
from ._native import POINTER as _POINTER, pointer as _pointer

_I64x3 = ctypes.c_int64 * 3


class _Call(ctypes.Structure):
    """Mirrors NcnnOnnxDepthwiseCall (runtime/layer/depthwise.h)."""

    _fields_ = [
        ("batch", ctypes.c_int64), ("channels", ctypes.c_int64), ("multiplier", ctypes.c_int64),
        ("rank", ctypes.c_int64), ("input", _I64x3), ("output", _I64x3), ("kernel", _I64x3),
        ("stride", _I64x3), ("dilation", _I64x3), ("pad_begin", _I64x3),
        ("epsilon", ctypes.c_float), ("center", ctypes.c_int32), ("scale", ctypes.c_int32),
        ("threads", ctypes.c_int32),
        ("x", _POINTER), ("weight", _POINTER), ("grad_y", _POINTER), ("grad_x", _POINTER), ("grad_weight", _POINTER),
    ]


_native.declare(_Call, "ncnn_onnx_depthwise_backward")


def applies(x: Tensor, weight: Tensor, bias: Optional[Tensor], groups: int, center: bool, scale: bool) -> bool:
    """Whether the native kernels take this call (see the module doc)."""
    return (
        groups == x.shape[1] and weight.shape[1] == 1 and (center or scale)
        and 3 <= x.dim() <= 5 and _native.plain_input(x) and _native.plain(weight) and _native.plain(bias)
        and _native.enabled()
    )


def _call(x: Tensor, weight: Tensor, out_size, geo, eps: float, center: bool, scale: bool) -> _Call:
    k = geo.ndim
    call = _Call(
        batch=x.shape[0], channels=x.shape[1], multiplier=weight.shape[0] // x.shape[1], rank=k,
        epsilon=eps, center=int(center), scale=int(scale), threads=torch.get_num_threads(),
    )
    for name, values in (("input", x.shape[2:]), ("output", out_size), ("kernel", weight.shape[2:]),
                         ("stride", geo.stride), ("dilation", geo.dilation), ("pad_begin", geo.pads[:k])):
        getattr(call, name)[:k] = [int(v) for v in values]
    return call


def backward(grad_y: Tensor, x: Tensor, weight: Tensor, geo, eps: float, center: bool, scale: bool,
             need_x: bool, need_w: bool) -> tuple[Optional[Tensor], Optional[Tensor]]:
    """(grad_x, grad_weight) of depthwise NC, each None where not needed."""
    x = x.detach().contiguous()
    weight = weight.detach().contiguous()
    grad_y = grad_y.detach().to(torch.float32).contiguous()
    grad_x = torch.empty_like(x) if need_x else None
    grad_w = torch.empty_like(weight) if need_w else None
    call = _call(x, weight, grad_y.shape[2:], geo, eps, center, scale)
    call.x, call.weight, call.grad_y = _pointer(x), _pointer(weight), _pointer(grad_y)
    call.grad_x, call.grad_weight = _pointer(grad_x), _pointer(grad_w)
    _native.run("ncnn_onnx_depthwise_backward", call)
    return grad_x, grad_w
