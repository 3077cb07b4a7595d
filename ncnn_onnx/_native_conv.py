"""The layer's inference through the onnxruntime CPU kernel's own forward (runtime/layer/conv.cc), called
through ctypes: eager inference (no gradient, and the opaque op under torch.compile or torch.export)
costs what a deployed node costs and gives the deployed model's bits. Training keeps `_algorithm`'s
paths, whose backward needs the forward's intermediate results, except for depthwise layers, whose
native backward recomputes them (`_native_depthwise`).

Used for float32 CPU tensors (see `_native` for the switches).

A layer's weight (an nn.Parameter) is packed for the kernel once and reused while it is unchanged (same
storage, same version counter), as an onnxruntime session packs its initializers once: packing a large W
costs more than running a small map. The packed copy is freed with the parameter.
"""

from __future__ import annotations

import ctypes
import threading
import weakref
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
        ("x", POINTER), ("w", POINTER), ("b", POINTER), ("y", POINTER), ("packed", POINTER),
    ]


_native.declare(_Call, "ncnn_onnx_conv_forward")


def _entry(name: str, argtypes: list, restype):
    """Entry point `name` of the library, typed (the packing entry points take other arguments than the
    one-structure calls `_native.declare` types)."""
    fn = getattr(_native.library(), name)
    fn.argtypes = argtypes
    fn.restype = restype
    return fn


class _Packed:
    """One packed weight (ncnn_onnx_conv_pack). Freed once it is stale (its parameter changed or died)
    and no call is using it: another thread may be running a call with it when it goes stale."""

    def __init__(self, handle: int, source: tuple):
        self.handle = handle
        self.source = source
        self.users = 0
        self.stale = False

    def retire(self) -> None:
        self.stale = True
        self._free_if_unused()

    def done(self) -> None:
        self.users -= 1
        self._free_if_unused()

    def _free_if_unused(self) -> None:
        if self.stale and self.users == 0 and self.handle:
            _entry("ncnn_onnx_conv_release", [ctypes.c_void_p], None)(self.handle)
            self.handle = 0


_lock = threading.Lock()
# id(parameter) -> (a weak reference to it, its _Packed)
_packed: dict[int, tuple] = {}


def _pack(call: _Call) -> int:
    fn = _entry("ncnn_onnx_conv_pack", [ctypes.POINTER(_Call), ctypes.POINTER(ctypes.c_void_p)], ctypes.c_int)
    handle = ctypes.c_void_p()
    _native.check("ncnn_onnx_conv_pack", fn(ctypes.byref(call), ctypes.byref(handle)))
    return handle.value


def _forget(key: int, ref: weakref.ref) -> None:
    with _lock:
        entry = _packed.get(key)
        if entry is not None and entry[0] is ref:
            del _packed[key]
            entry[1].retire()


def _acquire(weight: Tensor, call: _Call) -> Optional[_Packed]:
    """The packed form of a parameter, packed now if it changed since, marked in use (release it with
    done()); None for other tensors."""
    if not isinstance(weight, torch.nn.Parameter) or not weight.is_contiguous():
        return None
    try:
        source = (weight._version, weight.data_ptr(), tuple(weight.shape), call.group)
    except RuntimeError:  # an inference tensor has no version counter
        return None
    key = id(weight)
    with _lock:
        entry = _packed.get(key)
        if entry is None or entry[0]() is not weight:
            ref = weakref.ref(weight)
            weakref.finalize(weight, _forget, key, ref)
            entry = (ref, None)
        packed = entry[1]
        if packed is None or packed.source != source:
            if packed is not None:
                packed.retire()
            packed = _Packed(_pack(call), source)
            _packed[key] = (entry[0], packed)
        packed.users += 1
        return packed


def applies(x: Tensor, weight: Tensor, bias: Optional[Tensor]) -> bool:
    return (
        3 <= x.dim() <= 5 and _native.plain_input(x) and _native.plain(weight) and _native.plain(bias)
        and _native.enabled()
    )


def forward(x: Tensor, weight: Tensor, bias: Optional[Tensor], geo, eps: float, center: bool, scale: bool) -> Tensor:
    """Y (contiguous float32) of NC with the geometry's stride, pads, dilation and groups. The kernel reads
    the contiguous layout: a channels_last input is copied to it first (one pass, far less than the
    layer's own path costs)."""
    parameter = weight
    x = x.detach().contiguous()
    weight = weight.detach().contiguous()
    bias = None if bias is None else bias.detach().contiguous()
    k = geo.ndim
    y = x.new_empty(x.shape[0], weight.shape[0], *geo.output_size(x.shape[2:], weight.shape[2:]))
    if y.numel() == 0:  # an empty batch: nothing to compute (and empty tensors have no data pointer)
        return y
    call = _Call(rank=k, group=geo.groups, epsilon=eps, center=int(center), scale=int(scale),
                 threads=torch.get_num_threads())
    call.x_shape[:k + 2] = list(x.shape)
    call.w_shape[:k + 2] = list(weight.shape)
    call.strides[:k] = list(geo.stride)
    call.dilations[:k] = list(geo.dilation)
    call.pads[:2 * k] = list(geo.pads)
    call.x, call.w, call.b, call.y = pointer(x), pointer(weight), pointer(bias), pointer(y)
    packed = _acquire(parameter, call)
    try:
        call.packed = None if packed is None else packed.handle
        _native.run("ncnn_onnx_conv_forward", call)
    finally:
        if packed is not None:
            with _lock:
                packed.done()
    return y
