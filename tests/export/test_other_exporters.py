"""torch.onnx.export called on an NC model without going through ncnn_onnx.export: both of torch's exporters
refuse with a message naming ncnn_onnx.export, instead of writing a wrong model (the TorchScript exporter
wrote `[Constant, Relu]`, an output independent of the input) or failing with a dispatch error that does
not say what to do."""

import io
import warnings

import pytest
import torch
from torch import nn

from export_checks import nc_nodes
from ncnn_onnx.export import ExportError, export
from ncnn_onnx.nn import NormalizedConv2d


class FunctionalOnly(nn.Module):
    def __init__(self):
        super().__init__()
        self.w = nn.Parameter(torch.randn(4, 3, 3, 3))

    def forward(self, x):
        from ncnn_onnx import functional as ncf

        return torch.relu(ncf.normalized_conv2d(x, self.w, padding=1))


def layer_model():
    return nn.Sequential(NormalizedConv2d(3, 4, 3, padding=1), nn.ReLU()).eval()


@pytest.mark.parametrize("make", [layer_model, lambda: FunctionalOnly().eval()], ids=["layer", "functional"])
@pytest.mark.parametrize("grad", [True, False], ids=["grad", "no_grad"])
def test_torchscript_exporter_refuses(make, grad, tmp_path):
    target = tmp_path / "ts.onnx"
    with torch.set_grad_enabled(grad), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the TorchScript exporter's deprecation notice
        with pytest.raises(ExportError, match=r"dynamo=False.*use ncnn_onnx\.export\.export\(model, args, f\)"):
            torch.onnx.export(make(), (torch.randn(1, 3, 8, 8),), str(target), dynamo=False)
    assert not target.exists()


def test_torchscript_exporter_to_a_buffer_refuses():
    buffer = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with pytest.raises(ExportError, match="ncnn-onnx export"):
            torch.onnx.export(layer_model(), (torch.randn(1, 3, 8, 8),), buffer, dynamo=False)
    assert buffer.getvalue() == b""


def test_dynamo_exporter_error_names_ncnn_onnx_export(tmp_path):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with pytest.raises(Exception, match=r"called directly.*use ncnn_onnx\.export\.export") as caught:
            torch.onnx.export(layer_model(), (torch.randn(1, 3, 8, 8),), str(tmp_path / "d.onnx"), dynamo=True)
    assert "No ONNX function found" not in str(caught.value)


def test_refusals_leave_ncnn_onnx_export_and_torch_export_working():
    model = layer_model()
    x = torch.randn(1, 3, 8, 8)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with pytest.raises(ExportError):
            torch.onnx.export(model, (x,), io.BytesIO(), dynamo=False)
    assert len(nc_nodes(export(model, (x,)))) == 1
    assert not torch.onnx.is_in_onnx_export()
    # torch.export alone is not an ONNX export: the op stays one opaque node, as before.
    program = torch.export.export(model, (x,))
    assert any("normalized_conv" in str(node.target) for node in program.graph.nodes)
    # plain TorchScript tracing (no ONNX) still traces the layer correctly.
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # tracer and deprecation notices
        traced = torch.jit.trace(model, (x,), check_trace=False)
        x2 = torch.randn(1, 3, 8, 8)
        torch.testing.assert_close(traced(x2), model(x2))
