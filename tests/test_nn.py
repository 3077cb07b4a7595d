import copy
import re
import warnings

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from ncnn_onnx.nn import NormalizedConv1d, NormalizedConv2d, NormalizedConv3d
from reference import assert_parity, nc_reference, photographs

LAYERS = {1: (NormalizedConv1d, nn.Conv1d), 2: (NormalizedConv2d, nn.Conv2d), 3: (NormalizedConv3d, nn.Conv3d)}
SPATIAL = {1: (17,), 2: (9, 8), 3: (6, 5, 4)}
PAD_MODES = {"reflect": "reflect", "replicate": "replicate", "circular": "circular"}


@pytest.mark.parametrize("ndim", [1, 2, 3])
def test_constructor_and_state_dict_match_conv(ndim):
    nc_cls, conv_cls = LAYERS[ndim]
    kwargs = dict(stride=2, padding=1, dilation=1, groups=2, bias=True)
    conv = conv_cls(4, 6, 3, **kwargs)
    nc = nc_cls(4, 6, 3, **kwargs)
    assert isinstance(nc, conv_cls)
    assert nc.state_dict().keys() == conv.state_dict().keys()
    nc.load_state_dict(conv.state_dict())
    assert torch.equal(nc.weight, conv.weight)
    assert repr(nc).startswith(f"NormalizedConv{ndim}d(4, 6, kernel_size=")
    assert "eps" not in repr(nc)
    assert "eps=0.001, center=False" in repr(nc_cls(4, 6, 3, eps=1e-3, center=False))


@pytest.mark.parametrize("ndim", [1, 2, 3])
@pytest.mark.parametrize("padding_mode", ["zeros", "reflect", "replicate", "circular"])
def test_layer_matches_reference(ndim, padding_mode):
    nc_cls, _ = LAYERS[ndim]
    torch.manual_seed(0)
    layer = nc_cls(4, 6, 3, padding=1, padding_mode=padding_mode, groups=2)
    x = torch.randn(2, 4, *SPATIAL[ndim]) * 5 + 3
    y = layer(x)
    if padding_mode == "zeros":
        xp, pads = x, 1
    else:
        xp, pads = F.pad(x, [1] * (2 * ndim), mode=PAD_MODES[padding_mode]), 0
    ref = nc_reference(xp, layer.weight.detach(), layer.bias.detach(), pads=pads, groups=2)
    assert_parity(y.detach(), ref, torch.float32)


def test_same_padding_with_even_kernel_and_dilation():
    layer = NormalizedConv2d(3, 4, 4, padding="same", dilation=2)
    x = torch.randn(1, 3, 10, 9)
    assert layer(x).shape == (1, 4, 10, 9)


def test_affine_gain_and_weight_standardization():
    torch.manual_seed(1)
    layer = NormalizedConv2d(3, 5, 3, padding=1, affine=True, weight_standardization=True)
    with torch.no_grad():
        layer.gain.copy_(torch.linspace(0.5, 2.0, 5))
    x = torch.from_numpy(photographs(size=16, count=2)).float()
    w = layer.weight.detach().double()
    flat = w.reshape(5, -1)
    ws = ((flat - flat.mean(1, keepdim=True)) / torch.sqrt(flat.var(1, unbiased=False, keepdim=True) + 1e-5))
    ref_weight = ws.reshape(w.shape) * layer.gain.detach().double().reshape(-1, 1, 1, 1)
    ref = nc_reference(x, ref_weight, layer.bias.detach(), pads=1)
    assert_parity(layer(x).detach(), ref, torch.float32)
    assert "affine=True, weight_standardization=True" in repr(layer)
    assert torch.allclose(layer.effective_weight().double(), ref_weight, atol=1e-5)


def test_layer_trains_and_gradients_reach_every_parameter():
    torch.manual_seed(2)
    layer = NormalizedConv2d(3, 4, 3, padding=1, affine=True, padding_mode="reflect")
    x = torch.randn(2, 3, 8, 8, requires_grad=True)
    layer(x).square().mean().backward()
    for name, p in list(layer.named_parameters()) + [("x", x)]:
        assert p.grad is not None and torch.isfinite(p.grad).all() and p.grad.abs().sum() > 0, name


def test_relu_inplace_after_layer_keeps_autograd_intact():
    """A drop-in for conv must survive nn.ReLU(inplace=True) right after it (as in torchvision)."""
    model = nn.Sequential(NormalizedConv2d(3, 4, 3, padding=1, bias=False), nn.ReLU(inplace=True))
    x = torch.randn(2, 3, 6, 6, requires_grad=True)
    model(x).sum().backward()
    assert x.grad is not None


def test_torch_compile_matches_eager():
    torch.manual_seed(3)
    model = nn.Sequential(NormalizedConv2d(3, 8, 3, padding=1), nn.ReLU(), NormalizedConv2d(8, 4, 3, stride=2))
    x = torch.randn(2, 3, 12, 12)
    compiled = torch.compile(model)
    with torch.no_grad():
        assert_parity(compiled(x), model(x).double(), torch.float32)
    # and the training path
    xg = x.clone().requires_grad_()
    compiled(xg).sum().backward()
    xe = x.clone().requires_grad_()
    model(xe).sum().backward()
    assert_parity(xg.grad, xe.grad.double(), torch.float32)


