"""NormalizedConv fused with the activation after it (ncnn_onnx/runtime/fusion.py, the CPU kernel's
NormalizedConvActivation): what the session helper fuses and what it leaves, and the fused kernel against
the float64 reference on every backend, through the strip and the direct kernels, in each dtype."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from ncnn_onnx import runtime
from ncnn_onnx.runtime import fusion
from ort_models import DOMAIN, available_isas, load, nc_model, reference
from reference import assert_parity


def _sigmoid(y):
    return 1.0 / (1.0 + np.exp(-y))


# name: (ONNX nodes after the NC output "y" giving "Y", extra initializers, float64 reference)
ACTIVATIONS = {
    "Relu": ([helper.make_node("Relu", ["y"], ["Y"])], [], lambda y: np.maximum(y, 0)),
    "LeakyRelu": ([helper.make_node("LeakyRelu", ["y"], ["Y"], alpha=0.1)], [], lambda y: np.where(y < 0, 0.1 * y, y)),
    "Clip": ([helper.make_node("Clip", ["y", "lo", "hi"], ["Y"])],
             [numpy_helper.from_array(np.array(-0.5, np.float32), "lo"), numpy_helper.from_array(np.array(0.7, np.float32), "hi")],
             lambda y: np.clip(y, -0.5, 0.7)),
    "ClipWithoutMin": ([helper.make_node("Clip", ["y", "", "hi"], ["Y"])],
                       [numpy_helper.from_array(np.array(6.0, np.float32), "hi")], lambda y: np.minimum(y, 6.0)),
    "HardSigmoid": ([helper.make_node("HardSigmoid", ["y"], ["Y"], alpha=0.3, beta=0.4)], [],
                    lambda y: np.clip(0.3 * y + 0.4, 0, 1)),
    "HardSwish": ([helper.make_node("HardSwish", ["y"], ["Y"])], [], lambda y: y * np.clip(y / 6 + 0.5, 0, 1)),
    "Sigmoid": ([helper.make_node("Sigmoid", ["y"], ["Y"])], [], _sigmoid),
    "SiLU": ([helper.make_node("Sigmoid", ["y"], ["s"]), helper.make_node("Mul", ["y", "s"], ["Y"])], [],
             lambda y: y * _sigmoid(y)),
    "SiLUSwapped": ([helper.make_node("Sigmoid", ["y"], ["s"]), helper.make_node("Mul", ["s", "y"], ["Y"])], [],
                    lambda y: y * _sigmoid(y)),
}

# (X shape, W shape, attributes): the strip kernel (dense 3x3, a pointwise layer) and the direct kernel
# (depthwise), with rows that are no whole number of vectors.
SHAPES = [
    ((2, 8, 13, 11), (16, 8, 3, 3), dict(pads=[1, 1, 1, 1])),
    ((1, 12, 9, 10), (20, 12, 1, 1), dict()),
    ((2, 24, 9, 21), (24, 1, 5, 5), dict(group=24, pads=[2, 2, 2, 2])),
]


def _with_activation(nc: bytes, nodes, initializers, dtype=np.float32) -> onnx.ModelProto:
    """The NC model with its output renamed y and `nodes` computing the graph output Y from it."""
    model = load(nc)
    model.graph.node[0].output[0] = "y"
    model.graph.node.extend(nodes)
    cast = [numpy_helper.from_array(numpy_helper.to_array(t).astype(dtype), t.name) for t in initializers]
    model.graph.initializer.extend(cast)
    return model


def _case(index, dtype, seed=0):
    x_shape, w_shape, attributes = SHAPES[index]
    rng = np.random.default_rng(seed)
    x = rng.standard_normal(x_shape).astype(dtype)
    w = (rng.standard_normal(w_shape) / np.sqrt(np.prod(w_shape[1:]))).astype(dtype)
    b = (0.5 * rng.standard_normal(w_shape[0])).astype(dtype)
    return x, w, b, attributes


def _run(model, x, fuse=True):
    data = model.SerializeToString() if hasattr(model, "SerializeToString") else model
    sess = runtime.InferenceSession(data, intra_op_num_threads=1, fuse_activations=fuse)
    return sess.run(None, {"X": x})[0]


@pytest.fixture(params=available_isas())
def isa(request, monkeypatch):
    monkeypatch.setenv("NCNN_ONNX_CPU_ISA", request.param)
    return request.param


@pytest.mark.parametrize("index", range(len(SHAPES)))
@pytest.mark.parametrize("name", list(ACTIVATIONS))
def test_fused_activation_matches_reference(name, index, isa):
    nodes, initializers, act = ACTIVATIONS[name]
    x, w, b, attributes = _case(index, np.float32)
    model = _with_activation(nc_model(w, b, **attributes), nodes, initializers)
    fused = onnx.ModelProto()
    fused.CopyFrom(model)
    assert fusion.fuse_activations(fused) == 1
    assert [n.op_type for n in fused.graph.node] == [fusion.ACTIVATION_OP]
    y = _run(model, x)
    expected = act(reference(x, w, b, **attributes))
    assert_parity(y, expected, np.float32)
    # onnxruntime's own activation node after the unfused NC node gives the same within rounding.
    np.testing.assert_allclose(y, _run(model, x, fuse=False), rtol=1e-5, atol=1e-5 * np.abs(expected).max())


@pytest.mark.parametrize("dtype", [np.float16, np.float64])
@pytest.mark.parametrize("index", range(len(SHAPES)))
def test_fused_activation_in_half_and_double(dtype, index):
    nodes, initializers, act = ACTIVATIONS["SiLU"]
    x, w, b, attributes = _case(index, dtype, seed=3)
    model = _with_activation(nc_model(w, b, **attributes), nodes, initializers, dtype)
    y = _run(model, x)
    assert y.dtype == dtype
    assert_parity(y, act(reference(x, w, b, **attributes)), dtype)


@pytest.mark.parametrize("name", ["Relu", "Clip", "HardSwish", "SiLU"])
def test_a_non_finite_patch_stays_nan_through_the_activation(name, isa):
    """docs/op.md: a patch holding NaN or inf gives NaN; an activation must not turn it into 0 or a bound."""
    nodes, initializers, _ = ACTIVATIONS[name]
    w = np.random.default_rng(1).standard_normal((4, 3, 3, 3)).astype(np.float32)
    x = np.random.default_rng(2).standard_normal((1, 3, 8, 8)).astype(np.float32)
    x[0, 1, 4, 4] = np.inf
    y = _run(_with_activation(nc_model(w, None, pads=[1, 1, 1, 1]), nodes, initializers), x)
    assert np.isnan(y[0, :, 3:6, 3:6]).all()
    assert np.isfinite(y[0, :, :2]).all()


def _graph_with_two_readers() -> onnx.ModelProto:
    model = _with_activation(nc_model(np.ones((2, 3, 1, 1), np.float32)), [helper.make_node("Relu", ["y"], ["Y"])], [])
    model.graph.node.append(helper.make_node("Neg", ["y"], ["Z"]))
    model.graph.output.append(helper.make_tensor_value_info("Z", TensorProto.FLOAT, None))
    return model


def test_what_is_not_fused():
    """An NC output that something else reads too, that is a graph output, or a Clip bound computed at
    run time stays as it is."""
    assert fusion.fuse_activations(_graph_with_two_readers()) == 0
    model = _with_activation(nc_model(np.ones((2, 3, 1, 1), np.float32)), [helper.make_node("Relu", ["y"], ["Y"])], [])
    model.graph.output.append(helper.make_tensor_value_info("y", TensorProto.FLOAT, None))
    assert fusion.fuse_activations(model) == 0
    model = _with_activation(nc_model(np.ones((2, 3, 1, 1), np.float32)),
                             [helper.make_node("Clip", ["y", "X", ""], ["Y"])], [])
    assert fusion.fuse_activations(model) == 0
    # A Sigmoid whose output is read elsewhere too is no SiLU.
    nodes = ACTIVATIONS["SiLU"][0] + [helper.make_node("Neg", ["s"], ["Z"])]
    model = _with_activation(nc_model(np.ones((2, 3, 1, 1), np.float32)), nodes, [])
    model.graph.output.append(helper.make_tensor_value_info("Z", TensorProto.FLOAT, None))
    assert fusion.fuse_activations(model) == 0


def test_the_helper_fuses_for_the_cpu_provider_only(monkeypatch):
    model = _with_activation(nc_model(np.ones((2, 3, 1, 1), np.float32)), [helper.make_node("Relu", ["y"], ["Y"])], [])
    data = model.SerializeToString()
    seen = []
    monkeypatch.setattr(ort, "InferenceSession", lambda m, *a, **k: seen.append(m))
    runtime.InferenceSession(data)
    runtime.InferenceSession(data, fuse_activations=False)
    runtime.InferenceSession(data, ["CUDAExecutionProvider", "CPUExecutionProvider"])
    ops = [[n.op_type for n in load(m).graph.node] for m in seen]
    assert ops == [[fusion.ACTIVATION_OP], ["NormalizedConv", "Relu"], ["NormalizedConv", "Relu"]]


def _fused_model(activation, params=None, **extra) -> bytes:
    attrs = dict(activation=activation, **extra)
    if params is not None:
        attrs["activation_params"] = params
    node = helper.make_node(fusion.ACTIVATION_OP, ["X", "W"], ["Y"], domain=DOMAIN, name="fused", **attrs)
    graph = helper.make_graph([node], "g", [helper.make_tensor_value_info("X", TensorProto.FLOAT, None)],
                              [helper.make_tensor_value_info("Y", TensorProto.FLOAT, None)],
                              [numpy_helper.from_array(np.ones((2, 3, 1, 1), np.float32), "W")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid(DOMAIN, 1)])
    model.ir_version = 8
    return model.SerializeToString()


@pytest.mark.parametrize("activation, params, message", [
    ("Gelu", None, "attribute 'activation' must be one of"),
    ("LeakyRelu", None, "must hold 1 value"),
    ("Relu", [1.0], "must hold 0 value"),
    ("Clip", [1.0, -1.0], "min <= max"),
    ("HardSigmoid", [float("nan"), 0.5], "must be finite"),
])
def test_bad_activation_attributes_are_refused_naming_them(activation, params, message):
    with pytest.raises(Exception, match=message):
        runtime.InferenceSession(_fused_model(activation, params), fuse_activations=False)


def test_a_fused_node_without_its_activation_is_refused():
    node = helper.make_node(fusion.ACTIVATION_OP, ["X", "W"], ["Y"], domain=DOMAIN, name="fused")
    graph = helper.make_graph([node], "g", [helper.make_tensor_value_info("X", TensorProto.FLOAT, None)],
                              [helper.make_tensor_value_info("Y", TensorProto.FLOAT, None)],
                              [numpy_helper.from_array(np.ones((2, 3, 1, 1), np.float32), "W")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid(DOMAIN, 1)])
    model.ir_version = 8
    with pytest.raises(Exception, match="attribute 'activation' is required"):
        runtime.InferenceSession(model.SerializeToString(), fuse_activations=False)
