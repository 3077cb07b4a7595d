"""The embedded standard-op function, node by node: hand-written single-node models over the op's
attribute grid (auto_pad and omitted attributes included, which the exporter never writes), run in
plain ONNX Runtime and in onnx.reference against the float64 unfold reference."""

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from onnx import TensorProto, helper, numpy_helper

from export_checks import check_model, run_evaluator, run_ort, session
from ncnn_onnx.export import build_function
from reference import (
    assert_non_finite_rule, assert_parity, nc_reference, non_finite_input, photo_scales, photographs,
)

ATTRIBUTES = {"auto_pad", "dilations", "group", "kernel_shape", "pads", "strides", "epsilon", "center", "scale"}
ELEM = {np.float32: TensorProto.FLOAT, np.float16: TensorProto.FLOAT16, np.float64: TensorProto.DOUBLE}


def single_node_model(x_shape, w, b, attrs, dtype=np.float32, opset=20):
    """X a graph input with symbolic batch and spatial dims; W, B initializers."""
    elem = ELEM[dtype]
    ndim = len(x_shape) - 2
    x = helper.make_tensor_value_info("X", elem, ["N", x_shape[1], *[f"D{i}" for i in range(ndim)]])
    y = helper.make_tensor_value_info("Y", elem, ["N", w.shape[0], *[f"O{i}" for i in range(ndim)]])
    inits = [numpy_helper.from_array(w.astype(dtype), "W")]
    if b is not None:
        inits.append(numpy_helper.from_array(b.astype(dtype), "B"))
    inputs = ["X", "W", "B" if b is not None else ""]
    node = helper.make_node("NormalizedConv", inputs, ["Y"], domain="ncnn_onnx", **attrs)
    graph = helper.make_graph([node], "nc", [x], [y], inits)
    working = TensorProto.DOUBLE if dtype == np.float64 else TensorProto.FLOAT
    return helper.make_model(
        graph,
        opset_imports=[helper.make_opsetid("", opset), helper.make_opsetid("ncnn_onnx", 1)],
        functions=[build_function(opset, working)],
    )


def resolved_pads(spatial, kernel, attrs):
    """The explicit pads ONNX Conv uses for these attributes (auto_pad resolved)."""
    k = len(kernel)
    stride = attrs.get("strides", [1] * k)
    dilation = attrs.get("dilations", [1] * k)
    mode = attrs.get("auto_pad", "NOTSET")
    if mode == "NOTSET":
        return tuple(attrs.get("pads", [0] * 2 * k))
    if mode == "VALID":
        return (0,) * (2 * k)
    begin, end = [], []
    for d in range(k):
        out = math.ceil(spatial[d] / stride[d])
        total = max((out - 1) * stride[d] + (kernel[d] - 1) * dilation[d] + 1 - spatial[d], 0)
        small, large = total // 2, total - total // 2
        begin.append(small if mode == "SAME_UPPER" else large)
        end.append(large if mode == "SAME_UPPER" else small)
    return tuple(begin + end)


def reference(x, w, b, attrs):
    kernel = w.shape[2:]
    k = len(kernel)
    return nc_reference(
        x, w, b,
        stride=tuple(attrs.get("strides", [1] * k)),
        pads=resolved_pads(x.shape[2:], kernel, attrs),
        dilation=tuple(attrs.get("dilations", [1] * k)),
        groups=attrs.get("group", 1),
        eps=attrs.get("epsilon", 1e-5),
        center=bool(attrs.get("center", 1)),
        scale=bool(attrs.get("scale", 1)),
    )


# (x shape, w shape, bias, attributes)
GRID = [
    ((2, 4, 19), (6, 2, 3), True, dict(pads=[1, 2], group=2, strides=[2], center=0)),
    ((2, 4, 17), (4, 1, 4), False, dict(group=4, strides=[2], auto_pad="SAME_LOWER")),
    ((2, 4, 9, 8), (6, 4, 3, 3), True, dict(pads=[1, 1, 1, 1])),
    ((2, 6, 11, 9), (6, 2, 3, 2), True, dict(group=3, strides=[2, 1], dilations=[1, 2], pads=[0, 1, 1, 0], scale=0)),
    ((2, 4, 9, 10), (8, 4, 2, 2), True, dict(auto_pad="SAME_UPPER", strides=[2, 2])),
    ((1, 3, 7, 8), (5, 3, 3, 3), False, dict(auto_pad="VALID", center=0, scale=0)),
    ((2, 3, 7, 6), (5, 3, 3, 1), True, dict(kernel_shape=[3, 1])),
    ((2, 8, 6, 7), (8, 1, 3, 3), True, dict(group=8, pads=[1, 1, 1, 1], epsilon=1e-3)),
    ((2, 4, 5, 6, 7), (6, 2, 3, 2, 3), True, dict(group=2, pads=[1, 0, 1, 1, 1, 0], strides=[1, 2, 1])),
    ((1, 2, 4, 5, 6), (3, 2, 2, 2, 2), False, dict(auto_pad="SAME_UPPER")),
]


