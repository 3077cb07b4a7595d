"""export() on single NC layers over the layer's argument grid: one node with the right attributes,
folded weights as initializers and nothing computed on them, and parity in plain ONNX Runtime and
onnx.reference at several batch and spatial sizes from one exported file."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from export_checks import attributes, check_model, initializer_names, nc_nodes, run_evaluator, run_ort, session
from ncnn_onnx import functional as ncf
from ncnn_onnx._arguments import resolve_pads
from ncnn_onnx.export import export
from ncnn_onnx.nn import NormalizedConv1d, NormalizedConv2d, NormalizedConv3d
from reference import assert_parity, nc_reference

LAYERS = {1: NormalizedConv1d, 2: NormalizedConv2d, 3: NormalizedConv3d}
# Two spatial sizes per rank, both run from the same file.
SPATIAL = {1: [(23,), (31,)], 2: [(11, 10), (16, 13)], 3: [(7, 6, 5), (9, 8, 6)]}

# (ndim, in, out, kernel, stride, padding, dilation, groups, padding_mode, NC options)
GRID = [
    (1, 4, 6, 3, 1, 1, 1, 2, "zeros", {}),
    (1, 4, 4, 3, 2, 2, 3, 4, "zeros", dict(center=False)),  # depthwise, strided, dilated
    (1, 4, 6, 4, 1, "same", 1, 1, "reflect", dict(bias=False)),  # even kernel: asymmetric pads
    (2, 4, 6, 3, 1, 1, 1, 1, "zeros", dict(affine=True, weight_standardization=True)),
    (2, 6, 6, 3, 2, 0, 1, 3, "zeros", dict(scale=False)),
    (2, 4, 8, 2, 1, "same", 2, 1, "zeros", dict(eps=1e-3)),  # even kernel, dilated: asymmetric pads
    (2, 8, 8, 3, 1, 1, 1, 8, "replicate", dict(affine=True)),  # depthwise
    (2, 3, 5, (3, 1), (2, 1), (1, 0), (1, 2), 1, "circular", dict(weight_standardization=True)),
    (2, 4, 6, 3, 1, 1, 1, 2, "reflect", dict(center=False, scale=False, bias=False)),
    (3, 4, 4, 3, 1, 1, 1, 2, "zeros", dict(affine=True, weight_standardization=True)),
    (3, 2, 3, 2, 2, 1, 1, 1, "replicate", dict(center=False)),
]


def _id(g):
    ndim, cin, cout, k, s, p, d, groups, mode, opts = g
    return f"{ndim}d-k{k}-s{s}-p{p}-d{d}-g{groups}-{mode}" + "".join(f"-{k}{v}" for k, v in opts.items())


def make_layer(g):
    ndim, cin, cout, kernel, stride, padding, dilation, groups, mode, opts = g
    torch.manual_seed(0)
    layer = LAYERS[ndim](cin, cout, kernel, stride, padding, dilation, groups, padding_mode=mode, **opts)
    with torch.no_grad():
        if layer.gain is not None:
            layer.gain.uniform_(0.5, 2.0)
        if layer.bias is not None:
            layer.bias.normal_()
    return layer.eval()


def layer_reference(layer, x):
    """nc_reference on the layer's effective weight, non-zero padding modes applied first in float64."""
    x = x.double()
    pads = resolve_pads(layer.padding, layer.kernel_size, layer.stride, layer.dilation)
    if layer.padding_mode != "zeros":
        x = F.pad(x, layer._reversed_padding_repeated_twice, mode=layer.padding_mode)
        pads = 0
    with torch.no_grad():
        w = layer.effective_weight().double()
    b = None if layer.bias is None else layer.bias.detach().double()
    return nc_reference(x, w, b, layer.stride, pads, layer.dilation, layer.groups, layer.eps, layer.center, layer.scale)


