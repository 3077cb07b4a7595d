"""`ncnn-onnx check` (the diagnosis alone), `repair`, `optimize`, `infer-shapes` and `quant-pre-process` on
files ONNX tools changed: one line per finding, the fix to run, no traceback, nothing written unless -o."""

from __future__ import annotations

import hashlib
import os

import numpy as np
import onnx
import onnx.inliner
import onnx.version_converter
import onnxruntime as ort

from cli_helpers import library_session, one_line_error

LABELS = ["NormalizedConv nodes", "fallback function", "inlined fallback", "fix"]


def _diagnosis(out: str) -> dict:
    lines = out.splitlines()[:4]
    assert [line.split(": ", 1)[0] for line in lines] == LABELS, out
    return {line.split(": ", 1)[0]: line.split(": ", 1)[1] for line in lines}


def _digest(path) -> str:
    return hashlib.sha256(open(path, "rb").read()).hexdigest()


def _without_fallback(model_path, tmp_path, name="dropped.onnx") -> str:
    """What onnx.version_converter leaves: NC nodes, opset 21, no function."""
    path = tmp_path / name
    onnx.save(onnx.version_converter.convert_version(onnx.load(model_path), 21), path)
    return str(path)


def _input(model_path) -> tuple[str, np.ndarray]:
    name = onnx.load(model_path).graph.input[0].name
    return name, np.random.default_rng(1).standard_normal((2, 3, 8, 8)).astype(np.float32)


def test_check_diagnoses_a_dropped_fallback_and_names_the_fix(cli, model_path, tmp_path):
    dropped = _without_fallback(model_path, tmp_path)
    result = cli("check", dropped)
    assert result.code == 1 and result.err == ""
    found = _diagnosis(result.out)
    assert found["NormalizedConv nodes"] == "2, ncnn_onnx version 1, ONNX opset 21"
    assert found["fallback function"].startswith("missing: dropped after export (the exporter embedded it")
    assert found["inlined fallback"] == "none"
    assert found["fix"] == f"ncnn-onnx repair {dropped} -o {dropped[:-5]}.repaired.onnx"


def test_check_diagnoses_an_inlined_model(cli, model_path, tmp_path):
    path = tmp_path / "inlined.onnx"
    onnx.save(onnx.inliner.inline_local_functions(onnx.load(model_path)), path)
    result = cli("check", path)
    assert result.code == 1
    found = _diagnosis(result.out)
    assert found["NormalizedConv nodes"].startswith("0,")
    assert found["inlined fallback"].startswith("2 inlined copy(ies) of the fallback body")
    assert "re-export" in found["fix"]


def test_check_with_reference_on_a_dropped_fallback(cli, model_path, tmp_path):
    from cli_helpers import spec

    dropped = _without_fallback(model_path, tmp_path)
    result = cli("check", dropped, "--reference", spec("classifier"), "--random", 1)
    assert result.code == 1  # parity holds on the library, but the file is not portable
    assert "parity: all paths within the bar" in result.out
    assert "not checked: fallback (no library): no fallback function: missing: dropped after export" in result.out
    assert "(fix: ncnn-onnx repair" in result.out


def test_repair_reports_without_writing_then_writes_on_request(cli, model_path, tmp_path):
    dropped = _without_fallback(model_path, tmp_path)
    before = _digest(dropped)
    listing = set(os.listdir(tmp_path))
    dry = cli("repair", dropped)
    assert dry.code == 1 and _diagnosis(dry.out)["fallback function"].startswith("missing: dropped")
    assert "would: re-attach the fallback function for ONNX opset 21; nothing written" in dry.out
    assert set(os.listdir(tmp_path)) == listing and _digest(dropped) == before

    fixed = tmp_path / "out" / "fixed.onnx"
    done = cli("repair", dropped, "-o", fixed)
    assert done.code == 0, done.out + done.err
    assert f"wrote {fixed}; done: re-attach the fallback function for ONNX opset 21" in done.out
    assert _digest(dropped) == before
    assert cli("check", fixed).code == 0
    name, x = _input(model_path)
    plain = ort.InferenceSession(str(fixed), providers=["CPUExecutionProvider"]).run(None, {name: x})[0]
    np.testing.assert_allclose(plain, library_session(fixed).run(None, {name: x})[0], rtol=1e-4, atol=1e-5)


def test_repair_in_place_only_when_asked(cli, model_path, tmp_path):
    dropped = _without_fallback(model_path, tmp_path)
    result = cli("repair", dropped, "-o", dropped)
    assert result.code == 0, result.err
    assert cli("check", dropped).code == 0


def test_repair_refuses_an_unsupported_op_version_in_one_line(cli, model_path, tmp_path):
    model = onnx.load(model_path)
    for opset in model.opset_import:
        if opset.domain == "ncnn_onnx":
            opset.version = 3
    del model.functions[:]
    path = tmp_path / "v3.onnx"
    onnx.save(model, path)
    check = cli("check", path)
    assert check.code == 1
    assert "imports ncnn_onnx version 3, but this ncnn_onnx implements NormalizedConv version 1 only" in check.out
    result = cli("repair", path, "-o", tmp_path / "never.onnx")
    assert "cannot repair: unsupported ncnn_onnx version 3" in one_line_error(result, "repair")
    assert not (tmp_path / "never.onnx").exists()
    optimize = cli("optimize", path, "-o", tmp_path / "never.onnx")
    assert "version 3" in one_line_error(optimize, "optimize")


def test_repair_and_check_of_a_missing_file(cli, tmp_path):
    for command in ("check", "repair", "optimize", "infer-shapes", "quant-pre-process"):
        args = [command, tmp_path / "nowhere.onnx"] + ([] if command in ("check", "repair") else ["-o", tmp_path / "o"])
        assert "model file not found" in one_line_error(cli(*args), command)


def test_optimize_keeps_nodes_and_fallback(cli, model_path, tmp_path):
    out = tmp_path / "optimized.onnx"
    result = cli("optimize", model_path, "-o", out)
    assert result.code == 0, result.out + result.err
    assert "2 NormalizedConv node(s), fallback function: present and as this ncnn_onnx writes it" in result.out
    assert cli("check", out).code == 0
    same_file = cli("optimize", out, "-o", out)
    assert "another file than the input" in one_line_error(same_file, "optimize")


def test_optimize_of_a_no_fallback_export_keeps_it_so(cli, static_no_fallback_path, tmp_path):
    out = tmp_path / "optimized.onnx"
    assert cli("optimize", static_no_fallback_path, "-o", out).code == 0
    result = cli("check", out)
    assert result.code == 0 and "not embedded (exported with fallback=False" in result.out


def test_infer_shapes_and_quant_pre_process_commands(cli, model_path, tmp_path):
    shaped = tmp_path / "shaped.onnx"
    result = cli("infer-shapes", model_path, "-o", shaped)
    assert result.code == 0, result.out + result.err
    model = onnx.load(shaped)
    values = {v.name: v.type.tensor_type.shape.dim for v in model.graph.value_info}
    for node in (n for n in model.graph.node if n.domain == "ncnn_onnx"):
        assert values[node.output[0]][1].dim_value == 4
    prepared = tmp_path / "prepared.onnx"
    result = cli("quant-pre-process", model_path, "-o", prepared)
    assert result.code == 0, result.out + result.err
    assert "2 NormalizedConv node(s), fallback function: present" in result.out
    assert cli("check", prepared).code == 0
