"""Whole networks: a small ResNet-style CNN, a 1d and a 3d network. Each is exported once and run
from that one file at several batch and input sizes, on random activations and on real photographs
at their raw 0-255 scale, against the same network evaluated in float64."""

import copy

import numpy as np
import onnx
import pytest
import torch
from torch import nn

from export_checks import check_model, initializer_names, nc_nodes, run_evaluator, run_ort, session
from ncnn_onnx.export import export
from ncnn_onnx.nn import NormalizedConv1d, NormalizedConv2d, NormalizedConv3d
from reference import assert_parity, photo_scales, photographs


class Block(nn.Module):
    def __init__(self, cin, cout, stride):
        super().__init__()
        self.conv1 = NormalizedConv2d(cin, cout, 3, stride, 1, bias=False, affine=True, weight_standardization=True)
        self.conv2 = NormalizedConv2d(cout, cout, 3, 1, 1, groups=2, padding_mode="reflect")
        self.project = None if (cin, stride) == (cout, 1) else NormalizedConv2d(cin, cout, 1, stride)

    def forward(self, x):
        skip = x if self.project is None else self.project(x)
        return torch.relu(self.conv2(torch.relu(self.conv1(x))) + skip)


class SmallResNet(nn.Module):
    def __init__(self, classes=5):
        super().__init__()
        self.stem = NormalizedConv2d(3, 8, 3, padding=1)
        self.pool = nn.MaxPool2d(2)
        self.stage1 = Block(8, 8, 1)
        self.stage2 = Block(8, 16, 2)
        self.depthwise = NormalizedConv2d(16, 16, 3, padding="same", groups=16, center=False)
        self.head = nn.Linear(16, classes)

    def forward(self, x):
        x = self.pool(torch.relu(self.stem(x)))
        x = self.stage2(self.stage1(x))
        x = torch.relu(self.depthwise(x))
        return self.head(torch.flatten(nn.functional.adaptive_avg_pool2d(x, 1), 1))


