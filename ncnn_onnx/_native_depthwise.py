"""The layer's native depthwise kernels (runtime/layer/depthwise.cc), called through ctypes.

A depthwise NC patch is K values of one channel, so `_algorithm`'s decomposition has nothing to factor
out and builds K-times-the-input patch maps; these kernels read each patch straight from the input,
forward and backward (the backward recomputes the statistics, so training saves only x and W).

Used for float32 CPU tensors of layers with one input channel per group, outside torch.func transforms
(vmap and grad wrap tensors that have no data pointer); everything else takes `_algorithm`'s path.
`NCNN_ONNX_LAYER_NATIVE=0` turns them off.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import threading
from typing import Iterator, Optional

import torch
from torch import Tensor

from ._library import find_library

_I64x3 = ctypes.c_int64 * 3
_POINTER = ctypes.c_void_p  # data pointers as plain addresses (ctypes.cast would build a reference cycle per call)


class _Call(ctypes.Structure):
    """Mirrors NcnnOnnxDepthwiseCall (runtime/layer/depthwise.h)."""

    _fields_ = [
        ("batch", ctypes.c_int64), ("channels", ctypes.c_int64), ("multiplier", ctypes.c_int64),
        ("rank", ctypes.c_int64), ("input", _I64x3), ("output", _I64x3), ("kernel", _I64x3),
        ("stride", _I64x3), ("dilation", _I64x3), ("pad_begin", _I64x3),
        ("epsilon", ctypes.c_float), ("center", ctypes.c_int32), ("scale", ctypes.c_int32),
        ("threads", ctypes.c_int32),
        ("x", _POINTER), ("weight", _POINTER), ("bias", _POINTER), ("y", _POINTER),
        ("grad_y", _POINTER), ("grad_x", _POINTER), ("grad_weight", _POINTER),
    ]


_lock = threading.Lock()
_lib: Optional[ctypes.CDLL] = None
_load_failed = False
_disabled = threading.local()


def _library() -> Optional[ctypes.CDLL]:
    """The loaded library, or None where it was not built (the layer then uses its PyTorch path)."""
    global _lib, _load_failed
    if _lib is not None or _load_failed:
        return _lib
    with _lock:
        if _lib is None and not _load_failed:
            try:
                lib = ctypes.CDLL(find_library())
                for name in ("ncnn_onnx_depthwise_forward", "ncnn_onnx_depthwise_backward"):
                    fn = getattr(lib, name)
                    fn.argtypes = [ctypes.POINTER(_Call)]
                    fn.restype = ctypes.c_int
                lib.ncnn_onnx_depthwise_error.argtypes = [ctypes.c_int]
                lib.ncnn_onnx_depthwise_error.restype = ctypes.c_char_p
                _lib = lib
            except (OSError, AttributeError):
                _load_failed = True
    return _lib


@contextlib.contextmanager
def disabled() -> Iterator[None]:
    """The PyTorch path for every layer, in this thread (tests compare the two paths)."""
    before = getattr(_disabled, "on", False)
    _disabled.on = True
    try:
        yield
    finally:
        _disabled.on = before


def _plain(t: Optional[Tensor]) -> bool:
    return t is None or (
        t.device.type == "cpu" and t.dtype == torch.float32 and t.layout == torch.strided
        and not torch._C._functorch.is_functorch_wrapped_tensor(t)
    )


def applies(x: Tensor, weight: Tensor, bias: Optional[Tensor], groups: int, center: bool, scale: bool) -> bool:
    """Whether the native kernels take this call (see the module doc)."""
    return (
        groups == x.shape[1] and weight.shape[1] == 1 and (center or scale)
        and 3 <= x.dim() <= 5 and _plain(x) and _plain(weight) and _plain(bias)
        and not getattr(_disabled, "on", False) and os.environ.get("NCNN_ONNX_LAYER_NATIVE", "1") != "0"
        and _library() is not None
    )


def _pointer(t: Optional[Tensor]) -> Optional[int]:
    return None if t is None else t.data_ptr()


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


def _run(fn_name: str, call: _Call) -> None:
    lib = _library()
    status = getattr(lib, fn_name)(ctypes.byref(call))
    if status != 0:
        raise RuntimeError(f"{fn_name}: {lib.ncnn_onnx_depthwise_error(status).decode()}")


def forward(x: Tensor, weight: Tensor, bias: Optional[Tensor], geo, eps: float, center: bool, scale: bool) -> Tensor:
    """Y (contiguous, float32) of depthwise NC."""
    x = x.detach().contiguous()
    weight = weight.detach().contiguous()
    bias = None if bias is None else bias.detach().contiguous()
    out_size = geo.output_size(x.shape[2:], weight.shape[2:])
    y = x.new_empty(x.shape[0], weight.shape[0], *out_size)
    call = _call(x, weight, out_size, geo, eps, center, scale)
    call.x, call.weight, call.bias, call.y = _pointer(x), _pointer(weight), _pointer(bias), _pointer(y)
    _run("ncnn_onnx_depthwise_forward", call)
    return y


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
    _run("ncnn_onnx_depthwise_backward", call)
    return grad_x, grad_w
