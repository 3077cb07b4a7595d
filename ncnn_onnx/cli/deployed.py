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

    from . import first_line, read_model

    model = read_model(model_path)
    paths, missing = {}, {}
    try:
        runtime.get_library_path()
        library_ok = True
    except (FileNotFoundError, OSError) as exc:
        library_ok = False
        missing[LIBRARY_CPU] = missing[LIBRARY_CUDA] = first_line(exc)
    if library_ok:
        paths[LIBRARY_CPU] = lambda threads=None: runtime.InferenceSession(
            model_path, providers=["CPUExecutionProvider"], sess_options=runtime.session_options(_options(threads))
        )
        if "CUDAExecutionProvider" not in ort.get_available_providers():
            missing[LIBRARY_CUDA] = "this onnxruntime has no CUDAExecutionProvider"
        elif not runtime.cuda_kernels_built():
            missing[LIBRARY_CUDA] = "the library was built without CUDA kernels"
        else:
            paths[LIBRARY_CUDA] = lambda threads=None: runtime.InferenceSession(
                model_path,
                providers=["CUDAExecutionProvider", "CPUExecutionProvider"],
                sess_options=runtime.session_options(_options(threads)),
            )
    if has_fallback_function(model) or not uses_nc(model):
        paths[FALLBACK] = lambda threads=None: ort.InferenceSession(
            model_path, _options(threads), providers=["CPUExecutionProvider"]
        )
    else:
        from ncnn_onnx.export.repair import diagnose

        diagnosis = diagnose(model)
        missing[FALLBACK] = f"no fallback function: {diagnosis.fallback_text}"
        if diagnosis.fallback != "absent":
            missing[FALLBACK] += f" (fix: {diagnosis.fix(model_path)})"
    return paths, missing


def _options(threads: int | None) -> ort.SessionOptions:
    # Every path gets the same options, so that bench compares kernels and not thread settings.
    options = ort.SessionOptions()
    if threads:
        options.intra_op_num_threads = threads
    return options


def open_all(model_path: str, threads: int | None = None) -> tuple[dict, dict]:
    """({label: session} for every path available here, {label: why not}); an error when there is none."""
    from . import CliError

    paths, missing = available(model_path)
    if not paths:
        reasons = "; ".join(f"{label}: {why}" for label, why in missing.items())
        raise CliError(f"no deployed path can run this model here: {reasons}")
    return {label: make(threads=threads) for label, make in paths.items()}, missing


def session(model_path: str, provider: str = "cpu", library: bool = True, threads: int | None = None):
    """One session: with or without our library, on CPU or CUDA."""
    from . import CliError

    paths, missing = available(model_path)
    label = FALLBACK if not library else (LIBRARY_CUDA if provider == "cuda" else LIBRARY_CPU)
    if label not in paths:
        raise CliError(f"cannot run on {label}: {missing[label]}")
    return paths[label](threads=threads)
