"""Where the native library (libncnn_onnx_ops.so) is: shared by the onnxruntime helpers
(`ncnn_onnx.runtime`) and the PyTorch layer's native kernels (`ncnn_onnx._native_depthwise`).

Imports neither onnxruntime nor torch, so either side can use it without the other.
"""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path
from typing import Optional, Sequence

LIBRARY_NAME = "libncnn_onnx_ops.so"


def runtime_dirs() -> list[Path]:
    """The folders of the `ncnn_onnx.runtime` package, where the build installs the library. An editable
    install splits the package (sources here, built files in the install tree); its search path lists both.
    Found without importing the package (which would import onnxruntime)."""
    spec = importlib.util.find_spec("ncnn_onnx.runtime")
    here = Path(__file__).resolve().parent / "runtime"
    dirs = [Path(p) for p in (spec.submodule_search_locations or [])] if spec else []
    return dirs if here in [d.resolve() for d in dirs] else [here, *dirs]


def find_library(dirs: Optional[Sequence[Path]] = None) -> str:
    """Absolute path of the library. The environment variable ``NCNN_ONNX_LIBRARY`` overrides the search
    (e.g. a separate CMake build). Raises FileNotFoundError naming where it was expected when it was not
    built."""
    override = os.environ.get("NCNN_ONNX_LIBRARY")
    if override:
        path = Path(override)
        if not path.is_file():
            raise FileNotFoundError(f"NCNN_ONNX_LIBRARY={override} is not a file")
        return str(path.resolve())
    candidates = [Path(d) / LIBRARY_NAME for d in (runtime_dirs() if dirs is None else dirs)]
    for path in candidates:
        if path.is_file():
            return str(path.resolve())
    expected = " or ".join(str(p) for p in candidates)
    raise FileNotFoundError(
        f"the ncnn_onnx custom-op library was not built: expected {expected}. Build it with "
        "`pip install .` (or `pip install --no-build-isolation -e .`) from the source tree; it needs a C++ "
        "compiler and CMake."
    )
