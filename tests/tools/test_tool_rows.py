"""The ONNX tools users put every model through (issue 13's table), one test per row: what the tool does to
an NC file, that `diagnose` / `ncnn-onnx check` says so, and the route that keeps one portable file.
The tools that already keep the file portable (onnxsim, onnxslim, float16 conversion, quantization,
external data) are held to it in test_tools_that_work.py."""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import onnx
import onnx.inliner
import onnx.version_converter
import onnxruntime as ort
import pytest
from onnx import TensorProto

from ncnn_onnx import runtime
from ncnn_onnx.export import RepairError, diagnose, repair
from ncnn_onnx.export.schema import DOMAIN
from ncnn_onnx.runtime import tools
from reference import assert_parity
from tool_models import assert_runs_everywhere, has_fallback, nc_count, run_plain


def _ort_optimize(source, target, library: bool, level=ort.GraphOptimizationLevel.ORT_ENABLE_BASIC) -> None:
    options = runtime.session_options() if library else ort.SessionOptions()
    options.graph_optimization_level = level
    options.optimized_model_filepath = str(target)
    ort.InferenceSession(source, options, providers=["CPUExecutionProvider"])


@pytest.mark.parametrize("level", ["basic", "extended", "all"])
def test_ort_offline_optimization_with_the_library(exported, tmp_path, level):
    """Plain: NC nodes kept, fallback function dropped (plain onnxruntime can no longer load the file), and
    check no longer blames --no-fallback. `optimize` re-attaches it; `repair` mends the plain tool's output."""
    raw = tmp_path / "raw.onnx"
    _ort_optimize(exported.path, raw, library=True, level=tools.LEVELS[level])
    assert nc_count(raw) == 2 and not has_fallback(raw)
    with pytest.raises(Exception, match="NormalizedConv"):
        run_plain(raw, exported.x)
    found = diagnose(raw)
    assert found.fallback == "dropped" and "dropped after export" in found.fallback_text
    assert "--no-fallback" not in found.fallback_text and found.fix(str(raw)).startswith("ncnn-onnx repair")

    repaired = tmp_path / "repaired.onnx"
    repair(raw, repaired)
    assert diagnose(repaired).ok
    assert_runs_everywhere(repaired, exported, evaluator=level == "basic")

    optimized = tmp_path / "optimized.onnx"
    tools.optimize(exported.path, optimized, level)
    assert nc_count(optimized) == 2 and diagnose(optimized).ok
    # "basic" leaves standard ops only, so the reference evaluator runs the result too.
    assert_runs_everywhere(optimized, exported, evaluator=level == "basic")


@pytest.mark.parametrize("level", ["basic", "all"])
def test_ort_offline_optimization_without_the_library_inlines(exported, tmp_path, level):
    raw = tmp_path / "inlined.onnx"
    _ort_optimize(exported.path, raw, library=False, level=tools.LEVELS[level])
    assert nc_count(raw) == 0 and not has_fallback(raw)
    found = diagnose(raw)
    assert found.inlined == 2 and found.nc_nodes == 0 and not found.ok
    assert "the ncnn_onnx library never runs this file" in found.inlined_text()
    assert "ncnn-onnx optimize" in found.fix()
    with pytest.raises(RepairError, match="inlined copy"):
        repair(raw, tmp_path / "never.onnx")
    assert not (tmp_path / "never.onnx").exists()
    assert_parity(run_plain(raw, exported.x), exported.y_ref, np.float32)  # still right, only slow


@pytest.mark.parametrize("target", [18, 21])
def test_version_converter(exported, tmp_path, target):
    converted = onnx.version_converter.convert_version(onnx.load(exported.path), target)
    assert nc_count(converted) == 2 and not has_fallback(converted)
    found = diagnose(converted)
    assert found.fallback == "dropped" and found.onnx_opset == target
    path = tmp_path / f"opset{target}.onnx"
    repair(converted, path)
    fixed = onnx.load(path)
    function = next(f for f in fixed.functions if f.domain == DOMAIN)
    assert [o.version for o in function.opset_import if o.domain == ""] == [target]
    onnx.checker.check_model(fixed, full_check=True)
    assert diagnose(fixed).ok
    assert_runs_everywhere(path, exported)


def test_quant_pre_process(exported, tmp_path, monkeypatch):
    """Plain: fails on this residual model ("Incomplete symbolic shape inference"), and inlines the function
    where it gets through (skipping the symbolic step). `tools.quant_pre_process` keeps the NC nodes and the
    fallback, and the shapes it writes include NC's outputs."""
    from onnxruntime.quantization.shape_inference import quant_pre_process

    monkeypatch.chdir(tmp_path)  # the failing symbolic step leaves sym_shape_infer_temp.onnx in the cwd
    with pytest.raises(Exception, match="Incomplete symbolic shape inference"):
        quant_pre_process(exported.path, str(tmp_path / "plain.onnx"))
    quant_pre_process(exported.path, str(tmp_path / "plain.onnx"), skip_symbolic_shape=True)
    plain = diagnose(tmp_path / "plain.onnx")
    assert plain.nc_nodes == 0 and plain.inlined == 2

    prepared = tmp_path / "prepared.onnx"
    os.remove(tmp_path / "sym_shape_infer_temp.onnx")
    tools.quant_pre_process(exported.path, prepared)
    assert not (tmp_path / "sym_shape_infer_temp.onnx").exists()
    assert nc_count(prepared) == 2 and diagnose(prepared).ok
    model = onnx.load(prepared)
    assert {p.key: p.value for p in model.metadata_props}.get("onnx.quant.pre_process") == "onnxruntime.quant"
    shapes = {v.name: v.type.tensor_type for v in model.graph.value_info}
    batch = model.graph.input[0].type.tensor_type.shape.dim[0].dim_param
    for node in (n for n in model.graph.node if n.domain == DOMAIN):
        dims = shapes[node.output[0]].shape.dim
        assert dims[0].dim_param == batch and dims[1].dim_value == 8, node.name
    assert_runs_everywhere(prepared, exported)


