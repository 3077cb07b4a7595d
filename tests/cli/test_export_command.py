"""`ncnn-onnx export SPEC -o model.onnx`: what each option changes in the written file."""

from __future__ import annotations

import importlib

import numpy as np
import onnx
import pytest
import torch

from cli_helpers import FACTORY_MODULE, library_session, spec


def _input(model: onnx.ModelProto):
    (value,) = model.graph.input
    dims = [d.dim_value if d.HasField("dim_value") else d.dim_param for d in value.type.tensor_type.shape.dim]
    return value.type.tensor_type.elem_type, dims


def _nc_function(model: onnx.ModelProto) -> bool:
    return any(f.domain == "ncnn_onnx" for f in model.functions)


def _eager(factory: str, weights=None) -> torch.nn.Module:
    model = getattr(importlib.import_module(FACTORY_MODULE), factory)()
    if weights is not None:
        model.load_state_dict(torch.load(weights, weights_only=True))
    return model.eval()


def test_default_export_is_float32_dynamic_with_the_fallback(model_path, factory_dir):
    model = onnx.load(model_path)
    elem_type, dims = _input(model)
    assert elem_type == onnx.TensorProto.FLOAT
    assert isinstance(dims[0], str) and dims[1] == 3  # batch symbolic, channels fixed
    assert sum(n.domain == "ncnn_onnx" for n in model.graph.node) == 2
    assert _nc_function(model)


def test_export_reports_what_it_wrote(cli, tmp_path):
    out = tmp_path / "sub" / "m.onnx"  # a missing folder is created
    result = cli("export", spec("classifier"), "-o", out, "--input-shape", "1,3,8,8")
    assert result.code == 0, result.err
    assert out.is_file()
    assert "2 NormalizedConv node(s)" in result.out and "with the fallback" in result.out
    assert result.err == ""  # no progress bar when stderr is not a terminal


def test_static_input_shape_is_written(static_no_fallback_path):
    _, dims = _input(onnx.load(static_no_fallback_path))
    assert dims == [1, 3, 8, 8]


def test_no_fallback_leaves_the_function_out(static_no_fallback_path):
    model = onnx.load(static_no_fallback_path)
    assert not _nc_function(model)
    assert any(n.domain == "ncnn_onnx" for n in model.graph.node)


def test_fp16_model_takes_and_gives_float16(fp16_path):
    model = onnx.load(fp16_path)
    assert _input(model)[0] == onnx.TensorProto.FLOAT16
    x = np.random.default_rng(0).standard_normal((1, 3, 8, 8)).astype(np.float16)
    (y,) = library_session(fp16_path).run(None, {model.graph.input[0].name: x})
    assert y.dtype == np.float16 and y.shape == (1, 5)


def test_exported_model_matches_its_factory(model_path, factory_dir):
    x = np.random.default_rng(1).standard_normal((2, 3, 8, 8)).astype(np.float32)
    (y,) = library_session(model_path).run(None, {_input_name(model_path): x})
    with torch.no_grad():
        expected = _eager("classifier")(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(y, expected, rtol=1e-4, atol=1e-5)


def _input_name(path) -> str:
    return onnx.load(path).graph.input[0].name


def test_weights_change_the_exported_model(cli, tmp_path, model_path, seed1_weights):
    out = tmp_path / "weighted.onnx"
    result = cli("export", spec("classifier"), "-o", out, "--input-shape", "1,3,8,8", "--weights", seed1_weights)
    assert result.code == 0, result.err
    x = np.random.default_rng(2).standard_normal((1, 3, 8, 8)).astype(np.float32)
    name = _input_name(out)
    (weighted,) = library_session(out).run(None, {name: x})
    (default,) = library_session(model_path).run(None, {name: x})
    with torch.no_grad():
        expected = _eager("classifier", seed1_weights)(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(weighted, expected, rtol=1e-4, atol=1e-5)
    assert np.max(np.abs(weighted - default)) > 1e-2


@pytest.mark.parametrize("shape", ["1,3,8,8", "1x3x8x8", "1, 3, 8, 8"])
def test_input_shape_spellings(shape):
    from ncnn_onnx.cli.model_spec import parse_shape

    assert parse_shape(shape) == (1, 3, 8, 8)
