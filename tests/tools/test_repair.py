"""diagnose() and repair() on bad input: an unsupported op version, a missing, mismatched or duplicated fallback,
a body edited by hand. Each is named exactly; repair never changes its input and refuses what it cannot fix."""

from __future__ import annotations

import copy
import hashlib

import numpy as np
import onnx
import pytest
from onnx import TensorProto

from ncnn_onnx.export import RepairError, build_function, diagnose, repair
from ncnn_onnx.export.repair import FALLBACK_METADATA_KEY
from ncnn_onnx.export.schema import DOMAIN, OP_TYPE
from tool_models import assert_runs_everywhere, has_fallback, run_plain


def _load(exported) -> onnx.ModelProto:
    return onnx.load(exported.path)


def _digest(path) -> str:
    return hashlib.sha256(open(path, "rb").read()).hexdigest()


def _set_import(model, domain, version):
    for opset in model.opset_import:
        if opset.domain == domain:
            opset.version = version


def _function(model) -> onnx.FunctionProto:
    return next(f for f in model.functions if (f.domain, f.name) == (DOMAIN, OP_TYPE))


def _general_body(model):
    """The nodes of the body's branch that runs for the test model (more than one channel per group)."""
    branch = next(n for n in _function(model).node if n.op_type == "If")
    return next(a.g.node for a in branch.attribute if a.name == "else_branch")


def _all_body_nodes(function):
    nodes = list(function.node)
    for node in nodes:
        nodes.extend(n for a in node.attribute if a.type == onnx.AttributeProto.GRAPH for n in a.g.node)
    return nodes


def _repaired_runs(model, exported, tmp_path):
    path = tmp_path / "repaired.onnx"
    fixed = repair(model, path)
    assert diagnose(fixed).ok and diagnose(path).ok
    onnx.checker.check_model(fixed, full_check=True)
    assert_runs_everywhere(path, exported)
    return fixed


def test_unsupported_op_version_is_named_and_not_repaired(exported, tmp_path):
    model = _load(exported)
    _set_import(model, DOMAIN, 2)
    path = tmp_path / "v2.onnx"
    onnx.save(model, path)
    found = diagnose(path)
    assert not found.op_version_supported and found.problems[0] == "unsupported ncnn_onnx version 2"
    assert "imports ncnn_onnx version 2, but this ncnn_onnx implements NormalizedConv version 1 only" in \
        found.nodes_text()
    before = _digest(path)
    with pytest.raises(RepairError, match="cannot repair: unsupported ncnn_onnx version 2"):
        repair(path, tmp_path / "out.onnx")
    assert _digest(path) == before and not (tmp_path / "out.onnx").exists()


def test_missing_fallback_without_the_exporters_note(exported, tmp_path):
    """A file from before the exporter recorded whether it embedded the function: missing, cause unknown."""
    model = _load(exported)
    del model.functions[:]
    del model.metadata_props[:]
    found = diagnose(model)
    assert found.fallback == "missing" and not found.ok
    assert found.fallback_text.startswith("missing (exported with --no-fallback, or dropped by a tool since)")
    _repaired_runs(model, exported, tmp_path)


def test_no_fallback_export_is_a_choice_not_a_problem(exported, tmp_path):
    found = diagnose(exported.no_fallback)
    assert found.fallback == "absent" and found.ok
    assert "exported with fallback=False / --no-fallback" in found.fallback_text
    assert "adds the fallback function" in found.fix(exported.no_fallback)
    fixed = _repaired_runs(onnx.load(exported.no_fallback), exported, tmp_path)
    assert {p.key: p.value for p in fixed.metadata_props}[FALLBACK_METADATA_KEY] == "embedded"


def test_fallback_built_for_another_opset(exported, tmp_path):
    model = _load(exported)
    _set_import(model, "", 21)  # the model moved on, the function did not
    found = diagnose(model)
    assert found.fallback == "opset" and found.function_opset == 20 and found.onnx_opset == 21
    assert "built for ONNX opset 20 while the model imports 21" in found.fallback_text
    fixed = _repaired_runs(model, exported, tmp_path)
    assert [o.version for o in _function(fixed).opset_import] == [21]


def test_fallback_of_another_working_type(exported, tmp_path):
    model = _load(exported)
    del model.functions[:]
    model.functions.append(build_function(20, TensorProto.DOUBLE))
    found = diagnose(model)
    assert found.fallback == "type"
    assert "computes in float64 while the NC nodes are float32" in found.fallback_text
    _repaired_runs(model, exported, tmp_path)


