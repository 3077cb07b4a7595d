"""The deployed paths an exported model can run on, as onnxruntime sessions (no torch needed)."""

from __future__ import annotations

import onnx
import onnxruntime as ort

LIBRARY_CPU = "library CPU"
LIBRARY_CUDA = "library CUDA"
FALLBACK = "fallback (no library)"


def has_fallback_function(model: onnx.ModelProto) -> bool:
    return any(f.domain == "ncnn_onnx" and f.name == "NormalizedConv" for f in model.functions)


def uses_nc(model: onnx.ModelProto) -> bool:
    return any(n.domain == "ncnn_onnx" for n in model.graph.node)


def available(model_path: str) -> tuple[dict, dict]:
    """({label: session factory}, {label: why it is unavailable}) for this model and machine."""
    from ncnn_onnx import runtime

    model = onnx.load(model_path, load_external_data=False)
    paths, missing = {}, {}
    try:
        runtime.get_library_path()
        library_ok = True
    except (FileNotFoundError, OSError) as exc:
        library_ok = False
        missing[LIBRARY_CPU] = missing[LIBRARY_CUDA] = str(exc).splitlines()[0]
    if library_ok:
        paths[LIBRARY_CPU] = lambda **kw: runtime.InferenceSession(model_path, providers=["CPUExecutionProvider"], **kw)
        if "CUDAExecutionProvider" not in ort.get_available_providers():
            missing[LIBRARY_CUDA] = "this onnxruntime has no CUDAExecutionProvider"
        elif not runtime.cuda_kernels_built():
            missing[LIBRARY_CUDA] = "the library was built without CUDA kernels"
        else:
            paths[LIBRARY_CUDA] = lambda **kw: runtime.InferenceSession(
                model_path, providers=["CUDAExecutionProvider", "CPUExecutionProvider"], **kw
            )
    if has_fallback_function(model) or not uses_nc(model):
        paths[FALLBACK] = lambda **kw: _plain_session(model_path, **kw)
    else:
        missing[FALLBACK] = "the model was exported without the fallback function (--no-fallback)"
    return paths, missing


def _plain_session(model_path: str, threads: int | None = None) -> ort.InferenceSession:
    options = ort.SessionOptions()
    if threads:
        options.intra_op_num_threads = threads
    return ort.InferenceSession(model_path, options, providers=["CPUExecutionProvider"])


def session(model_path: str, provider: str = "cpu", library: bool = True, threads: int | None = None):
    """One session: with or without our library, on CPU or CUDA."""
    from . import CliError

    paths, missing = available(model_path)
    label = FALLBACK if not library else (LIBRARY_CUDA if provider == "cuda" else LIBRARY_CPU)
    if label not in paths:
        raise CliError(f"cannot run on {label}: {missing[label]}")
    return paths[label](threads=threads)
