"""How the package is built: the wheel's version says whether it holds CUDA kernels (the in-tree version
provider and CMakeLists.txt agree on NCNN_ONNX_CUDA), ON fails loudly without nvcc, and the installed
library needs no libstdc++ of the machine's."""

from __future__ import annotations

import importlib.util
import json
import os
import pathlib
import shutil
import subprocess
import sys
from importlib import metadata

import pytest

import ncnn_onnx
from ncnn_onnx import runtime

ROOT = pathlib.Path(__file__).resolve().parents[2]


def _provider():
    spec = importlib.util.spec_from_file_location("ncnn_onnx_version", ROOT / "runtime/packaging/ncnn_onnx_version.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _fake_nvcc(folder: pathlib.Path, release: str) -> pathlib.Path:
    nvcc = folder / "nvcc"
    nvcc.write_text(f"#!/bin/sh\necho 'Cuda compilation tools, release {release}, V{release}.1'\n")
    nvcc.chmod(0o755)
    return nvcc


@pytest.fixture
def clean_env(monkeypatch, tmp_path):
    """No CUDACXX, no nvcc on PATH, no toolkit in /usr/local/cuda as far as the provider can tell."""
    monkeypatch.delenv("CUDACXX", raising=False)
    monkeypatch.delenv("NCNN_ONNX_CUDA", raising=False)
    empty = tmp_path / "bin"
    empty.mkdir()
    monkeypatch.setenv("PATH", str(empty))
    provider = _provider()
    monkeypatch.setattr(provider, "find_nvcc", lambda: os.environ.get("CUDACXX") or shutil.which("nvcc"))
    return provider, empty


def test_version_label_follows_ncnn_onnx_cuda(clean_env, monkeypatch):
    provider, bin_dir = clean_env
    base = ncnn_onnx.__version__
    assert provider.dynamic_metadata("version") == base  # AUTO without nvcc: a CPU build, public version
    nvcc = _fake_nvcc(bin_dir, "12.4")
    assert provider.dynamic_metadata("version") == f"{base}+cu124"  # AUTO with nvcc
    assert os.environ["CUDACXX"] == str(nvcc)  # CMake gets the same nvcc
    monkeypatch.setenv("NCNN_ONNX_CUDA", "off")
    assert provider.dynamic_metadata("version") == base
    monkeypatch.setenv("NCNN_ONNX_CUDA", "ON")
    assert provider.dynamic_metadata("version") == f"{base}+cu124"
    monkeypatch.setenv("NCNN_ONNX_CUDA", "maybe")
    with pytest.raises(ValueError, match="NCNN_ONNX_CUDA must be AUTO, ON or OFF"):
        provider.dynamic_metadata("version")


def test_cuda_on_without_nvcc_fails_loudly(clean_env, monkeypatch):
    provider, _ = clean_env
    monkeypatch.setenv("NCNN_ONNX_CUDA", "ON")
    with pytest.raises(RuntimeError, match=r"NCNN_ONNX_CUDA=ON but no nvcc .*NCNN_ONNX_CUDA=OFF"):
        provider.dynamic_metadata("version")
    monkeypatch.setenv("CUDACXX", "/nonexistent/nvcc")
    with pytest.raises(RuntimeError, match="NCNN_ONNX_CUDA=ON but /nonexistent/nvcc does not run"):
        provider.dynamic_metadata("version")


def test_installed_version_matches_the_library():
    """The editable install `make test` made: its version's label and build_info.json tell the same story."""
    try:
        version = metadata.version("ncnn_onnx")
    except metadata.PackageNotFoundError:
        pytest.skip("ncnn_onnx is not installed as a distribution here")
    info = runtime.build_info()
    if info.get("cuda"):
        assert version == f"{ncnn_onnx.__version__}+cu{info['cuda']['version'].replace('.', '')}"
        assert info["cuda"]["architectures"] and info["cuda"]["runtime"] == "static"
    else:
        assert version == ncnn_onnx.__version__
        assert info["cuda_why_not"]
    assert info["cuda_option"] in ("AUTO", "ON", "OFF")
    assert "portable" in info["cpu_backends"]
    assert info["onnxruntime_min_api"] == 18 and info["onnxruntime_header_api"] >= 18


def test_library_needs_no_libstdcxx_from_the_machine():
    readelf = shutil.which("readelf")
    if readelf is None:
        pytest.skip("readelf (binutils) not found")
    info = runtime.build_info()
    if not info.get("static_cxx_runtime"):
        pytest.skip("this build links the shared libstdc++ (NCNN_ONNX_STATIC_CXX_RUNTIME=OFF or not available)")
    library = runtime.get_library_path()
    dynamic = subprocess.run([readelf, "-dW", library], capture_output=True, text=True, check=True).stdout
    needed = [line.split("[")[1].rstrip("]") for line in dynamic.splitlines() if "(NEEDED)" in line]
    assert not [n for n in needed if n.startswith(("libstdc++", "libgcc_s"))], needed
    versions = subprocess.run([readelf, "-VW", library], capture_output=True, text=True, check=True).stdout
    assert "GLIBCXX_" not in versions and "CXXABI_" not in versions
    symbols = subprocess.run([readelf, "--dyn-syms", "-W", library], capture_output=True, text=True, check=True).stdout
    exported = [line.split()[-1] for line in symbols.splitlines()
                if " GLOBAL " in line and " UND " not in line and " DEFAULT " in line]
    assert exported == ["RegisterCustomOps"], exported


# --- CMakeLists.txt's side of NCNN_ONNX_CUDA, configured (not built) in a temporary build tree.

def _configure(tmp_path, *defines, env_extra=None):
    cmake = pathlib.Path(sys.prefix) / "bin" / "cmake"
    cmake = str(cmake) if cmake.is_file() else shutil.which("cmake")
    if cmake is None:
        pytest.skip("cmake not found")
    headers = tmp_path / "include"
    headers.mkdir(exist_ok=True)
    (headers / "onnxruntime_c_api.h").write_text("#define ORT_API_VERSION 21\n")
    build = tmp_path / "build"
    shutil.rmtree(build, ignore_errors=True)
    env = {k: v for k, v in os.environ.items() if k not in ("NCNN_ONNX_CUDA", "CUDACXX")}
    env["PATH"] = os.pathsep.join(p for p in env.get("PATH", "").split(os.pathsep)
                                  if not (pathlib.Path(p) / "nvcc").exists())
    env.update(env_extra or {})
    args = [cmake, "-S", str(ROOT), "-B", str(build), f"-DONNXRUNTIME_INCLUDE_DIR={headers}", *defines]
    done = subprocess.run(args, capture_output=True, text=True, env=env, timeout=300)
    return done.returncode, done.stdout + done.stderr, build


def test_cmake_cuda_on_without_a_compiler_fails(tmp_path):
    code, output, _ = _configure(tmp_path, "-DNCNN_ONNX_CUDA=ON", env_extra={"CUDACXX": "/nonexistent/nvcc"})
    assert code != 0
    assert "NCNN_ONNX_CUDA=ON but no CUDA compiler was found" in output, output


def test_cmake_cuda_off_and_wheel_label_binding(tmp_path):
    code, output, build = _configure(tmp_path, "-DNCNN_ONNX_CUDA=off")
    assert code == 0, output
    info = json.loads((build / "build_info.json").read_text())
    assert info["cuda"] is None and info["cuda_option"] == "OFF" and info["cuda_why_not"] == "NCNN_ONNX_CUDA=OFF"
    # A wheel whose version was decided for CUDA cannot be configured without it.
    code, output, _ = _configure(tmp_path, "-DNCNN_ONNX_CUDA=OFF", "-DSKBUILD_PROJECT_VERSION_FULL=0.1.0+cu130")
    assert code != 0 and "set the environment variable instead" in output, output
    code, output, _ = _configure(tmp_path, "-DNCNN_ONNX_CUDA=sometimes")
    assert code != 0 and "NCNN_ONNX_CUDA must be AUTO, ON or OFF" in output, output


def test_one_minimum_onnxruntime_everywhere():
    """The C API version the library asks for fixes the oldest onnxruntime; every place that states a minimum
    states that one, and `make compat` tests exactly it."""
    import re

    api = int(re.search(r"kOrtApiVersion = (\d+);", (ROOT / "runtime/common/ort_api.h").read_text()).group(1))
    dependencies = re.search(r"^dependencies = \[(.*)\]$", (ROOT / "pyproject.toml").read_text(), re.M).group(1)
    assert f'"onnxruntime>=1.{api}"' in dependencies, dependencies
    stated = {}
    for name in ("README.md", "docs/packaging.md", "docs/architecture.md", "examples/triton_serving/README.md",
                 "runtime/register.cc", "runtime/common/ort_api.h"):
        text = (ROOT / name).read_text()
        stated[name] = set(re.findall(r"onnxruntime\s*(?:>=|from)\s*1\.(\d+)", text))
        assert stated[name], f"{name} states no minimum onnxruntime"
    assert all(found == {str(api)} for found in stated.values()), stated
    assert re.search(rf"^COMPAT_ORT \?= 1\.{api}\.0$", (ROOT / "Makefile").read_text(), re.M)
