"""The tools that keep an NC file portable as they are (issue 13's "must keep working" list): each keeps the
NC nodes and a fallback function that `diagnose` finds intact, and the result runs on every path."""

from __future__ import annotations

import os

import numpy as np
import onnx
import pytest

from ncnn_onnx.export import diagnose, repair
from ncnn_onnx.export.schema import DOMAIN
from ncnn_onnx.runtime import tools
from reference import assert_parity
from tool_models import assert_runs_everywhere, has_fallback, nc_count, run_library, run_plain


def _kept(path) -> None:
    found = diagnose(path)
    assert nc_count(path) == 2 and has_fallback(path), found.lines()
    assert found.ok and found.fallback == "ok", found.lines()


def test_the_exported_file_runs_everywhere(exported):
    _kept(exported.path)
    assert_runs_everywhere(exported.path, exported)


def test_onnxsim(exported, tmp_path):
    onnxsim = pytest.importorskip("onnxsim")  # its wheels need Python >= 3.11
    simplified, ok = onnxsim.simplify(onnx.load(exported.path))
    assert ok
    onnx.save(simplified, tmp_path / "sim.onnx")
    _kept(tmp_path / "sim.onnx")
    assert_runs_everywhere(tmp_path / "sim.onnx", exported)


def test_onnxslim(exported, tmp_path):
    import onnxslim

    slim = onnxslim.slim(onnx.load(exported.path))
    # onnxslim renames the body's constants and reorders its nodes: the same function all the same.
    assert slim.functions[0] != onnx.load(exported.path).functions[0]
    onnx.save(slim, tmp_path / "slim.onnx")
    _kept(tmp_path / "slim.onnx")
    assert_runs_everywhere(tmp_path / "slim.onnx", exported)


@pytest.mark.parametrize("keep_io_types", [True, False])
def test_float16_with_onnxconverter_common(exported, tmp_path, keep_io_types):
    from onnxconverter_common import float16

    half = float16.convert_float_to_float16(onnx.load(exported.path), keep_io_types=keep_io_types)
    path = tmp_path / "fp16.onnx"
    onnx.save(half, path)
    _kept(path)
    found = diagnose(path)
    assert found.element_types == {onnx.TensorProto.FLOAT16}  # the float32 body serves float16 nodes
    expected = onnx.TensorProto.FLOAT if keep_io_types else onnx.TensorProto.FLOAT16
    assert half.graph.input[0].type.tensor_type.elem_type == expected
    assert_runs_everywhere(path, exported, dtype=np.float16)


def test_quantize_dynamic(exported, tmp_path):
    from onnxruntime.quantization import quantize_dynamic

    path = tmp_path / "dynamic.onnx"
    quantize_dynamic(exported.path, str(path))
    _kept(path)
    assert "MatMulInteger" in {n.op_type for n in onnx.load(path).graph.node}  # the head was quantized
    # The int8 head is the same in both sessions: the library and the fallback agree to the float32 bar.
    assert_parity(run_library(path, exported.x), run_plain(path, exported.x), np.float32)


class _Calibration:
    def __init__(self, x):
        self._feeds = iter([{"x": x[i:i + 1]} for i in range(len(x))])

    def get_next(self):
        return next(self._feeds, None)

    def rewind(self):  # onnxruntime's CalibrationDataReader interface
        pass


@pytest.mark.parametrize("quant_format", ["QDQ", "QOperator"])
def test_quantize_static_after_quant_pre_process(exported, tmp_path, quant_format):
    """The documented route: `ncnn-onnx quant-pre-process` (tools.quant_pre_process), then quantize_static.
    NC stays a float op, with DequantizeLinear feeding it (QDQ) or outside the int8 ops (QOperator)."""
    from onnxruntime.quantization import QuantFormat, quantize_static

    prepared = tmp_path / "prepared.onnx"
    tools.quant_pre_process(exported.path, prepared)
    path = tmp_path / f"static_{quant_format}.onnx"
    quantize_static(str(prepared), str(path), _Calibration(exported.x), quant_format=QuantFormat[quant_format])
    _kept(path)
    model = onnx.load(path)
    producers = {out: n.op_type for n in model.graph.node for out in n.output}
    weights = {t.name: t.data_type for t in model.graph.initializer}
    nodes = [n for n in model.graph.node if n.domain == DOMAIN]
    # NC stays float: float32 weights and a float32 X (the graph input, a float op's or a DequantizeLinear's).
    assert all(weights[n.input[1]] == weights[n.input[2]] == onnx.TensorProto.FLOAT for n in nodes)
    inferred = onnx.shape_inference.infer_shapes(model)
    types = {v.name: v.type.tensor_type.elem_type for v in list(inferred.graph.input) + list(inferred.graph.value_info)}
    assert {types[n.input[0]] for n in nodes} == {onnx.TensorProto.FLOAT}
    if quant_format == "QDQ":
        assert "DequantizeLinear" in {producers.get(n.input[0]) for n in nodes}
    quantized = {"QuantizeLinear", "QLinearAdd", "QGemm"} if quant_format == "QOperator" else {"QuantizeLinear"}
    assert quantized <= set(producers.values())
    assert_parity(run_library(path, exported.x), run_plain(path, exported.x), np.float32)


def test_external_data_at_the_default_threshold(exported, tmp_path):
    model = onnx.load(exported.path)
    path = tmp_path / "external.onnx"
    onnx.save_model(model, path, save_as_external_data=True, location="external.onnx.weights")
    stored = onnx.load(path, load_external_data=False)
    assert any(t.data_location == onnx.TensorProto.EXTERNAL for t in stored.graph.initializer)
    _kept(path)
    assert_runs_everywhere(path, exported)
    # repair and optimize write the external data beside their output.
    for name, make in (("repaired", lambda out: repair(path, out)), ("optimized", lambda out: tools.optimize(path, out))):
        out = tmp_path / "out" / f"{name}.onnx"
        out.parent.mkdir(exist_ok=True)
        make(out)
        assert os.path.exists(str(out) + ".data"), name
        _kept(out)
        assert_runs_everywhere(out, exported)
