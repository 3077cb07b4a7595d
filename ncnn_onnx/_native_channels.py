"""The layer's native per-location channel statistics (runtime/layer/channels.cc), called through ctypes:

- `standardize` / `standardize_backward`, for the pointwise path (`_pointwise`):
  xhat = (x - center * mu) * rstd per group and location, and its backward;
- `centre`, for the general path (`_algorithm`): the channel mean m, x - m and the location moments.

Each is one pass over the input in cache where plain PyTorch ops take several, each with a fresh
input-sized temporary.
"""

from __future__ import annotations

import ctypes
import math
from typing import Optional

import torch
from torch import Tensor

from . import _native
from ._native import POINTER, pointer


class _Call(ctypes.Structure):
    """Mirrors NcnnOnnxChannelsCall (runtime/layer/channels.h)."""

    _fields_ = [
        ("batch", ctypes.c_int64), ("groups", ctypes.c_int64), ("group_channels", ctypes.c_int64),
        ("positions", ctypes.c_int64), ("epsilon", ctypes.c_float), ("center", ctypes.c_int32),
        ("scale", ctypes.c_int32), ("threads", ctypes.c_int32),
        ("x", POINTER), ("out", POINTER), ("grad_out", POINTER), ("grad_x", POINTER),
        ("mean", POINTER), ("residual", POINTER), ("squares", POINTER),
    ]


_native.declare(_Call, "ncnn_onnx_standardize_forward", "ncnn_onnx_standardize_backward", "ncnn_onnx_centre")


def applies(x: Tensor) -> bool:
    """float32 CPU input in the contiguous layout (channels_last inputs reduce along their innermost dim
    in PyTorch, which is fast already)."""
    return _native.plain_input(x) and x.is_contiguous() and _native.enabled()


def _call(x: Tensor, groups: int, eps: float = 0.0, center: bool = True, scale: bool = True) -> _Call:
    call = _Call(
        batch=x.shape[0], groups=groups, group_channels=x.shape[1] // groups, positions=math.prod(x.shape[2:]),
        epsilon=eps, center=int(center), scale=int(scale), threads=torch.get_num_threads(),
    )
    call.x = pointer(x)
    return call


def standardize(x: Tensor, groups: int, eps: float, center: bool, scale: bool) -> Tensor:
    """xhat, x's shape (contiguous float32 x)."""
    x = x.detach()
    xhat = torch.empty_like(x)
    call = _call(x, groups, eps, center, scale)
    call.out = pointer(xhat)
    _native.run("ncnn_onnx_standardize_forward", call)
    return xhat


def standardize_backward(grad_xhat: Tensor, x: Tensor, groups: int, eps: float, center: bool, scale: bool) -> Tensor:
    """The gradient of x, written over grad_xhat (a contiguous float32 buffer the caller owns)."""
    x = x.detach()
    call = _call(x, groups, eps, center, scale)
    call.grad_out = call.grad_x = pointer(grad_xhat)
    _native.run("ncnn_onnx_standardize_backward", call)
    return grad_xhat


def centre(x: Tensor, groups: int, moments: bool = True, centred: bool = True
           ) -> tuple[Tensor, Optional[Tensor], Optional[Tensor], Optional[Tensor]]:
    """(m, x - m, s, q) of contiguous float32 x: m, s, q as (N, G, *spatial), x - m as (N, G, cg, *spatial);
    x - m only with `centred`, s and q only with `moments`."""
    x = x.detach()
    n, c = x.shape[:2]
    maps = (n, groups, *x.shape[2:])
    m = x.new_empty(maps)
    xc = torch.empty_like(x).view(n, groups, c // groups, *x.shape[2:]) if centred else None
    s = x.new_empty(maps) if moments else None
    q = x.new_empty(maps) if moments else None
    call = _call(x, groups)
    call.out, call.mean, call.residual, call.squares = pointer(xc), pointer(m), pointer(s), pointer(q)
    _native.run("ncnn_onnx_centre", call)
    return m, xc, s, q