@pytest.mark.parametrize("g", GRID, ids=_id)
def test_single_layer(g):
    layer = make_layer(g)
    ndim, cin = g[0], g[1]
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(2, cin, *SPATIAL[ndim][0], generator=gen) * 3 + 2
    proto = export(layer, (x,))
    check_model(proto)

    (node,) = nc_nodes(proto)
    inits = initializer_names(proto)
    assert node.input[1] == "weight" and node.input[1] in inits
    assert node.input[2] == ("bias" if layer.bias is not None else "")
    # Weight standardization and gain are folded: W is read by this node only, and the only other
    # node a layer may bring is the Pad of its padding mode.
    assert [n.op_type for n in proto.graph.node if n is not node] == ([] if layer.padding_mode == "zeros" else ["Pad"])
    assert sum(name in n.input for n in proto.graph.node for name in ["weight"]) == 1
    assert set(inits) <= {"weight", "bias"} | {i for n in proto.graph.node if n.op_type == "Pad" for i in n.input}
    weight = next(t for t in proto.graph.initializer if t.name == "weight")
    np.testing.assert_array_equal(
        np.frombuffer(weight.raw_data, np.float32).reshape(tuple(weight.dims)),
        layer.effective_weight().detach().numpy(),
    )

    a = attributes(node)
    pads = resolve_pads(layer.padding, layer.kernel_size, layer.stride, layer.dilation)
    expected_pads = list(pads) if layer.padding_mode == "zeros" else [0] * (2 * ndim)
    assert (a["strides"], a["dilations"], a["pads"], a["group"]) == (
        list(layer.stride), list(layer.dilation), expected_pads, layer.groups,
    )
    assert a["kernel_shape"] == list(layer.kernel_size)
    assert (a["epsilon"], a["center"], a["scale"]) == (pytest.approx(layer.eps), int(layer.center), int(layer.scale))

    sess = session(proto)
    for batch, spatial in [(2, SPATIAL[ndim][0]), (3, SPATIAL[ndim][1]), (1, SPATIAL[ndim][1])]:
        xi = torch.randn(batch, cin, *spatial, generator=gen) * 3 + 2
        ref = layer_reference(layer, xi)
        assert_parity(run_ort(sess, xi.numpy()), ref, np.float32)
        with torch.no_grad():
            assert_parity(layer(xi), ref, torch.float32)
    small = x[:1]
    assert_parity(run_evaluator(proto, small.numpy()), layer_reference(layer, small), np.float32)


@pytest.mark.parametrize("g", [GRID[3], GRID[7], GRID[9]], ids=_id)
def test_single_layer_float16(g):
    layer = make_layer(g).half()
    ndim, cin = g[0], g[1]
    x = (torch.randn(3, cin, *SPATIAL[ndim][1], generator=torch.Generator().manual_seed(2)) * 3 + 2).half()
    proto = export(layer, (x[:2],))
    check_model(proto)
    (node,) = nc_nodes(proto)
    assert proto.graph.input[0].type.tensor_type.elem_type == 10  # FLOAT16
    y = run_ort(session(proto), x.numpy())
    assert y.dtype == np.float16
    assert_parity(y, layer_reference(layer, x), torch.float16)


class ComputedWeight(nn.Module):
    """The functional API on a weight computed from parameters (big enough that torch.onnx's own
    optimizer leaves the arithmetic alone), and on a weight given at run time."""

    def __init__(self):
        super().__init__()
        self.w = nn.Parameter(torch.randn(128, 64, 3, 3))
        self.b = nn.Parameter(torch.randn(128))

    def forward(self, x, runtime_w):
        y = ncf.normalized_conv2d(x, self.w * 2 + 0.5, self.b.exp(), padding=1)
        return y + ncf.normalized_conv2d(x, runtime_w.reshape(128, 64, 1, 1))


def test_constant_weight_arithmetic_is_folded_and_runtime_weights_stay_inputs():
    model = ComputedWeight().eval()
    gen = torch.Generator().manual_seed(3)
    x, rw = torch.randn(2, 64, 8, 8, generator=gen), torch.randn(128, 64, generator=gen)
    proto = export(model, (x, rw))
    check_model(proto)
    folded, runtime = nc_nodes(proto)
    inits = initializer_names(proto)
    assert folded.input[1] in inits and folded.input[2] in inits
    producers = {o: n.op_type for n in proto.graph.node for o in n.output}
    assert producers.get(runtime.input[1]) == "Reshape"  # from the graph input: legal, not folded
    assert not any(n.op_type in ("Mul", "Add", "Exp") and n.output[0] in folded.input for n in proto.graph.node)
    with torch.no_grad():
        ref = nc_reference(x, model.w * 2 + 0.5, model.b.exp(), pads=1) + nc_reference(x, rw.reshape(128, 64, 1, 1))
    assert_parity(run_ort(session(proto), x.numpy(), rw.numpy()), ref, np.float32)


@pytest.mark.parametrize("opset", [18, 23])
def test_other_opsets(opset):
    layer = make_layer(GRID[7])  # circular padding: Pad 'wrap' exists from opset 18 on
    x = torch.randn(2, 3, 11, 10, generator=torch.Generator().manual_seed(8)) * 3 + 2
    proto = export(layer, (x,), opset=opset)
    check_model(proto)
    assert {(o.domain, o.version) for o in proto.opset_import} == {("", opset), ("ncnn_onnx", 1)}
    assert [(o.domain, o.version) for o in proto.functions[0].opset_import] == [("", opset)]
    assert_parity(run_ort(session(proto), x.numpy()), layer_reference(layer, x), np.float32)
