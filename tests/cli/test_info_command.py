"""`ncnn-onnx info`: versions, library path, providers, CUDA kernels."""

from __future__ import annotations

import onnx
import onnxruntime as ort

import ncnn_onnx
from ncnn_onnx import runtime


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
    assert fields["ncnn_onnx"] == ncnn_onnx.__version__
    assert fields["onnxruntime"] == ort.__version__
    assert fields["onnx"] == onnx.__version__
    assert "torch" in fields and "onnxscript" in fields
    assert fields["providers"].split(", ") == ort.get_available_providers()
    assert fields["library"] == runtime.get_library_path()
    assert fields["CUDA kernels"].startswith("built in" if runtime.cuda_kernels_built() else "not built")


def test_info_without_the_library_says_so(cli, monkeypatch, tmp_path):
    monkeypatch.setenv("NCNN_ONNX_LIBRARY", str(tmp_path / "missing.so"))
    result = cli("info")
    assert result.code == 0, result.err
    assert _fields(result.out)["library"].startswith("not available:")