@pytest.mark.parametrize("edit", ["op", "attribute", "constant", "wiring"])
def test_body_edited_by_hand_is_named_and_replaced_on_request(exported, tmp_path, edit):
    model = _load(exported)
    body = _general_body(model)
    if edit == "op":
        node = next(n for n in body if n.op_type == "Sub")
        node.op_type = "Add"
    elif edit == "attribute":
        node = next(n for n in body if n.op_type == "ReduceMean" and any(a.name == "keepdims" for a in n.attribute))
        next(a for a in node.attribute if a.name == "keepdims").i = 0
    elif edit == "constant":
        node = next(n for n in _all_body_nodes(_function(model))
                    if n.op_type == "Constant" and n.attribute[0].t.data_type == TensorProto.FLOAT)
        node.attribute[0].t.CopyFrom(onnx.numpy_helper.from_array(np.array(0.5, np.float32), node.attribute[0].t.name))
    else:
        node = next(n for n in body if n.op_type == "Mul")
        node.input[0], node.input[1] = node.input[1], node.input[0] + "_nowhere"
    path = tmp_path / "edited.onnx"
    onnx.save(model, path)
    before = _digest(path)
    found = diagnose(path)
    assert found.fallback == "edited" and not found.ok
    assert "body differs from the one this ncnn_onnx writes (edited by hand" in found.fallback_text
    assert _digest(path) == before
    _repaired_runs(onnx.load(path), exported, tmp_path)
    assert _digest(path) == before  # only the output was written


def test_renamed_and_reordered_body_is_the_same_body(exported):
    """What onnxslim does (rename values, reorder nodes topologically) is no edit."""
    model = _load(exported)
    function = _function(model)
    names = {}
    for node in _all_body_nodes(function):
        for out in node.output:
            if out not in function.output:
                names[out] = f"v{len(names)}"
    for node in _all_body_nodes(function):  # the branches read outer values by name: renamed there too
        node.input[:] = [names.get(v, v) for v in node.input]
        node.output[:] = [names.get(v, v) for v in node.output]
        node.name = "renamed"
    for node in function.node:
        for attr in node.attribute:
            if attr.type == onnx.AttributeProto.GRAPH:
                for output in attr.g.output:
                    output.name = names.get(output.name, output.name)
    # Move each Constant as early as possible: still topological, another order.
    constants = [copy.deepcopy(n) for n in function.node if n.op_type == "Constant"]
    others = [copy.deepcopy(n) for n in function.node if n.op_type != "Constant"]
    del function.node[:]
    function.node.extend(list(reversed(constants)) + others)
    found = diagnose(model)
    assert found.fallback == "ok" and found.ok


def test_duplicate_functions(exported, tmp_path):
    model = _load(exported)
    model.functions.append(build_function(20))
    found = diagnose(model)
    assert found.fallback == "duplicate" and "2 functions named ncnn_onnx.NormalizedConv" in found.fallback_text
    fixed = _repaired_runs(model, exported, tmp_path)
    assert sum(f.name == OP_TYPE for f in fixed.functions) == 1


def test_opset_below_18_cannot_carry_the_fallback(exported, tmp_path):
    model = _load(exported)
    del model.functions[:]
    _set_import(model, "", 17)
    found = diagnose(model)
    assert found.fatal and "needs ONNX opset >= 18, the model imports 17" in found.fatal
    with pytest.raises(RepairError, match=r"needs ONNX opset >= 18.*version_converter"):
        repair(model)


def test_missing_domain_import_is_added(exported, tmp_path):
    model = _load(exported)
    keep = [o for o in model.opset_import if o.domain != DOMAIN]
    del model.opset_import[:]
    model.opset_import.extend(keep)
    found = diagnose(model)
    assert "does not import the ncnn_onnx domain" in found.nodes_text() and not found.ok
    fixed = _repaired_runs(model, exported, tmp_path)
    assert [o.version for o in fixed.opset_import if o.domain == DOMAIN] == [1]


def test_repair_leaves_its_input_alone(exported):
    model = _load(exported)
    del model.functions[:]
    before = model.SerializeToString()
    fixed = repair(model)
    assert model.SerializeToString() == before and not has_fallback(model) and has_fallback(fixed)


def test_nothing_to_repair_in_a_plain_model(tmp_path):
    graph = onnx.helper.make_graph([onnx.helper.make_node("Relu", ["x"], ["y"])], "plain",
                                   [onnx.helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])],
                                   [onnx.helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])])
    model = onnx.helper.make_model(graph, opset_imports=[onnx.helper.make_opsetid("", 20)])
    found = diagnose(model)
    assert found.ok and found.nc_nodes == 0 and found.fallback == "none"
    with pytest.raises(RepairError, match="has no ncnn_onnx::NormalizedConv node"):
        repair(model)


def test_edited_file_runs_differently_in_plain_onnxruntime(exported, tmp_path):
    """Why an edited body matters: the file still loads, and the fallback computes something else."""
    model = _load(exported)
    next(n for n in _general_body(model) if n.op_type == "Sub").op_type = "Add"
    path = tmp_path / "edited.onnx"
    onnx.save(model, path)
    assert not np.allclose(run_plain(path, exported.x), exported.y_ref, atol=1e-3)
