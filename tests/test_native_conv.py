"""The layer's inference through the onnxruntime CPU kernel's forward (ncnn_onnx/_native_conv.py,
runtime/layer/conv.cc): eager inference must give the deployed library's bits, meet the float64
reference on every kind of layer and keep the contract's exact cases; training and everything the
kernel does not take stay on the layer's own paths."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch

from ncnn_onnx import NormalizedConv2d, _native, _native_conv
from ncnn_onnx import functional as ncf
from ncnn_onnx._algorithm import ConvGeometry
from tests.reference import assert_non_finite_rule, assert_parity, nc_reference, non_finite_input, photographs

pytestmark = pytest.mark.skipif(_native.library() is None, reason="the native library was not built")

CONV = {1: ncf.normalized_conv1d, 2: ncf.normalized_conv2d, 3: ncf.normalized_conv3d}
SHAPES = {1: (29,), 2: (13, 11), 3: (6, 7, 5)}

GRID = [
    # (ndim, in_ch, out_ch, kernel, stride, dilation, groups, center, scale, bias)
    *[(2, 8, 12, k, s, d, g, c, sc, True) for k, s, d, g, (c, sc) in itertools.product(
        (1, 3), (1, 2), (1, 2), (1, 4), ((True, True), (True, False), (False, True)))],
    (2, 6, 12, 3, 1, 1, 6, True, True, False),  # depthwise, multiplier 2, no bias
    (2, 6, 6, 5, 2, 1, 6, True, True, True),
    (2, 3, 16, 3, 2, 1, 1, True, True, False),  # a stem
    (1, 4, 6, 4, 1, 1, 1, True, True, True),
    (3, 4, 4, 3, 1, 1, 2, True, True, True),
]


@pytest.mark.parametrize("ndim, cin, cout, kernel, stride, dilation, groups, center, scale, bias", GRID)
def test_inference_matches_the_float64_reference(ndim, cin, cout, kernel, stride, dilation, groups, center, scale,
                                                 bias):
    gen = torch.Generator().manual_seed(kernel + 10 * groups)
    x = (torch.rand(2, cin, *SHAPES[ndim], generator=gen, dtype=torch.float64) * 255).float()
    w = torch.randn(cout, cin // groups, *([kernel] * ndim), generator=gen).float()
    b = torch.randn(cout, generator=gen).float() if bias else None
    pad = kernel // 2
    assert _native_conv.applies(x, w, b)
    with torch.no_grad():
        y = CONV[ndim](x, w, b, stride=stride, padding=pad, dilation=dilation, groups=groups, center=center,
                       scale=scale)
    ref = nc_reference(x.double(), w.double(), None if b is None else b.double(), stride, pad, dilation, groups,
                       center=center, scale=scale)
    assert_parity(y, ref, torch.float32)


def test_asymmetric_pads_through_the_op():
    gen = torch.Generator().manual_seed(3)
    x = torch.rand(2, 4, 9, 8, generator=gen) * 255
    w = torch.randn(6, 4, 2, 3, generator=gen)
    pads = [0, 1, 1, 0]
    y = torch.ops.ncnn_onnx.normalized_conv(x, w, None, [1, 1], pads, [1, 1], 1, 1e-5, True, True)
    assert_parity(y, nc_reference(x.double(), w.double(), pads=tuple(pads)), torch.float32)


def test_eager_inference_gives_the_deployed_models_bits(tmp_path):
    """Both run the same kernel on the same backend; tasks own disjoint outputs, so how they are spread
    over threads does not change a bit."""
    from ncnn_onnx import runtime
    from ncnn_onnx.export import export

    torch.manual_seed(0)
    model = torch.nn.Sequential(NormalizedConv2d(3, 8, 3, padding=1), torch.nn.ReLU(),
                                NormalizedConv2d(8, 8, 3, padding=1, groups=8), NormalizedConv2d(8, 4, 1)).eval()
    x = torch.from_numpy(photographs(size=24, count=2)).float()
    path = tmp_path / "model.onnx"
    export(model, (x,), str(path))
    session = runtime.InferenceSession(str(path))
    deployed = session.run(None, {session.get_inputs()[0].name: x.numpy()})[0]
    with torch.no_grad():
        eager = model(x)
    assert np.array_equal(eager.numpy(), deployed)


@pytest.mark.parametrize("value", [0.0, 7.7, 200.0])
def test_flat_patches_give_exactly_the_bias(value):
    x = torch.full((2, 6, 7, 7), value)
    w = torch.randn(4, 6, 3, 3, generator=torch.Generator().manual_seed(4))
    b = torch.randn(4, generator=torch.Generator().manual_seed(5))
    with torch.no_grad():
        y = ncf.normalized_conv2d(x, w, b)  # no padding: every patch is flat
    assert torch.equal(y, b.reshape(1, 4, 1, 1).expand_as(y))


@pytest.mark.parametrize("value", [float("inf"), float("nan")])
@pytest.mark.parametrize("center,scale", [(True, True), (True, False), (False, True), (False, False)])
def test_non_finite_values_follow_the_rule(value, center, scale):
    x = torch.from_numpy(non_finite_input((2, 6, 7, 8), value)).float()
    w = torch.randn(4, 3, 3, 3, generator=torch.Generator().manual_seed(6))
    b = torch.randn(4, generator=torch.Generator().manual_seed(7))
    with torch.no_grad():
        y = ncf.normalized_conv2d(x, w, b, padding=1, groups=2, center=center, scale=scale)
    assert_non_finite_rule(y, x, w, b, torch.float32, pads=1, groups=2, center=center, scale=scale)


def test_results_do_not_depend_on_the_thread_count():
    x = torch.rand(2, 16, 23, 19) * 255
    w = torch.randn(24, 8, 3, 3)
    geo = ConvGeometry((1, 1), (1, 1, 1, 1), (1, 1), 2)
    before = torch.get_num_threads()
    try:
        results = []
        for threads in (1, 3):
            torch.set_num_threads(threads)
            results.append(_native_conv.forward(x, w, None, geo, 1e-5, True, True))
    finally:
        torch.set_num_threads(before)
    assert torch.equal(*results)


def test_only_inference_of_plain_float32_tensors_takes_it():
    x = torch.rand(2, 4, 8, 8)
    w = torch.randn(4, 4, 3, 3)
    assert _native_conv.applies(x, w, None)
    assert not _native_conv.applies(x.double(), w.double(), None)
    with _native.disabled():
        assert not _native_conv.applies(x, w, None)
    # Training keeps the layer's own paths, whose backward needs their intermediate results: the
    # training call agrees with the inference call within the bar, not bit for bit.
    xg = x.clone().requires_grad_()
    y_train = ncf.normalized_conv2d(xg, w, padding=1)
    with torch.no_grad():
        y_infer = ncf.normalized_conv2d(x, w, padding=1)
    assert_parity(y_train.detach(), y_infer, torch.float32)


def test_a_geometry_the_kernel_refuses_is_a_clear_error():
    x = torch.rand(1, 4, 8, 8)
    w = torch.randn(4, 3, 3, 3)  # 3 input channels per group for 4 channels and groups=1
    with pytest.raises(RuntimeError, match="ncnn_onnx_conv_forward: .*channel"):
        _native_conv.forward(x, w, None, ConvGeometry((1, 1), (1, 1, 1, 1), (1, 1), 1), 1e-5, True, True)


def test_a_parameter_is_packed_once_and_again_when_it_changes():
    import gc

    from ncnn_onnx import _native_conv

    layer = NormalizedConv2d(16, 8, 3, padding=1).eval()
    x = torch.rand(2, 16, 9, 9) * 255
    with torch.no_grad():
        first = layer(x)
        packed = _native_conv._packed[id(layer.weight)][1]
        assert torch.equal(layer(x), first) and _native_conv._packed[id(layer.weight)][1] is packed
        layer.weight.mul_(-1.5)  # an optimizer step, in place: the version counter moves
        changed = layer(x)
        assert _native_conv._packed[id(layer.weight)][1] is not packed and packed.handle == 0  # freed
        fresh = NormalizedConv2d(16, 8, 3, padding=1).eval()
        fresh.load_state_dict(layer.state_dict())
        assert torch.equal(changed, fresh(x))
        layer.weight.data = torch.randn(8, 16, 3, 3)  # new storage
        assert torch.equal(layer(x), ncf.normalized_conv2d(x, layer.weight.data.clone(), layer.bias, padding=1))
    key = id(layer.weight)
    del layer, fresh
    gc.collect()
    assert key not in _native_conv._packed


def test_pads_beyond_the_kernel_work_as_in_torch():
    """The pad limit guards sessions against untrusted model files, not the layer's caller."""
    x = torch.rand(1, 4, 4, 4) * 255
    w = torch.randn(4, 4, 3, 3, generator=torch.Generator().manual_seed(8))
    with torch.no_grad():
        y = ncf.normalized_conv2d(x, w, padding=10)
    assert_parity(y, nc_reference(x.double(), w.double(), pads=10), torch.float32)


def test_an_empty_batch_gives_an_empty_output():
    with torch.no_grad():
        y = ncf.normalized_conv2d(torch.rand(0, 4, 5, 5), torch.randn(6, 4, 3, 3), padding=1)
    assert y.shape == (0, 6, 5, 5)


def test_channels_last_inference_stays_channels_last():
    x = torch.rand(2, 8, 9, 7) * 255
    w = torch.randn(6, 4, 3, 3, generator=torch.Generator().manual_seed(9))
    last = x.contiguous(memory_format=torch.channels_last)
    assert _native_conv.applies(last, w, None)
    with torch.no_grad():
        y_last = ncf.normalized_conv2d(last, w, padding=1, groups=2)
        y = ncf.normalized_conv2d(x, w, padding=1, groups=2)
    assert y_last.is_contiguous(memory_format=torch.channels_last)
    assert torch.equal(y_last, y)  # the same kernel on the same values
