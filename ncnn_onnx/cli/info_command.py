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

    print(f"ncnn_onnx       {ncnn_onnx.__version__}")
    for dist in ("onnxruntime", "onnxruntime-gpu", "onnx", "onnxscript", "torch"):
        print(f"{dist:<16}{_version(dist)}")
    print(f"providers       {', '.join(ort.get_available_providers())}")
    try:
        print(f"library         {runtime.get_library_path()}")
        cuda = "built in" if runtime.cuda_kernels_built() else "not built (no CUDA compiler at build time)"
        print(f"CUDA kernels    {cuda}")
    except (FileNotFoundError, OSError) as exc:
        print(f"library         not available: {first_line(exc)}")
    return 0
