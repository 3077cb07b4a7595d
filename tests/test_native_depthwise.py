"""The layer's native depthwise path (ncnn_onnx/_native_depthwise.py, runtime/layer/depthwise.cc): float32
CPU depthwise layers take the deployed kernel's forward and the layer's backward; they must agree with
the float64 reference, with the PyTorch path they replace, and keep the contract's exact cases (flat
patches, non-finite values), on every rank and geometry."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch

from ncnn_onnx import _native, _native_depthwise
from ncnn_onnx import functional as ncf
from ncnn_onnx._algorithm import ConvGeometry, is_native
from tests.reference import assert_non_finite_rule, assert_parity, nc_reference, non_finite_input, parity_error

pytestmark = pytest.mark.skipif(_native.library() is None, reason="the native library was not built")

CONV = {1: ncf.normalized_conv1d, 2: ncf.normalized_conv2d, 3: ncf.normalized_conv3d}
SHAPES = {1: (23,), 2: (13, 11), 3: (6, 7, 9)}


def _case(ndim, channels, multiplier, kernel, seed=0, raw=True):
    gen = torch.Generator().manual_seed(seed)
    x = torch.rand(2, channels, *SHAPES[ndim], generator=gen, dtype=torch.float64)
    x = x * 255 if raw else x * 4 - 2  # raw pixel scale: the ill-conditioned case the contract is about
    w = torch.randn(channels * multiplier, 1, *([kernel] * ndim), generator=gen, dtype=torch.float64)
    b = torch.randn(channels * multiplier, generator=gen, dtype=torch.float64)
    return x, w, b


def _gradients(x, w, b, kwargs, grad):
    x, w, b = (t.clone().requires_grad_() for t in (x, w, b))
    y = CONV[w.dim() - 2](x, w, b, **kwargs)
    y.backward(grad.to(y.dtype))
    return y.detach(), x.grad, w.grad, b.grad


GRID = [
    # (ndim, kernel, stride, dilation, padding, multiplier, center, scale)
    *[(2, k, s, d, "half", m, c, sc) for k, s, d, m, (c, sc) in itertools.product(
        (1, 3, 4, 7), (1, 2), (1, 2), (1, 2), ((True, True), (True, False), (False, True)))],
    (2, 4, 1, 1, "same", 1, True, True),  # asymmetric pads
    (2, 3, 1, 2, "same", 3, True, True),
    (1, 5, 1, 1, "half", 1, True, True),
    (1, 3, 2, 1, "half", 2, False, True),
    (3, 3, 1, 1, "half", 1, True, True),
    (3, 3, 2, 1, "half", 2, True, False),
]


@pytest.mark.parametrize("ndim, kernel, stride, dilation, padding, multiplier, center, scale", GRID)
def test_native_path_matches_float64_forward_and_backward(ndim, kernel, stride, dilation, padding, multiplier,
                                                          center, scale):
    x, w, b = _case(ndim, 5, multiplier, kernel, seed=kernel + 10 * stride)
    pad = kernel // 2 if padding == "half" else padding
    kwargs = dict(stride=stride, dilation=dilation, padding=pad, groups=5, center=center, scale=scale)
    geo = ConvGeometry((stride,) * ndim, (0,) * 2 * ndim, (dilation,) * ndim, 5)
    assert is_native(x.float(), w.float(), b.float(), geo, center, scale)
    assert not is_native(x, w, b, geo, center, scale)  # float64 keeps the PyTorch path, the reference here
    with torch.no_grad():
        y_out = CONV[ndim](x.float(), w.float(), b.float(), **kwargs)
    grad = torch.randn(y_out.shape, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    ours = _gradients(x.float(), w.float(), b.float(), kwargs, grad)
    ref = _gradients(x.float().double(), w.float().double(), b.float().double(), kwargs, grad)
    # Inference runs the deployed kernel (_native_conv), training these kernels: both meet the bar.
    assert_parity(y_out, ref[0], torch.float32)
    if padding == "half":
        pads = kernel // 2
        assert_parity(ours[0], nc_reference(x.float(), w.float(), b.float(), stride, pads, dilation, 5,
                                            center=center, scale=scale), torch.float32)
    for i, (got, want) in enumerate(zip(ours, ref)):
        if kernel == 1 and center and i in (1, 2):
            # A 1x1 depthwise patch is flat: it centres to 0, so x and W get exactly no gradient (the
            # reference's are rounding noise around 0).
            assert torch.equal(got, torch.zeros_like(got))
        else:
            assert_parity(got, want, torch.float32)


@pytest.mark.parametrize("ndim", [1, 2, 3])
def test_native_path_agrees_with_the_pytorch_path(ndim):
    x, w, b = _case(ndim, 6, 2, 3, seed=5, raw=False)
    kwargs = dict(padding=1, groups=6)
    grad = torch.randn(2, 12, *SHAPES[ndim], dtype=torch.float64, generator=torch.Generator().manual_seed(2))
    native = _gradients(x.float(), w.float(), b.float(), kwargs, grad)
    with _native.disabled():
        plain = _gradients(x.float(), w.float(), b.float(), kwargs, grad)
    for got, want in zip(native, plain):
        assert parity_error(got, want) < 1e-5


@pytest.mark.parametrize("kernel", [3, 7])
@pytest.mark.parametrize("value", [0.0, 7.7, 200.0, -0.1])
@pytest.mark.parametrize("eps", [1e-5, 2.0**-126])
def test_flat_patches_give_exactly_the_bias(kernel, value, eps):
    w, b = torch.randn(8, 1, kernel, kernel), torch.randn(8)
    x = torch.full((2, 4, 9, 20), value)
    y = ncf.normalized_conv2d(x, w, b, padding=0, groups=4, eps=eps)
    assert torch.equal(y, b.reshape(1, 8, 1, 1).expand_as(y))


def test_near_flat_bright_patches_meet_the_contract():
    gen = torch.Generator().manual_seed(3)
    x = 200.0 + 0.01 * torch.randn(2, 4, 12, 40, generator=gen, dtype=torch.float64)
    x[:, :, :4] = 255.0
    w, b = torch.randn(4, 1, 3, 3, generator=gen, dtype=torch.float64), torch.randn(4, dtype=torch.float64)
    y = ncf.normalized_conv2d(x.float(), w.float(), b.float(), padding=1, groups=4)
    assert_parity(y, nc_reference(x.float(), w.float(), b.float(), pads=1, groups=4), torch.float32)


@pytest.mark.parametrize("value", [float("inf"), float("nan")])
@pytest.mark.parametrize("center, scale", [(True, True), (True, False), (False, True)])
def test_non_finite_values_follow_the_rule(value, center, scale):
    x = non_finite_input((2, 4, 7, 19), value)
    w, b = np.random.default_rng(0).standard_normal((8, 1, 3, 3)), np.zeros(8)
    y = ncf.normalized_conv2d(torch.from_numpy(x).float(), torch.from_numpy(w).float(), torch.from_numpy(b).float(),
                              padding=1, groups=4, center=center, scale=scale)
    assert_non_finite_rule(y, x.astype(np.float32), w.astype(np.float32), b, torch.float32, pads=1, groups=4,
                           center=center, scale=scale)


def test_results_do_not_depend_on_the_thread_count():
    x, w, b = _case(2, 7, 1, 5, seed=6)
    kwargs = dict(padding=2, groups=7)
    grad = torch.randn(2, 7, *SHAPES[2], dtype=torch.float64)
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        one = _gradients(x.float(), w.float(), b.float(), kwargs, grad)
        torch.set_num_threads(3)
        three = _gradients(x.float(), w.float(), b.float(), kwargs, grad)
    finally:
        torch.set_num_threads(threads)
    for a, c in zip(one, three):
        assert torch.equal(a, c)


def test_training_saves_only_the_input_and_the_weights():
    """The backward recomputes the statistics: no K-times-the-input patch maps are kept for it."""
    x, w, b = (t.float().requires_grad_() for t in _case(2, 16, 1, 7, seed=7))
    saved = []
    with torch.autograd.graph.saved_tensors_hooks(lambda t: saved.append(t) or t, lambda t: t):
        y = ncf.normalized_conv2d(x, w, b, padding=3, groups=16)
    saved_bytes = sum(t.numel() * t.element_size() for t in saved)
    assert saved_bytes <= (x.numel() + w.numel()) * 4
    y.sum().backward()
    assert x.grad is not None and w.grad is not None


def test_transforms_and_other_dtypes_take_the_pytorch_path():
    x, w, _ = _case(2, 4, 1, 3, seed=8, raw=False)
    x, w = x.float(), w.float()
    per_sample = torch.func.vmap(lambda xi: ncf.normalized_conv2d(xi[None], w, padding=1, groups=4)[0])(x)
    with torch.no_grad():
        assert parity_error(per_sample, ncf.normalized_conv2d(x, w, padding=1, groups=4)) < 1e-6
    geo = ConvGeometry((1, 1), (1,) * 4, (1, 1), 4)
    assert not is_native(x.half(), w.half(), None, geo, True, True)
    assert not is_native(x, w, None, geo, False, False)  # the plain convolution
    with _native.disabled():
        assert not is_native(x, w, None, geo, True, True)


@pytest.mark.parametrize("field, value", [("input", 2**40), ("output", 2**40), ("kernel", 2**31), ("stride", 2**62)])
def test_sizes_that_overflow_are_refused_before_any_access(field, value):
    """The kernel computes every size with overflow-checked arithmetic: a wrapped size would index wildly."""
    x, w = torch.zeros(1, 1, 4, 4), torch.zeros(1, 1, 3, 3)
    geo = ConvGeometry((1, 1), (1,) * 4, (1, 1), 1)
    call = _native_depthwise._call(x, w, [4, 4], geo, 1e-5, True, True)
    getattr(call, field)[0] = getattr(call, field)[1] = value
    call.x, call.weight, call.grad_y = x.data_ptr(), w.data_ptr(), x.data_ptr()
    with pytest.raises(RuntimeError, match="overflows a 64-bit integer"):
        _native.run("ncnn_onnx_depthwise_backward", call)
