"""Real architectures (torchvision, timm), converted with convert_model and exported: both deployed paths
match eager NC, and a fused norm+activation layer keeps its activation through the conversion."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
import torch
from torch import nn

from ncnn_onnx import convert_model, runtime
from ncnn_onnx.export import export
from ncnn_onnx.nn import NORMALIZED_CONV_TYPES
from reference import assert_parity

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))
import model_zoo  # noqa: E402


@pytest.mark.parametrize("name", ["resnet18", "mobilenet_v3_small"])
def test_converted_torchvision_model_matches_eager_on_both_paths(name, tmp_path):
    original = model_zoo.build(name, num_classes=10)
    model = model_zoo.nc_version(original)
    convs = model_zoo.count_modules(original, lambda m: isinstance(m, nn.Conv2d))
    assert model_zoo.count_modules(model, lambda m: isinstance(m, NORMALIZED_CONV_TYPES)) == convs
    x = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        expected = model(x).numpy()
    path = tmp_path / f"{name}.onnx"
    export(model, (x,), str(path))
    feed = {ort.InferenceSession(str(path)).get_inputs()[0].name: x.numpy()}
    assert_parity(runtime.InferenceSession(str(path)).run(None, feed)[0], expected, np.float32)
    plain = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    assert_parity(plain.run(None, feed)[0], expected, np.float32)


def test_timm_norm_activation_layers_keep_their_activation():
    """timm's BatchNormAct2d normalizes and then activates: removing the norm must leave the activation."""
    original = model_zoo.build("timm_mobilenetv3_small_100", num_classes=10)
    activations = (nn.Hardswish, nn.ReLU)
    before = model_zoo.count_modules(original, lambda m: isinstance(m, activations))
    model, report = convert_model(original, norms="following", return_report=True)
    assert report.removed_norms
    assert model_zoo.count_modules(model, lambda m: isinstance(m, activations)) == before
    assert model_zoo.count_modules(model, lambda m: isinstance(m, nn.modules.batchnorm._BatchNorm)) == 0
    # Eager: the converted model is the original with NC for each conv+BN and the same activations.
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        assert torch.isfinite(model.eval()(x)).all()


def test_norm_layer_with_unknown_submodules_is_refused_by_name():
    class NormWithExtra(nn.BatchNorm2d):
        def __init__(self, channels):
            super().__init__(channels)
            self.gate = nn.Sigmoid()

    model = nn.Sequential(nn.Conv2d(3, 4, 3), NormWithExtra(4))
    with pytest.raises(ValueError, match=r"cannot remove the norm layer '1': NormWithExtra carries submodules \['gate'\]"):
        convert_model(model, norms="following")
