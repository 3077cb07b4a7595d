"""ncnn-onnx info: versions, the custom-op library, providers, CUDA kernels."""

from __future__ import annotations

from importlib import metadata


def add_arguments(p) -> None:
    del p  # no options


def _version(dist: str) -> str:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return "not installed"


def run(args) -> int:
    import onnxruntime as ort

    import ncnn_onnx
    from ncnn_onnx import runtime

    from . import first_line

    # The installed distribution's version carries the +cuXY label of a CUDA build; __version__ does not.
    installed = _version("ncnn_onnx")
    print(f"{'ncnn_onnx':<18}{installed if installed != 'not installed' else ncnn_onnx.__version__}")
    for dist in ("onnxruntime", "onnxruntime-gpu", "onnx", "onnxscript", "torch", "pillow"):
        print(f"{dist:<18}{_version(dist)}")
    print(f"{'providers':<18}{', '.join(ort.get_available_providers())}")
    try:
        print(f"{'library':<18}{runtime.get_library_path()}")
    except (FileNotFoundError, OSError) as exc:
        print(f"{'library':<18}not available: {first_line(exc)}")
        return 0
    info = runtime.build_info()
    for key, value in describe(info):
        print(f"{key:<18}{value}")
    return 0


def describe(info: dict) -> list[tuple[str, str]]:
    """The library's build_info.json as (field, text) rows."""
    if not info:
        return [("CUDA kernels", "not built (the library has no build_info.json)")]
    rows = []
    if info.get("cpu_backends"):
        rows.append(("CPU kernels", ", ".join(info["cpu_backends"]) + " (the best this CPU runs is used; "
                     "NCNN_ONNX_CPU_ISA caps it)"))
    cuda = info.get("cuda")
    if isinstance(cuda, dict):
        ptx = f" + PTX {', '.join(cuda['ptx'])}" if cuda.get("ptx") else ""
        rows.append(("CUDA kernels", f"built in: CUDA {cuda.get('version', '?')}, "
                     f"{', '.join(cuda.get('architectures', []))}{ptx}, {cuda.get('runtime', '?')} CUDA runtime"))
    elif cuda:  # a build_info.json from before the architectures were recorded
        rows.append(("CUDA kernels", "built in"))
    else:
        rows.append(("CUDA kernels", f"not built ({info.get('cuda_why_not') or 'no CUDA compiler at build time'})"))
    if "static_cxx_runtime" in info:
        rows.append(("C++ runtime", "libstdc++ linked in" if info["static_cxx_runtime"] else "shared libstdc++"))
    if "onnxruntime_min_api" in info:
        minimum = info["onnxruntime_min_api"]
        rows.append(("onnxruntime API", f"needs C API {minimum} (onnxruntime >= 1.{minimum}); built against "
                     f"C API {info.get('onnxruntime_header_api', '?')} headers ({info.get('onnxruntime_headers', '?')})"))
    return rows