@pytest.fixture(params=GRID, ids=lambda g: f"{len(g[0]) - 2}d-" + "-".join(f"{k}{v}" for k, v in g[3].items()))
def case(request):
    x_shape, w_shape, has_bias, attrs = request.param
    rng = np.random.default_rng(len(request.node.name))
    x = rng.standard_normal(x_shape) * 3 + 2
    w = rng.standard_normal(w_shape)
    b = rng.standard_normal(w_shape[0]) if has_bias else None
    return x, w, b, attrs


def test_function_matches_reference_in_onnxruntime_and_evaluator(case):
    x, w, b, attrs = case
    model = single_node_model(x.shape, w, b, attrs)
    check_model(model)
    xf, wf = x.astype(np.float32), w.astype(np.float32)
    ref = reference(xf, wf, None if b is None else b.astype(np.float32), attrs)
    assert_parity(run_ort(session(model), xf), ref, np.float32)
    assert_parity(run_evaluator(model, xf), ref, np.float32)


def test_function_float16_and_float64(case):
    x, w, b, attrs = case
    half = single_node_model(x.shape, w, b, attrs, np.float16)
    x16, w16 = x.astype(np.float16), w.astype(np.float16)
    ref16 = reference(x16, w16, None if b is None else b.astype(np.float16), attrs)
    y16 = run_ort(session(half), x16)
    assert y16.dtype == np.float16
    assert_parity(y16, ref16, np.float16)
    double = single_node_model(x.shape, w, b, attrs, np.float64)
    assert_parity(run_evaluator(double, x), reference(x, w, b, attrs), np.float64)


@pytest.mark.parametrize("center,scale", [(0, 0), (0, 1), (1, 0), (1, 1)])
@pytest.mark.parametrize("value", [np.inf, -np.inf, np.nan], ids=["inf", "-inf", "nan"])
@pytest.mark.parametrize("ndim", [1, 2])
def test_non_finite_inputs_follow_the_rule(ndim, value, center, scale):
    """docs/op.md, "Non-finite values", in plain ONNX Runtime (float32 and float16) and in onnx.reference:
    NaN exactly where a patch holds a NaN or inf (center or scale), Conv's IEEE results otherwise, and
    outputs of finite patches untouched."""
    spatial = (13,) if ndim == 1 else (9, 10)
    x = non_finite_input((2, 4, *spatial), value, seed=ndim)
    rng = np.random.default_rng(ndim)
    w, b = rng.standard_normal((6, 2) + (3,) * ndim), rng.standard_normal(6)
    attrs = dict(pads=[1] * (2 * ndim), group=2, center=center, scale=scale)
    geometry = dict(pads=1, groups=2, center=bool(center), scale=bool(scale))
    for dtype in (np.float32, np.float16):
        xd, wd, bd = x.astype(dtype), w.astype(dtype), b.astype(dtype)
        model = single_node_model(x.shape, w, b, attrs, dtype)
        assert_non_finite_rule(run_ort(session(model), xd), xd, wd, bd, dtype, **geometry)
        if dtype == np.float32:
            with np.errstate(invalid="ignore"):  # numpy's warnings on inf - inf in onnx.reference's ops
                y = run_evaluator(model, xd)
            assert_non_finite_rule(y, xd, wd, bd, dtype, **geometry)


