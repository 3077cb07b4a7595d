"""What export refuses (with the layer's name and the reason) and what it only reports."""

import logging
import warnings

import numpy as np
import pytest
import torch
from torch import nn

from export_checks import check_model, nc_nodes, run_evaluator, run_ort, session
from ncnn_onnx.export import ExportError, export
from ncnn_onnx.nn import NormalizedConv2d
from reference import assert_parity, nc_reference


def net(**layer_options):
    return nn.Sequential(
        NormalizedConv2d(3, 4, 3, padding=1), nn.ReLU(), NormalizedConv2d(4, 4, 3, padding=1, **layer_options)
    ).eval()


def test_bfloat16_layer_is_refused_by_name():
    model = net().to(torch.bfloat16)
    with pytest.raises(ExportError, match=r"layer '0' \(NormalizedConv2d\).*bfloat16.*float32, float16 or float64"):
        export(model, (torch.randn(2, 3, 8, 8, dtype=torch.bfloat16),))


def test_eps_that_vanishes_in_float32_is_refused_by_name():
    # The layer refuses such an eps at construction (same rule, tests/test_nn.py); this one is set later.
    with pytest.raises(ValueError, match=r"eps=1e-50 is not a finite, normal float32"):
        net(eps=1e-50)
    model = net()
    model[2].eps = 1e-50
    with pytest.raises(ExportError, match=r"layer '2' .*eps=1e-50 is not a finite, normal float32"):
        export(model, (torch.randn(2, 3, 8, 8),))


def test_mixed_float64_and_float32_layers_are_refused():
    model = net()
    model[2].double()

    class Casting(nn.Module):
        def __init__(self):
            super().__init__()
            self.model = model

        def forward(self, x):
            return self.model[2](torch.relu(self.model[0](x)).double())

    with pytest.raises(ExportError, match="float64"):
        export(Casting().eval(), (torch.randn(2, 3, 8, 8),))
    # One dtype per function body is the only limit: without the function, the same model exports.
    assert len(nc_nodes(export(Casting().eval(), (torch.randn(2, 3, 8, 8),), fallback=False))) == 2


def test_float64_model_runs_in_the_evaluator_and_warns_about_onnxruntime():
    model = net().double()
    x = torch.randn(2, 3, 7, 9, dtype=torch.float64) * 3 + 1
    with pytest.warns(UserWarning, match="no float64 Conv"):
        proto = export(model, (x,))
    check_model(proto)
    first, second = model[0], model[2]
    hidden = torch.relu(nc_reference(x, first.weight.detach(), first.bias.detach(), pads=1))
    ref = nc_reference(hidden, second.weight.detach(), second.bias.detach(), pads=1)
    assert_parity(run_evaluator(proto, x.numpy()), ref, torch.float64)


def test_bad_arguments():
    with pytest.raises(ValueError, match="opset must be >= 18"):
        export(net(), (torch.randn(2, 3, 8, 8),), opset=17)
    with pytest.raises(TypeError, match="torch.nn.Module"):
        export(lambda x: x, (torch.randn(2, 3, 8, 8),))


def test_model_without_nc_layers_exports_and_says_so():
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU()).eval()
    x = torch.randn(2, 3, 8, 8)
    with pytest.warns(UserWarning, match="Sequential has no NormalizedConv layer"):
        proto = export(model, (x,))
    assert not proto.functions and not nc_nodes(proto)
    assert all(o.domain != "ncnn_onnx" for o in proto.opset_import)
    with torch.no_grad():
        np.testing.assert_allclose(run_ort(session(proto), x.numpy()), model(x).numpy(), rtol=1e-5, atol=1e-5)


def test_model_with_nc_layers_does_not_warn(caplog):
    with warnings.catch_warnings():
        warnings.filterwarnings("error", message=".*NormalizedConv.*")
        with caplog.at_level(logging.INFO, logger="ncnn_onnx"):
            export(net(), (torch.randn(2, 3, 8, 8),))
    assert "exported 2 NormalizedConv node(s) with the fallback function" in caplog.text


class FunctionalOnly(nn.Module):
    """NC through the functional API, no layer: errors can only name the node and its module path."""

    def __init__(self, dtype):
        super().__init__()
        self.w = nn.Parameter(torch.randn(4, 3, 3, 3, dtype=dtype))

    def forward(self, x, shift=None):
        from ncnn_onnx import functional as ncf

        return ncf.normalized_conv2d(x if shift is None else x + shift, self.w, padding=1)


def test_functional_bfloat16_is_refused_by_node():
    with pytest.raises(ExportError, match=r"node '.*normalized_conv' \(layer '<root>'\): element type BFLOAT16"):
        export(FunctionalOnly(torch.bfloat16).eval(), (torch.randn(2, 3, 8, 8, dtype=torch.bfloat16),))


def test_keyword_inputs_are_dynamic_too():
    model = FunctionalOnly(torch.float32).eval()
    gen = torch.Generator().manual_seed(7)
    x, shift = torch.randn(2, 3, 8, 8, generator=gen), torch.randn(2, 3, 8, 8, generator=gen)
    proto = export(model, (x,), kwargs={"shift": shift})
    assert all(i.type.tensor_type.shape.dim[0].dim_param for i in proto.graph.input)
    x2, shift2 = torch.randn(3, 3, 10, 7, generator=gen), torch.randn(3, 3, 10, 7, generator=gen)
    with torch.no_grad():
        ref = nc_reference(x2 + shift2, model.w, pads=1)
    assert_parity(run_ort(session(proto), x2.numpy(), shift2.numpy()), ref, torch.float32)


def test_failed_export_leaves_the_model_as_it_was():
    class Failing(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = NormalizedConv2d(3, 4, 3, affine=True, weight_standardization=True)

        def forward(self, x):
            raise RuntimeError("boom")

    model = Failing().eval()
    weight, gain = model.conv.weight, model.conv.gain
    with pytest.raises(Exception, match="boom"):
        export(model, (torch.randn(2, 3, 8, 8),))
    assert model.conv.weight is weight and model.conv.gain is gain and model.conv.weight_standardization
