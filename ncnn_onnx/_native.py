"""The layer's native kernels (runtime/layer/), loaded through ctypes: what `_native_conv`,
`_native_depthwise` and `_native_channels` share. The library is the onnxruntime custom-op library itself; loading it needs
neither onnxruntime nor a running session.

The native kernels take float32 CPU tensors outside torch.func transforms (vmap and grad wrap tensors
that have no data pointer); everything else takes the layer's PyTorch path, as does every call while
`NCNN_ONNX_LAYER_NATIVE=0` is set, inside `disabled()`, or where the library was not built.
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

POINTER = ctypes.c_void_p  # data pointers as plain addresses (ctypes.cast would build a reference cycle per call)

# Entry points and the ctypes structure each takes.
_SIGNATURES: dict[str, type] = {}

_lock = threading.Lock()
_lib: Optional[ctypes.CDLL] = None
_load_failed = False
_disabled = threading.local()


def declare(structure: type, *names: str) -> None:
    """Registers entry points `int name(const structure*)` of the library (typed when it is loaded)."""
    with _lock:
        for name in names:
            _SIGNATURES[name] = structure
            if _lib is not None:
                _type(_lib, name, structure)


def _type(lib: ctypes.CDLL, name: str, structure: type) -> None:
    fn = getattr(lib, name)
    fn.argtypes = [ctypes.POINTER(structure)]
    fn.restype = ctypes.c_int


def library() -> Optional[ctypes.CDLL]:
    """The loaded library, or None where it was not built (the layer then uses its PyTorch path)."""
    global _lib, _load_failed
    if _lib is not None or _load_failed:
        return _lib
    with _lock:
        if _lib is None and not _load_failed:
            try:
                lib = ctypes.CDLL(find_library())
                for name, structure in _SIGNATURES.items():
                    _type(lib, name, structure)
                lib.ncnn_onnx_layer_error.argtypes = [ctypes.c_int]
                lib.ncnn_onnx_layer_error.restype = ctypes.c_char_p
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


def plain(t: Optional[Tensor]) -> bool:
    """A tensor the kernels can read: float32, on the CPU, strided, not wrapped by a torch.func transform."""
    return t is None or (
        t.device.type == "cpu" and t.dtype == torch.float32 and t.layout == torch.strided
        and not torch._C._functorch.is_functorch_wrapped_tensor(t)
    )


def plain_input(x: Tensor) -> bool:
    """`plain`, and not empty: an empty tensor has no data pointer (the PyTorch path handles it)."""
    return x.numel() > 0 and plain(x)


def enabled() -> bool:
    """The native kernels may run (not switched off, library built)."""
    return (
        not getattr(_disabled, "on", False) and os.environ.get("NCNN_ONNX_LAYER_NATIVE", "1") != "0"
        and library() is not None
    )


def pointer(t: Optional[Tensor]) -> Optional[int]:
    return None if t is None else t.data_ptr()


def run(name: str, call: ctypes.Structure) -> None:
    """Calls entry point `name`; a nonzero status becomes a RuntimeError with the library's text for it."""
    check(name, getattr(library(), name)(ctypes.byref(call)))


def check(name: str, status: int) -> None:
    """A nonzero status of entry point `name` as a RuntimeError with the library's text for it."""
    if status != 0:
        raise RuntimeError(f"{name}: {library().ncnn_onnx_layer_error(status).decode()}")