@pytest.mark.parametrize("epsilon", [1e-5, 1e-30, 2.0**-126])
@pytest.mark.parametrize("value, channels", [(200.0, 1), (7.7, 3), (0.1, 3)])
def test_flat_patches_give_exactly_the_bias(epsilon, value, channels):
    """docs/op.md, "Limits": for every accepted epsilon an exactly flat patch gives exactly B, in plain
    ONNX Runtime and in onnx.reference (the rounded channel mean of 3 x 7.7 would not centre to 0)."""
    rng = np.random.default_rng(channels)
    w, b = rng.standard_normal((4, channels, 3, 3)), rng.standard_normal(4)
    model = single_node_model((2, channels, 6, 7), w, b, dict(epsilon=epsilon))
    x = np.full((2, channels, 6, 7), value, np.float32)
    expected = np.broadcast_to(b.astype(np.float32).reshape(1, 4, 1, 1), (2, 4, 4, 5))
    np.testing.assert_array_equal(run_ort(session(model), x), expected)
    np.testing.assert_array_equal(run_evaluator(model, x), expected)


def test_dilated_same_padding_in_evaluator():
    """ONNX allows dilations with SAME_* auto_pad, ONNX Runtime's Conv (and so the body there) does not;
    onnx.reference does."""
    rng = np.random.default_rng(5)
    x, w = rng.standard_normal((2, 4, 9, 8)), rng.standard_normal((6, 2, 2, 3))
    attrs = dict(group=2, dilations=[3, 2], auto_pad="SAME_LOWER")
    model = single_node_model(x.shape, w, None, attrs)
    check_model(model)
    xf = x.astype(np.float32)
    assert_parity(run_evaluator(model, xf), reference(xf, w.astype(np.float32), None, attrs), np.float32)


def one_pass_nc(x, w, b, pads, groups):
    """The formulas docs/architecture.md, "Numerics" forbids (E[v^2] - mu^2 and conv(x, W) - mu * sum(W)) in float32."""
    x, w = torch.from_numpy(x).float(), torch.from_numpy(w).float()
    fan_in = w[0].numel()
    ones = torch.ones(groups, x.shape[1] // groups, *w.shape[2:])
    mu = F.conv2d(x, ones, padding=pads, groups=groups) / fan_in
    var = F.conv2d(x * x, ones, padding=pads, groups=groups) / fan_in - mu * mu
    wsum = w.flatten(1).sum(1).reshape(groups, -1)
    y = F.conv2d(x, w, padding=pads, groups=groups).unflatten(1, (groups, -1))
    y = (y - mu.unsqueeze(2) * wsum.reshape(1, groups, -1, 1, 1)) / torch.sqrt(var.clamp_min(0) + 1e-5).unsqueeze(2)
    return y.flatten(1, 2) + torch.from_numpy(b).float().reshape(1, -1, 1, 1)


@pytest.mark.parametrize("scale_name", ["raw", "unit", "standardized"])
@pytest.mark.parametrize("kernel,groups", [(3, 1), (5, 1), (3, 3)])
def test_photographs(scale_name, kernel, groups):
    photos = photo_scales(photographs(size=40, count=6))[scale_name].astype(np.float32)
    rng = np.random.default_rng(kernel * 10 + groups)
    w = rng.standard_normal((6, 3 // groups, kernel, kernel)).astype(np.float32)
    b = rng.standard_normal(6).astype(np.float32)
    pad = kernel // 2
    attrs = dict(pads=[pad] * 4, group=groups)
    model = single_node_model(photos.shape, w, b, attrs)
    ref = nc_reference(photos, w, b, pads=pad, groups=groups)
    assert_parity(run_ort(session(model), photos), ref, np.float32)
    if scale_name == "raw":
        # These photographs do break the forbidden formulas, so passing here means something.
        with pytest.raises(AssertionError, match="parity error"):
            assert_parity(one_pass_nc(photos, w, b, pad, groups), ref, np.float32)
        small = photos[1:2, :, :16, :16]
        assert_parity(run_evaluator(model, small), nc_reference(small, w, b, pads=pad, groups=groups), np.float32)


def test_function_declares_attributes_and_defaults():
    f = build_function(20)
    assert (f.domain, f.name, list(f.input), list(f.output)) == ("ncnn_onnx", "NormalizedConv", ["X", "W", "B"], ["Y"])
    declared = set(f.attribute) | {a.name for a in f.attribute_proto}
    assert declared == ATTRIBUTES
    defaults = {a.name: helper.get_attribute_value(a) for a in f.attribute_proto}
    assert defaults == {"epsilon": pytest.approx(1e-5), "center": 1, "scale": 1}
    ops = {n.op_type for n in f.node}
    assert {n.domain for n in f.node} == {""} and "NormalizedConv" not in ops
    with pytest.raises(ValueError, match="opset >= 18"):
        build_function(17)
