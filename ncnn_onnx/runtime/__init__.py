"""ONNX Runtime kernels of ``ncnn_onnx::NormalizedConv``: the custom-op library and session helpers.

    from ncnn_onnx import runtime
    sess = runtime.InferenceSession("model.onnx")                 # CPU kernels registered
    opts = runtime.session_options(intra_op_num_threads=2)        # for onnxruntime.InferenceSession

The library is built by ``pip install .`` (or the editable install ``make test`` runs) and lives next to
this file. Importing this module needs onnxruntime only; it never imports torch.
"""

from __future__ import annotations

import json
import os
import warnings
from pathlib import Path
from typing import Any, Optional, Sequence, Union

import onnxruntime as ort

from .._library import LIBRARY_NAME, find_library, runtime_dirs
from .opset import check_op_version

__all__ = ["LIBRARY_NAME", "get_library_path", "session_options", "has_library", "InferenceSession",
           "cuda_kernels_built", "build_info"]

_BUILD_INFO = "build_info.json"
# Set on session options that carry the library: registering it twice makes onnxruntime fail with
# "Domain already set in registry".
_REGISTERED_KEY = "ncnn_onnx.custom_ops_library"


def _package_dirs() -> list[Path]:
    return runtime_dirs()


def get_library_path() -> str:
    """Absolute path of the custom-op library, for ``SessionOptions.register_custom_ops_library``.

    The environment variable ``NCNN_ONNX_LIBRARY`` overrides the search (e.g. a separate CMake build).
    Raises FileNotFoundError naming where the library was expected when it was not built.
    """
    return find_library(_package_dirs())


def build_info() -> dict:
    """What the library was built with, from the build_info.json beside it ({} when there is none):

    ``cuda``: null for a CPU-only build, else {"version": CUDA "X.Y", "architectures": ["sm_80", ...] (machine
    code), "ptx": ["compute_90", ...] (compiled for newer GPUs on first load), "runtime": "static"};
    ``cuda_option``: how NCNN_ONNX_CUDA resolved (AUTO, ON, OFF) and ``cuda_why_not``: why there is no CUDA;
    ``cpu_backends``: the CPU kernels compiled in (picked at run time by the CPU's features);
    ``static_cxx_runtime``: libstdc++ linked in; ``onnxruntime_header_api`` / ``onnxruntime_min_api``: the C API
    of the headers built against / the oldest the library asks onnxruntime for; ``onnxruntime_headers``: where
    the headers came from.
    """
    library = Path(get_library_path())
    info = library.parent / _BUILD_INFO
    if not info.is_file():
        return {}
    return json.loads(info.read_text())


def cuda_kernels_built() -> bool:
    """Whether the library holds CUDA kernels (see ``build_info()["cuda"]`` for which)."""
    return bool(build_info().get("cuda"))


def session_options(base: Optional[ort.SessionOptions] = None, **kwargs: Any) -> ort.SessionOptions:
    """Session options with the library registered.

    ``base`` is updated in place (and returned) when given, else a new ``SessionOptions`` is made; keyword
    arguments set its attributes, e.g. ``intra_op_num_threads=2``. Registering on options that already
    carry the library is a no-op.
    """
    options = base if base is not None else ort.SessionOptions()
    for name, value in kwargs.items():
        if name.startswith("_") or not hasattr(options, name):
            raise TypeError(f"onnxruntime.SessionOptions has no attribute {name!r}")
        setattr(options, name, value)
    if not has_library(options):
        path = get_library_path()
        options.register_custom_ops_library(path)
        options.add_session_config_entry(_REGISTERED_KEY, path)
    return options


def has_library(options: ort.SessionOptions) -> bool:
    """Whether the library was registered on these options by this module (``session_options`` or
    ``InferenceSession``): every session made from them runs its kernels, not the fallback function."""
    return _is_registered(options)


