"""The layer's native channel standardization (runtime/layer/standardize.cc), called through ctypes by
the pointwise path (`_pointwise`): xhat = (x - center * mu) * rstd per group and location, and its
backward, each one pass over the input in cache where plain PyTorch ops take about nine."""

from __future__ import annotations

import ctypes

import torch
from torch import Tensor

from . import _native
from ._native import POINTER, pointer


class _Call(ctypes.Structure):
    """Mirrors NcnnOnnxStandardizeCall (runtime/layer/standardize.h)."""

    _fields_ = [
        ("batch", ctypes.c_int64), ("groups", ctypes.c_int64), ("group_channels", ctypes.c_int64),
        ("positions", ctypes.c_int64), ("epsilon", ctypes.c_float), ("center", ctypes.c_int32),
        ("scale", ctypes.c_int32), ("threads", ctypes.c_int32),
        ("x", POINTER), ("xhat", POINTER), ("grad_xhat", POINTER), ("grad_x", POINTER),
    ]


_native.declare(_Call, "ncnn_onnx_standardize_forward", "ncnn_onnx_standardize_backward")


def applies(x: Tensor) -> bool:
    """float32 CPU input in the contiguous layout (channels_last inputs reduce along their innermost dim
    in PyTorch, which is fast already)."""
    return _native.plain(x) and x.is_contiguous() and _native.enabled()


def _call(x: Tensor, groups: int, eps: float, center: bool, scale: bool) -> _Call:
    call = _Call(
        batch=x.shape[0], groups=groups, group_channels=x.shape[1] // groups, positions=x[0, 0].numel(),
        epsilon=eps, center=int(center), scale=int(scale), threads=torch.get_num_threads(),
    )
    call.x = pointer(x)
    return call


def forward(x: Tensor, groups: int, eps: float, center: bool, scale: bool) -> Tensor:
    """xhat, x's shape (contiguous float32 x)."""
    x = x.detach()
    xhat = torch.empty_like(x)
    call = _call(x, groups, eps, center, scale)
    call.xhat = pointer(xhat)
    _native.run("ncnn_onnx_standardize_forward", call)
    return xhat


def backward(grad_xhat: Tensor, x: Tensor, groups: int, eps: float, center: bool, scale: bool) -> Tensor:
    """The gradient of x, written over grad_xhat (a contiguous float32 buffer the caller owns)."""
    x = x.detach()
    call = _call(x, groups, eps, center, scale)
    call.grad_xhat = call.grad_x = pointer(grad_xhat)
    _native.run("ncnn_onnx_standardize_backward", call)
    return grad_xhat
