"""The op's schema: registered on import, idempotent, understood by onnx.checker and shape inference."""

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

import ncnn_onnx.export as nce


def node_model(x_dims, w_shape, elem=TensorProto.FLOAT, **attrs):
    x = helper.make_tensor_value_info("X", elem, x_dims)
    y = helper.make_tensor_value_info("Y", elem, [None] * len(x_dims))
    w = numpy_helper.from_array(np.zeros(w_shape, helper.tensor_dtype_to_np_dtype(elem)), "W")
    node = helper.make_node("NormalizedConv", ["X", "W"], ["Y"], domain="ncnn_onnx", **attrs)
    graph = helper.make_graph([node], "g", [x], [y], [w])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 20), helper.make_opsetid("ncnn_onnx", 1)])


def inferred_output(model) -> list:
    out = onnx.shape_inference.infer_shapes(model, strict_mode=True).graph.output[0].type.tensor_type
    return [d.dim_param or d.dim_value for d in out.shape.dim], out.elem_type


def test_schema_is_registered_once_and_declares_the_op():
    nce.register_schema()
    nce.register_schema()
    schema = onnx.defs.get_schema("NormalizedConv", 1, "ncnn_onnx")
    assert (schema.domain, schema.since_version) == ("ncnn_onnx", 1)
    assert [p.name for p in schema.inputs] == ["X", "W", "B"]
    assert schema.min_input == 2 and schema.max_input == 3
    attrs = schema.attributes
    assert set(attrs) == {
        "auto_pad", "dilations", "group", "kernel_shape", "pads", "strides", "epsilon", "center", "scale"
    }
    defaults = {k: helper.get_attribute_value(a.default_value) for k, a in attrs.items() if a.default_value.type}
    assert defaults == {"auto_pad": b"NOTSET", "group": 1, "epsilon": pytest.approx(1e-5), "center": 1, "scale": 1}
    assert set(schema.type_constraints[0].allowed_type_strs) == {"tensor(float)", "tensor(float16)", "tensor(double)"}


@pytest.mark.parametrize(
    "x_dims,w_shape,attrs,expected",
    [
        (["N", 3, "H", "W"], (8, 3, 3, 3), dict(pads=[1, 1, 1, 1]), ["N", 8, None, None]),
        (["batch", 4, 20, 17], (6, 2, 3, 2), dict(group=2, strides=[2, 1], pads=[1, 0, 1, 1]), ["batch", 6, 10, 17]),
        (["N", 4, 20], (6, 4, 4), dict(auto_pad="SAME_UPPER", strides=[3]), ["N", 6, 7]),
        ([2, 2, 9, 9, 9], (3, 2, 3, 3, 3), dict(dilations=[2, 1, 1], center=0, scale=0), [2, 3, 5, 7, 7]),
        (["N", 4, 10, 10], (4, 1, 3, 3), dict(group=4, auto_pad="VALID", epsilon=1e-3), ["N", 4, 8, 8]),
    ],
)
def test_checker_and_shape_inference(x_dims, w_shape, attrs, expected):
    model = node_model(x_dims, w_shape, **attrs)
    onnx.checker.check_model(model, full_check=True)
    dims, elem = inferred_output(model)
    assert elem == TensorProto.FLOAT
    for got, want in zip(dims, expected, strict=True):
        if want is None:  # a symbolic spatial input dim: Conv inference names a fresh unknown
            assert isinstance(got, str)
        else:
            assert got == want


@pytest.mark.parametrize("elem", [TensorProto.FLOAT16, TensorProto.DOUBLE])
def test_other_types_propagate(elem):
    model = node_model(["N", 3, 8, 8], (4, 3, 3, 3), elem)
    assert inferred_output(model) == (["N", 4, 6, 6], elem)


def test_checker_rejects_what_the_op_does_not_have():
    with pytest.raises(onnx.shape_inference.InferenceError, match="unsupported type"):
        onnx.checker.check_model(node_model(["N", 3, 8, 8], (4, 3, 3, 3), TensorProto.INT32), full_check=True)
    with pytest.raises(onnx.checker.ValidationError, match="momentum"):
        onnx.checker.check_model(node_model(["N", 3, 8, 8], (4, 3, 3, 3), momentum=0.1), full_check=True)
    with pytest.raises(onnx.checker.ValidationError):
        onnx.checker.check_model(node_model(["N", 3, 8, 8], (4, 3, 3, 3), epsilon=1), full_check=True)


def test_importing_the_package_needs_no_torch():
    import subprocess
    import sys

    code = (
        "import sys, ncnn_onnx.export, onnx; onnx.defs.get_schema('NormalizedConv', 1, 'ncnn_onnx'); "
        "print('torch' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"


def test_a_process_that_registered_the_schema_exits_cleanly():
    """onnx 1.19-1.22 hang or crash at exit when a schema registered from Python is still in their registry;
    the package removes it at exit. The child also checks the op while it runs, so the schema was in use."""
    import subprocess
    import sys

    code = ("import numpy, onnx, ncnn_onnx.export\n"
            "onnx.checker.check_model(onnx.helper.make_model(onnx.helper.make_graph([], 'g', [], [])))\n"
            "print(onnx.defs.get_schema('NormalizedConv', 1, 'ncnn_onnx').name)\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, (done.returncode, done.stderr)
    assert done.stdout.strip() == "NormalizedConv"