def _is_registered(options: ort.SessionOptions) -> bool:
    try:
        options.get_session_config_entry(_REGISTERED_KEY)
    except RuntimeError:  # onnxruntime raises when the key is absent
        return False
    return True


ModelLike = Union[str, os.PathLike, bytes, Any]


def InferenceSession(  # noqa: N802 - mirrors onnxruntime.InferenceSession
    model: ModelLike,
    providers: Optional[Sequence[Any]] = None,
    sess_options: Optional[ort.SessionOptions] = None,
    *,
    fuse_activations: bool = True,
    **kwargs: Any,
) -> ort.InferenceSession:
    """An ``onnxruntime.InferenceSession`` with the library registered.

    ``model`` is a path, serialized bytes or an ``onnx.ModelProto``; a model that imports a version of the
    ``ncnn_onnx`` domain other than 1 is refused with ValueError. ``providers`` defaults to
    ``["CPUExecutionProvider"]``. Other keyword arguments set SessionOptions attributes (see
    ``session_options``) on ``sess_options`` or on new options.

    On the CPU provider alone, each NormalizedConv followed by an activation (Relu, LeakyRelu, Clip,
    HardSigmoid, HardSwish, Sigmoid, x * Sigmoid(x)) runs as one node that applies the activation as it
    stores its outputs (``fusion.py``); the model is rewritten in memory, never on disk. Models whose
    weights live in external data files are left as they are, and ``fuse_activations=False`` turns the
    rewrite off.

    ``sess_options`` is used, not copied (onnxruntime's SessionOptions cannot be copied without losing
    config entries, dimension overrides and added initializers): the library is registered on the object
    you pass, so every later session made from it, a plain ``onnxruntime.InferenceSession`` too, runs the
    library instead of the fallback function. Passing options that do not carry the library yet warns
    (UserWarning) for that reason; ``session_options(so)`` registers it on purpose, without the warning.
    """
    if sess_options is not None and not has_library(sess_options):
        warnings.warn(
            "ncnn_onnx.runtime.InferenceSession registers the ncnn_onnx library on the SessionOptions passed as "
            "sess_options (they cannot be copied): every session made from that object from now on, a plain "
            "onnxruntime.InferenceSession too, runs the library instead of the fallback function. Pass "
            "ncnn_onnx.runtime.session_options(so) to register it on purpose, or a fresh SessionOptions per session",
            UserWarning,
            stacklevel=2,
        )
    options = session_options(sess_options, **kwargs)
    if hasattr(model, "SerializeToString"):
        model = model.SerializeToString()
    elif isinstance(model, os.PathLike):
        model = os.fspath(model)
    if not isinstance(model, (str, bytes)):
        raise TypeError(f"model must be a path, bytes or an onnx.ModelProto, got {type(model).__name__}")
    check_op_version(model)
    providers = list(providers or ["CPUExecutionProvider"])
    if fuse_activations and all(_provider_name(p) == "CPUExecutionProvider" for p in providers):
        model = _fused(model)
    return ort.InferenceSession(model, options, providers=providers)


def _provider_name(provider: Any) -> str:
    return provider[0] if isinstance(provider, (tuple, list)) else str(provider)


def _fused(model: Union[str, bytes]) -> Union[str, bytes]:
    """The model with its activations fused (fusion.py), as bytes; the model itself where nothing fuses,
    where it is not a model onnx can parse (onnxruntime then says what is wrong with it) or where its
    weights live in external files (bytes could not point onnxruntime at them)."""
    import onnx
    from google.protobuf.message import DecodeError

    from .fusion import fuse_activations

    try:
        proto = onnx.load(model, load_external_data=False) if isinstance(model, str) else onnx.load_from_string(model)
    except (DecodeError, OSError, ValueError):
        return model
    if any(t.data_location == onnx.TensorProto.EXTERNAL for t in proto.graph.initializer):
        return model
    if fuse_activations(proto) == 0:
        return model
    return proto.SerializeToString()