class Net1d(nn.Module):
    def __init__(self):
        super().__init__()
        self.a = NormalizedConv1d(2, 8, 5, padding=2, padding_mode="reflect")
        self.b = NormalizedConv1d(8, 8, 3, stride=2, dilation=2, padding=2, groups=4, affine=True)
        self.c = NormalizedConv1d(8, 4, 4, padding="same", scale=False)

    def forward(self, x):
        y = torch.relu(self.a(x))
        y = torch.relu(self.b(y)) + nn.functional.avg_pool1d(y, 2, ceil_mode=True)[..., : (y.shape[-1] + 1) // 2]
        return self.c(y).mean(-1)


class Net3d(nn.Module):
    def __init__(self):
        super().__init__()
        self.a = NormalizedConv3d(1, 4, 3, padding=1, padding_mode="replicate", weight_standardization=True)
        self.b = NormalizedConv3d(4, 6, 2, stride=2, groups=2)
        self.c = NormalizedConv3d(6, 6, 3, padding=1, affine=True)

    def forward(self, x):
        y = self.b(torch.relu(self.a(x)))
        return torch.relu(self.c(y)) + y


def prepared(model):
    torch.manual_seed(0)
    model = model.eval()
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("gain"):
                p.uniform_(0.5, 2.0)
            elif name.endswith("bias"):
                p.normal_(0, 0.5)
    return model


def float64_twin(model):
    return copy.deepcopy(model).double()


def check_against_float64(model, proto, inputs, dtype=torch.float32, evaluator_inputs=()):
    """ORT on every input, onnx.reference on the (small) evaluator inputs, the eager model too."""
    twin = float64_twin(model)
    sess = session(proto)
    errors = []
    for x in inputs:
        with torch.no_grad():
            ref = twin(x.double())
            errors.append(assert_parity(run_ort(sess, x.to(dtype).numpy()), ref, dtype))
            assert_parity(model(x.to(dtype)), ref, dtype)
    for x in evaluator_inputs:
        with torch.no_grad():
            ref = twin(x.double())
        errors.append(assert_parity(run_evaluator(proto, x.to(dtype).numpy()), ref, dtype))
    return max(errors)


@pytest.fixture(scope="module")
def resnet():
    model = prepared(SmallResNet())
    proto = export(model, (torch.randn(2, 3, 32, 32),))
    return model, proto


def test_resnet_structure(resnet):
    model, proto = resnet
    check_model(proto)
    layers = [m for m in model.modules() if isinstance(m, NormalizedConv2d)]
    nodes = nc_nodes(proto)
    assert len(nodes) == len(layers) == 7
    inits = initializer_names(proto)
    assert all(n.input[1] in inits and (n.input[2] in inits or n.input[2] == "") for n in nodes)
    assert [(f.domain, f.name) for f in proto.functions] == [("ncnn_onnx", "NormalizedConv")]
    assert {(o.domain, o.version) for o in proto.opset_import} >= {("ncnn_onnx", 1), ("", 20)}
    batch = proto.graph.input[0].type.tensor_type.shape.dim
    assert batch[0].dim_param and batch[2].dim_param and batch[3].dim_param and batch[1].dim_value == 3
    # The exported model is still the trained one: the folded weights were swapped back out.
    assert model.stage1.conv1.weight_standardization and model.stage1.conv1.gain is not None


def test_resnet_random_inputs_at_several_sizes(resnet):
    model, proto = resnet
    gen = torch.Generator().manual_seed(4)
    sizes = [(1, 32, 32, 1), (3, 24, 40, 5), (2, 45, 33, 0.1)]
    inputs = [torch.randn(b, 3, h, w, generator=gen) * s for b, h, w, s in sizes]
    check_against_float64(model, proto, inputs, evaluator_inputs=[inputs[0][:, :, :16, :16]])


@pytest.mark.parametrize("scale_name", ["raw", "unit", "standardized"])
def test_resnet_photographs(resnet, scale_name):
    model, proto = resnet
    photos = torch.from_numpy(photo_scales(photographs(size=48, count=6))[scale_name]).float()
    evaluator_inputs = [photos[1:2, :, :20, :20]] if scale_name == "raw" else []
    check_against_float64(model, proto, [photos, photos[:1, :, :40, :36]], evaluator_inputs=evaluator_inputs)


def test_resnet_float16():
    model = prepared(SmallResNet()).half()
    proto = export(model, (torch.randn(2, 3, 32, 32).half(),))
    check_model(proto)
    assert {proto.graph.input[0].type.tensor_type.elem_type} == {onnx.TensorProto.FLOAT16}
    photos = torch.from_numpy(photo_scales(photographs(size=32, count=4))["unit"]).half()
    sess = session(proto)
    y = run_ort(sess, photos.numpy())
    assert y.dtype == np.float16
    with torch.no_grad():
        assert_parity(y, float64_twin(model)(photos.double()), torch.float16)


def test_net1d():
    model = prepared(Net1d())
    proto = export(model, (torch.randn(2, 2, 40),))
    check_model(proto)
    assert len(nc_nodes(proto)) == 3
    gen = torch.Generator().manual_seed(5)
    inputs = [torch.randn(b, 2, n, generator=gen) * 4 + 3 for b, n in [(2, 40), (1, 57), (4, 24)]]
    check_against_float64(model, proto, inputs, evaluator_inputs=[inputs[1]])


def test_net3d():
    model = prepared(Net3d())
    proto = export(model, (torch.randn(2, 1, 8, 8, 8),))
    check_model(proto)
    assert len(nc_nodes(proto)) == 3
    gen = torch.Generator().manual_seed(6)
    inputs = [torch.randn(b, 1, *s, generator=gen) + 2 for b, s in [(2, (8, 8, 8)), (1, (10, 6, 12)), (3, (6, 6, 6))]]
    check_against_float64(model, proto, inputs, evaluator_inputs=[inputs[2][:1]])


def test_fallback_false_file_and_names(tmp_path):
    model = prepared(SmallResNet())
    path = tmp_path / "resnet.onnx"
    proto = export(
        model, (torch.randn(2, 3, 32, 32),), path, fallback=False, input_names=["image"], output_names=["logits"]
    )
    assert not proto.functions and len(nc_nodes(proto)) == 7
    assert [i.name for i in proto.graph.input] == ["image"] and [o.name for o in proto.graph.output] == ["logits"]
    loaded = onnx.load(path)
    assert loaded == proto
    check_model(loaded)
    # Without the function, the node is only runnable where its kernel is registered.
    with pytest.raises(Exception, match="NormalizedConv"):
        session(loaded)


def test_static_shapes_on_request():
    model = prepared(Net1d())
    proto = export(model, (torch.randn(2, 2, 40),), dynamic=False)
    assert [d.dim_value for d in proto.graph.input[0].type.tensor_type.shape.dim] == [2, 2, 40]
    x = torch.randn(2, 2, 40)
    check_against_float64(model, proto, [x])