def test_torch_export_sees_output_shapes():
    model = nn.Sequential(NormalizedConv2d(3, 8, 3, padding=1), nn.ReLU(), NormalizedConv2d(8, 4, 3, stride=2))
    x = torch.randn(2, 3, 12, 12)
    batch = torch.export.Dim("batch", min=1, max=64)
    exported = torch.export.export(model.eval(), (x,), dynamic_shapes=({0: batch},))
    nodes = [n for n in exported.graph.nodes if n.op == "call_function" and "normalized_conv" in str(n.target)]
    assert len(nodes) == 2, "each NC layer is one opaque op in the exported graph"
    out_val = nodes[-1].meta["val"]
    assert tuple(out_val.shape[1:]) == (4, 5, 5)
    assert isinstance(out_val.shape[0], torch.SymInt), "the batch dim stays symbolic through the fake kernel"
    with torch.no_grad():
        assert torch.allclose(exported.module()(x), model(x), atol=1e-5)


@pytest.mark.parametrize("nc_cls", [NormalizedConv1d, NormalizedConv2d, NormalizedConv3d])
def test_eps_that_vanishes_in_float32_is_refused_at_construction(nc_cls):
    for eps in (1e-46, 1e-40, 1e39):
        with pytest.raises(ValueError, match=re.escape(f"eps={eps!r} is not a finite, normal float32")):
            nc_cls(4, 6, 3, eps=eps)
    assert nc_cls(4, 6, 3, eps=2.0**-126).eps == 2.0**-126  # the smallest normal float32: accepted


@pytest.mark.parametrize("ndim", [1, 2, 3])
def test_zero_input_channels_are_refused_by_name(ndim):
    nc_cls, conv_cls = LAYERS[ndim]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "Initializing zero-element tensors is a no-op"
        conv_cls(0, 4, 3)  # torch accepts it, with no error to follow
    with pytest.raises(ValueError, match="in_channels must be >= 1"):
        nc_cls(0, 4, 3)


@pytest.mark.parametrize("value", [float("inf"), -float("inf"), float("nan")], ids=["inf", "-inf", "nan"])
def test_layer_without_center_and_scale_is_the_convolution_on_non_finite_input(value):
    """A drop-in with center=False, scale=False gives what nn.Conv2d gives, non-finite values included."""
    torch.manual_seed(4)
    conv = nn.Conv2d(4, 6, 3, padding=1, padding_mode="reflect", groups=2)
    nc = NormalizedConv2d(4, 6, 3, padding=1, padding_mode="reflect", groups=2, center=False, scale=False)
    nc.load_state_dict(conv.state_dict())
    x = torch.randn(2, 4, 9, 8)
    x[0, 1, 4, 4] = value
    x[1, 2, 0, 3] = -value
    with torch.no_grad():
        y = nc(x)
        expected = conv(x)
        assert not torch.isfinite(expected).all() and torch.isfinite(expected).any()
        torch.testing.assert_close(y, expected, equal_nan=True)


@pytest.mark.parametrize(
    "nc_cls, in_ch, out_ch, kwargs",
    [
        (NormalizedConv2d, 8, 8, dict(kernel_size=3, padding=1)),  # dense
        (NormalizedConv2d, 8, 8, dict(kernel_size=3, padding=1, groups=2)),  # grouped
        (NormalizedConv2d, 8, 8, dict(kernel_size=7, padding=3, groups=8)),  # depthwise 7x7
        (NormalizedConv2d, 8, 16, dict(kernel_size=1)),  # pointwise
        (NormalizedConv2d, 8, 16, dict(kernel_size=3, stride=2, padding=1, groups=4)),  # strided, grouped
        (NormalizedConv3d, 4, 8, dict(kernel_size=3, padding=1, groups=2)),
    ],
)
def test_channels_last_matches_contiguous(nc_cls, in_ch, out_ch, kwargs):
    """Training in channels_last (batch > 1): same outputs and gradients as contiguous tensors, and the
    memory format that torch's convolutions give (channels_last in, channels_last out)."""
    torch.manual_seed(0)
    layer = nc_cls(in_ch, out_ch, **kwargs)
    spatial = (9, 10) if nc_cls is NormalizedConv2d else (5, 6, 7)
    fmt = torch.channels_last if nc_cls is NormalizedConv2d else torch.channels_last_3d
    x = (3.0 + torch.randn(3, in_ch, *spatial)).requires_grad_()
    y = layer(x)
    (y * torch.linspace(-1, 1, y.numel()).view_as(y)).sum().backward()
    grads = (x.grad.clone(), layer.weight.grad.clone(), layer.bias.grad.clone())

    last = copy.deepcopy(layer).to(memory_format=fmt)
    x_last = x.detach().to(memory_format=fmt).requires_grad_()
    y_last = last(x_last)
    assert y_last.is_contiguous(memory_format=fmt)
    (y_last * torch.linspace(-1, 1, y.numel()).view_as(y)).sum().backward()
    torch.testing.assert_close(y_last, y, rtol=1e-5, atol=1e-5)
    for got, want in zip((x_last.grad, last.weight.grad, last.bias.grad), grads):
        torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-4)
    with torch.no_grad():
        torch.testing.assert_close(last(x_last), y, rtol=1e-5, atol=1e-5)
