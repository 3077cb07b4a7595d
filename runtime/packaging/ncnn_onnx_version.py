"""The package version for scikit-build-core (pyproject.toml, tool.scikit-build.metadata.version).

A wheel's version is ncnn_onnx.__version__ for a CPU-only build and carries the local label +cuXY when the
library holds CUDA kernels compiled with CUDA X.Y (0.1.0+cu130), so the two kinds are told apart by name,
by `pip list` and by `pip install "ncnn_onnx==0.1.0"` (which takes only the unlabelled CPU build, the one
a package index accepts).

scikit-build-core asks for the version before CMake runs, so the CUDA decision is made here, from the
environment variable NCNN_ONNX_CUDA (AUTO, the default: when an nvcc is found; ON: an nvcc is required;
OFF: never), and CMakeLists.txt obeys the label. The nvcc found here is handed to CMake through CUDACXX, so
both use the same one.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
MODES = ("AUTO", "ON", "OFF")


def base_version() -> str:
    text = (ROOT / "ncnn_onnx" / "__init__.py").read_text(encoding="utf-8")
    match = re.search(r'^__version__ = "([^"]+)"$', text, re.M)
    if not match:
        raise RuntimeError("ncnn_onnx/__init__.py has no __version__ = \"...\" line")
    return match.group(1)


def find_nvcc() -> str | None:
    """CUDACXX, else nvcc on PATH, else the toolkit's usual place."""
    given = os.environ.get("CUDACXX")
    if given:
        return given
    return shutil.which("nvcc") or next(
        (str(p) for p in (Path("/usr/local/cuda/bin/nvcc"),) if p.is_file() and os.access(p, os.X_OK)), None)


def nvcc_release(nvcc: str) -> tuple[int, int] | None:
    """(major, minor) of `nvcc --version`, or None when it does not run."""
    try:
        out = subprocess.run([nvcc, "--version"], capture_output=True, text=True, timeout=60).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    match = re.search(r"release (\d+)\.(\d+)", out)
    return (int(match.group(1)), int(match.group(2))) if match else None


def cuda_label() -> str:
    """"" for a CPU-only build, "cuXY" for one with CUDA kernels; raises when NCNN_ONNX_CUDA=ON cannot be met."""
    mode = os.environ.get("NCNN_ONNX_CUDA", "AUTO").strip().upper() or "AUTO"
    if mode not in MODES:
        raise ValueError(f"NCNN_ONNX_CUDA must be AUTO, ON or OFF, got {os.environ['NCNN_ONNX_CUDA']!r}")
    if mode == "OFF" or not any((ROOT / "runtime" / "cuda").glob("*.cu")):
        return ""
    nvcc = find_nvcc()
    release = nvcc_release(nvcc) if nvcc else None
    if release is None:
        if mode == "ON":
            where = f"{nvcc} does not run" if nvcc else "no nvcc (CUDACXX, PATH, /usr/local/cuda/bin)"
            raise RuntimeError(f"NCNN_ONNX_CUDA=ON but {where}: install the CUDA toolkit, or build the CPU "
                               "kernels only with NCNN_ONNX_CUDA=OFF")
        return ""
    os.environ["CUDACXX"] = nvcc
    return f"cu{release[0]}{release[1]}"


def dynamic_metadata(field, settings=None):
    if field != "version":
        raise ValueError(f"ncnn_onnx_version provides the version only, not {field!r}")
    label = cuda_label()
    return f"{base_version()}+{label}" if label else base_version()
