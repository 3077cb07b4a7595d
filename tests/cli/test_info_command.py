"""`ncnn-onnx info`: versions, library path, providers, CUDA kernels."""

from __future__ import annotations

from importlib import metadata

import onnx
import onnxruntime as ort

import ncnn_onnx
from ncnn_onnx import runtime
from ncnn_onnx.cli.info_command import describe


def _fields(out: str) -> dict[str, str]:
    fields = {}
    for line in out.splitlines():
        key, _, value = line.partition("  ")  # the key column is padded with two or more spaces
        fields[key.strip()] = value.strip()
    return fields


def test_info_lists_versions_library_providers_and_cuda(cli):
    result = cli("info")
    assert result.code == 0, result.err
    fields = _fields(result.out)
    # The installed version: __version__, plus +cuXY where the library has CUDA kernels.
    assert fields["ncnn_onnx"].split("+")[0] == ncnn_onnx.__version__
    assert fields["ncnn_onnx"] == metadata.version("ncnn_onnx")
    assert fields["onnxruntime"] == ort.__version__
    assert fields["onnx"] == onnx.__version__
    assert "torch" in fields and "onnxscript" in fields and "pillow" in fields
    assert fields["providers"].split(", ") == ort.get_available_providers()
    assert fields["library"] == runtime.get_library_path()
    info = runtime.build_info()
    assert fields["CPU kernels"].startswith(", ".join(info["cpu_backends"]))
    if runtime.cuda_kernels_built():
        cuda = info["cuda"]
        assert fields["CUDA kernels"].startswith(f"built in: CUDA {cuda['version']}, {', '.join(cuda['architectures'])}")
        assert fields["ncnn_onnx"].endswith("+cu" + cuda["version"].replace(".", ""))
    else:
        assert fields["CUDA kernels"] == f"not built ({info['cuda_why_not']})"
        assert "+" not in fields["ncnn_onnx"]
    assert fields["onnxruntime API"].startswith("needs C API 18 (onnxruntime >= 1.18)")


def test_describe_build_info_without_cuda():
    rows = dict(describe({"cuda": None, "cuda_option": "OFF", "cuda_why_not": "NCNN_ONNX_CUDA=OFF",
                          "cpu_backends": ["portable"], "static_cxx_runtime": False}))
    assert rows["CUDA kernels"] == "not built (NCNN_ONNX_CUDA=OFF)"
    assert rows["CPU kernels"].startswith("portable (")
    assert rows["C++ runtime"] == "shared libstdc++"
    rows = dict(describe({"cuda": {"version": "12.4", "architectures": ["sm_80"], "ptx": [], "runtime": "static"}}))
    assert rows["CUDA kernels"] == "built in: CUDA 12.4, sm_80, static CUDA runtime"


def test_info_without_the_library_says_so(cli, monkeypatch, tmp_path):
    monkeypatch.setenv("NCNN_ONNX_LIBRARY", str(tmp_path / "missing.so"))
    result = cli("info")
    assert result.code == 0, result.err
    assert _fields(result.out)["library"].startswith("not available:")
