import pytest
import torch
from torch import nn

from ncnn_onnx import convert_model
from ncnn_onnx.nn import NormalizedConv1d, NormalizedConv2d


class Block(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 8, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(8)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(8, 8, 3, padding=1, padding_mode="reflect")
        self.gn = nn.GroupNorm(2, 8)
        self.up = nn.ConvTranspose2d(8, 4, 2, stride=2)
        self.head = nn.Sequential(nn.Conv1d(4, 2, 1), nn.BatchNorm1d(2))

    def forward(self, x):
        x = self.relu(self.bn1(self.conv1(x)))
        x = self.up(self.gn(self.conv2(x)))
        return self.head(x.flatten(2))


def test_converts_every_plain_conv_with_its_weights():
    model = Block()
    converted, report = convert_model(model, return_report=True)
    assert isinstance(converted.conv1, NormalizedConv2d)
    assert isinstance(converted.conv2, NormalizedConv2d) and converted.conv2.padding_mode == "reflect"
    assert isinstance(converted.head[0], NormalizedConv1d)
    assert torch.equal(converted.conv1.weight, model.conv1.weight)
    assert converted.conv1.bias is None
    assert type(converted.up) is nn.ConvTranspose2d
    assert report.converted == ["conv1", "conv2", "head.0"]
    assert report.skipped == ["up: ConvTranspose2d has no NC counterpart"]
    assert isinstance(model.conv1, nn.Conv2d) and not isinstance(model.conv1, NormalizedConv2d), "copy by default"
    assert converted(torch.randn(2, 3, 8, 8)).shape == (2, 2, 256)


def test_following_norms_are_removed():
    converted, report = convert_model(Block(), norms="following", return_report=True)
    assert report.removed_norms == ["bn1", "gn", "head.1"]
    assert isinstance(converted.bn1, nn.Identity) and isinstance(converted.head[1], nn.Identity)


def test_named_norms_and_options():
    converted, report = convert_model(Block(), norms=["gn"], eps=1e-3, affine=True, return_report=True)
    assert report.removed_norms == ["gn"]
    assert isinstance(converted.bn1, nn.BatchNorm2d)
    assert converted.conv1.eps == 1e-3 and converted.conv1.gain is not None


def test_inplace_and_idempotent():
    model = Block()
    same = convert_model(model, inplace=True)
    assert same is model and isinstance(model.conv1, NormalizedConv2d)
    _, report = convert_model(model, return_report=True)
    assert report.converted == []


def test_bad_arguments():
    with pytest.raises(ValueError, match="norms must be"):
        convert_model(Block(), norms="all")
    with pytest.raises(ValueError, match="does not have"):
        convert_model(Block(), norms=["bn9"])
    with pytest.raises(ValueError, match="no normalization layer"):
        convert_model(Block(), norms=["relu"])
    with pytest.raises(TypeError, match="torch.nn.Module"):
        convert_model("resnet")