def test_symbolic_shape_infer(exported, tmp_path, monkeypatch):
    """Plain: this residual model fails; with auto_merge NC's output dims become fresh symbols (the batch and
    the 8 channels are lost). `tools.infer_shapes` gives NC Conv's output shape: the input's symbols."""
    from onnxruntime.tools.symbolic_shape_infer import SymbolicShapeInference

    model = onnx.load(exported.path)
    monkeypatch.chdir(tmp_path)
    with pytest.raises(Exception, match="Incomplete symbolic shape inference"):
        SymbolicShapeInference.infer_shapes(model)
    merged = SymbolicShapeInference.infer_shapes(model, auto_merge=True)
    stem = next(n for n in merged.graph.node if n.domain == DOMAIN)
    lost = next(v for v in merged.graph.value_info if v.name == stem.output[0]).type.tensor_type.shape.dim
    assert lost[1].dim_param and not lost[1].dim_value  # the channel count is gone

    inferred = tools.infer_shapes(exported.path, tmp_path / "shapes.onnx")
    assert os.path.exists(tmp_path / "shapes.onnx")
    x_dims = inferred.graph.input[0].type.tensor_type.shape.dim
    values = {v.name: v.type.tensor_type for v in inferred.graph.value_info}
    for node in (n for n in inferred.graph.node if n.domain == DOMAIN):
        t = values[node.output[0]]
        assert t.elem_type == TensorProto.FLOAT
        dims = t.shape.dim
        assert dims[1].dim_value == 8
        # pads 1, stride 1, kernel 3: the output keeps the input's batch, height and width symbols
        assert [dims[i].dim_param for i in (0, 2, 3)] == [x_dims[i].dim_param for i in (0, 2, 3)]
    assert has_fallback(inferred) and nc_count(inferred) == 2
    # The patch is scoped: outside it, onnxruntime's tool is its own again.
    with pytest.raises(Exception, match="Incomplete symbolic shape inference"):
        SymbolicShapeInference.infer_shapes(model)


def test_onnx_inliner_is_reported(exported):
    inlined = onnx.inliner.inline_local_functions(onnx.load(exported.path))
    found = diagnose(inlined)
    assert found.nc_nodes == 0 and found.inlined == 2 and not found.ok
    lines = dict(found.lines())
    assert "2 inlined copy(ies) of the fallback body" in lines["inlined fallback"]
    assert "re-export" in lines["fix"]


def test_polygraphy_python_api_compares_library_and_fallback(exported):
    from polygraphy.backend.onnxrt import OnnxrtRunner, SessionFromOnnx
    from polygraphy.comparator import Comparator

    from ncnn_onnx.runtime.polygraphy_ext import SessionWithLibrary

    feeds = [{"x": exported.x}]
    runners = [OnnxrtRunner(SessionFromOnnx(exported.path), name="fallback"),
               OnnxrtRunner(SessionWithLibrary(exported.path), name="library")]
    results = Comparator.run(runners, data_loader=feeds)
    assert bool(Comparator.compare_accuracy(results))
    for name in ("fallback", "library"):
        (outputs,) = results[name]
        assert_parity(np.asarray(next(iter(outputs.values()))), exported.y_ref, np.float32)
    # The library really runs: only SessionWithLibrary can run a file without the fallback function.
    (outputs,) = Comparator.run([OnnxrtRunner(SessionWithLibrary(exported.no_fallback), name="only")],
                                data_loader=feeds)["only"]
    assert_parity(np.asarray(next(iter(outputs.values()))), exported.y_ref, np.float32)
    with pytest.raises(Exception, match="NormalizedConv"):
        Comparator.run([OnnxrtRunner(SessionFromOnnx(exported.no_fallback))], data_loader=feeds)


def _polygraphy(*args) -> subprocess.CompletedProcess:
    command = [os.path.join(os.path.dirname(sys.executable), "polygraphy"), "run", *map(str, args)]
    return subprocess.run(command, capture_output=True, text=True, timeout=120)


def test_polygraphy_cli_plugins_option_does_not_reach_onnxruntime_but_the_extension_runner_does(exported):
    """`polygraphy run --onnxrt --plugins LIB` ignores LIB (TensorRT plugins only): a file without the fallback
    fails. The extension's runner `--ncnn-onnxrt` (entry point polygraphy.run.plugins) registers the library."""
    ignored = _polygraphy(exported.no_fallback, "--onnxrt", "--plugins", runtime.get_library_path())
    assert ignored.returncode != 0 and "NormalizedConv" in ignored.stdout + ignored.stderr
    alone = _polygraphy(exported.no_fallback, "--ncnn-onnxrt")
    assert alone.returncode == 0, alone.stdout + alone.stderr
    compared = _polygraphy(exported.path, "--onnxrt", "--ncnn-onnxrt")
    assert compared.returncode == 0, compared.stdout + compared.stderr
    out = compared.stdout + compared.stderr
    assert "ncnn-onnxrt-runner" in out and "PASSED | simple | All outputs matched" in out
