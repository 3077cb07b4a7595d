"""The layer's pointwise path (ncnn_onnx/_pointwise.py): 1x1 layers standardize the input over each
group's channels and run an ordinary convolution. It must meet the float64 reference forward and backward
on every rank, stride, pad, group count and center/scale setting, keep the contract's exact cases (flat
patches, non-finite values) and every memory format and dtype, and save only x and W for backward."""

from __future__ import annotations

import itertools

import pytest
import torch

from ncnn_onnx import _native, _native_channels, _pointwise
from ncnn_onnx import functional as ncf
from ncnn_onnx._algorithm import ConvGeometry
from tests.reference import (
    assert_non_finite_rule,
    assert_parity,
    nc_reference,
    non_finite_input,
    photo_scales,
    photographs,
)

CONV = {1: ncf.normalized_conv1d, 2: ncf.normalized_conv2d, 3: ncf.normalized_conv3d}
SHAPES = {1: (23,), 2: (13, 11), 3: (6, 7, 5)}
FORMATS = {2: torch.channels_last, 3: torch.channels_last_3d}


def _case(ndim, channels, groups, seed=0, out_channels=12, dtype=torch.float32):
    """Raw 0-255 inputs (the ill-conditioned scale the contract is about), rounded to `dtype` first so the
    float64 reference sees the very values the layer sees."""
    gen = torch.Generator().manual_seed(seed)
    x = torch.rand(2, channels, *SHAPES[ndim], generator=gen, dtype=torch.float64) * 255
    w = torch.randn(out_channels, channels // groups, *([1] * ndim), generator=gen, dtype=torch.float64)
    b = torch.randn(out_channels, generator=gen, dtype=torch.float64)
    return tuple(t.to(dtype).double() for t in (x, w, b))


def _reference_gradients(x, w, b, grad, **kwargs):
    """Forward and gradients of the float64 reference, by autograd through its explicit patches."""
    x, w, b = (t.clone().requires_grad_() for t in (x, w, b))
    y = nc_reference(x, w, b, **kwargs)
    y.backward(grad)
    return y.detach(), x.grad, w.grad, b.grad


def _call(x, w, b, stride=1, pads=0, groups=1, center=True, scale=True):
    """The layer's functional entry point; explicit asymmetric pads (which it cannot express) go to the
    torch op that export and inference use, which has its own autograd formula."""
    k = w.dim() - 2
    if isinstance(pads, int):
        return CONV[k](x, w, b, stride=stride, padding=pads, groups=groups, center=center, scale=scale)
    return torch.ops.ncnn_onnx.normalized_conv(x, w, b, [stride] * k, list(pads), [1] * k, groups, 1e-5, center, scale)


def _layer_gradients(x, w, b, grad, memory_format=None, **kwargs):
    if memory_format is not None:
        x = x.contiguous(memory_format=memory_format)
    x, w, b = (t.detach().clone().requires_grad_() for t in (x, w, b))
    y = _call(x, w, b, **kwargs)
    y.backward(grad.to(y.dtype))
    return y.detach(), x.grad, w.grad, b.grad


GRID = [
    # (ndim, groups, stride, pads, center, scale), 8 input channels
    *[(2, g, s, p, c, sc) for g, s, p, (c, sc) in itertools.product(
        (1, 2), (1, 2), (0, 1), ((True, True), (True, False), (False, True)))],
    (2, 1, 1, (0, 1, 1, 0), True, True),  # asymmetric pads
    (1, 1, 1, 0, True, True),
    (1, 2, 3, 1, False, True),
    (3, 1, 1, 0, True, True),
    (3, 2, 2, 1, True, False),
]


@pytest.mark.parametrize("ndim, groups, stride, pads, center, scale", GRID)
def test_matches_the_float64_reference_forward_and_backward(ndim, groups, stride, pads, center, scale):
    """Two channels per group are left out on purpose: with two values, a near-equal pair makes the input
    gradient cancel (r (g - mean g) minus an almost equal projection), in the decomposition path as here."""
    x, w, b = _case(ndim, 8, groups, seed=stride + 3 * groups)
    kwargs = dict(stride=stride, pads=pads, groups=groups, center=center, scale=scale)
    assert _pointwise.applies(w, ConvGeometry((stride,) * ndim, (0,) * 2 * ndim, (1,) * ndim, groups))
    y_shape = nc_reference(x, w, b, **kwargs).shape
    grad = torch.randn(y_shape, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    ref = _reference_gradients(x, w, b, grad, **kwargs)
    ours = _layer_gradients(x.float(), w.float(), b.float(), grad, **kwargs)
    with torch.no_grad():
        inference = _call(x.float(), w.float(), b.float(), **kwargs)
    assert_parity(inference, ref[0], torch.float32)  # inference runs the deployed kernel (_native_conv)
    for got, want in zip(ours, ref):
        assert_parity(got, want, torch.float32)


@pytest.mark.parametrize("ndim", [2, 3])
def test_channels_last_stays_channels_last_and_matches(ndim):
    x, w, b = _case(ndim, 16, 2)
    grad = torch.randn(2, 12, *SHAPES[ndim], generator=torch.Generator().manual_seed(4), dtype=torch.float64)
    plain = _layer_gradients(x.float(), w.float(), b.float(), grad, groups=2)
    last = _layer_gradients(x.float(), w.float(), b.float(), grad, memory_format=FORMATS[ndim], groups=2)
    assert last[0].is_contiguous(memory_format=FORMATS[ndim])
    assert last[1].is_contiguous(memory_format=FORMATS[ndim])
    for got, want in zip(last, plain):
        assert_parity(got, want, torch.float32)


def test_float64_gradcheck():
    gen = torch.Generator().manual_seed(5)
    x = torch.randn(2, 6, 5, 4, generator=gen, dtype=torch.float64, requires_grad=True)
    w = torch.randn(4, 3, 1, 1, generator=gen, dtype=torch.float64, requires_grad=True)
    b = torch.randn(4, generator=gen, dtype=torch.float64, requires_grad=True)
    for center, scale in ((True, True), (True, False), (False, True)):
        def f(x, w, b):
            return ncf.normalized_conv2d(x, w, b, stride=2, padding=1, groups=2, center=center, scale=scale)

        assert torch.autograd.gradcheck(f, (x, w, b))


@pytest.mark.parametrize("scale_name", ["raw", "unit", "standardized"])
def test_photographs_match_the_reference(scale_name):
    photos = torch.from_numpy(photo_scales(photographs(size=40, count=6))[scale_name]).float().double()
    gen = torch.Generator().manual_seed(6)
    w = torch.randn(8, 3, 1, 1, generator=gen, dtype=torch.float64).float().double()
    b = torch.randn(8, generator=gen, dtype=torch.float64).float().double()
    grad = torch.randn(6, 8, 40, 40, generator=gen, dtype=torch.float64)
    ref = _reference_gradients(photos, w, b, grad)
    ours = _layer_gradients(photos.float(), w.float(), b.float(), grad)
    assert_parity(ours[0], ref[0], torch.float32)
    # Three channels of a photo are often almost equal (grey areas): the input gradient is ill-conditioned
    # there, so only the forward and the weight and bias gradients are held to the bar.
    for got, want in zip(ours[2:], ref[2:]):
        assert_parity(got, want, torch.float32)


@pytest.mark.parametrize("value", [0.0, 7.7, 200.0, -0.1])
@pytest.mark.parametrize("eps", [1e-5, 2.0**-126])
def test_flat_patches_give_exactly_the_bias(value, eps):
    """3 x 7.7 does not average back to 7.7 in float32; the path must still centre a flat patch to 0."""
    x = torch.full((2, 6, 5, 5), value)
    x[1, :, 2:] = torch.arange(6.0).reshape(6, 1, 1)  # not flat: the flat part must not depend on it
    w = torch.randn(4, 3, 1, 1, generator=torch.Generator().manual_seed(7))
    b = torch.randn(4, generator=torch.Generator().manual_seed(8))
    x.requires_grad_()
    y = ncf.normalized_conv2d(x, w, b, groups=2, eps=eps)
    assert torch.equal(y[0], b.reshape(4, 1, 1).expand(4, 5, 5))
    assert torch.equal(y[1, :, :2], b.reshape(4, 1, 1).expand(4, 2, 5))
    y.sum().backward()
    ref = _reference_gradients(x.detach().double(), w.double(), b.double(), torch.ones(y.shape, dtype=torch.float64),
                               groups=2, eps=eps)
    assert_parity(x.grad, ref[1], torch.float32)


def test_near_flat_bright_patches_meet_the_contract():
    gen = torch.Generator().manual_seed(9)
    x = (200.0 + 0.01 * torch.randn(2, 8, 9, 9, generator=gen, dtype=torch.float64)).float().double()
    x[:, :, :3] = 255.0
    w = torch.randn(5, 8, 1, 1, generator=gen, dtype=torch.float64).float().double()
    grad = torch.randn(2, 5, 9, 9, generator=gen, dtype=torch.float64)
    b = torch.zeros(5, dtype=torch.float64)
    ref = _reference_gradients(x, w, b, grad)
    ours = _layer_gradients(x.float(), w.float(), b.float(), grad)
    for got, want in zip(ours, ref):
        assert_parity(got, want, torch.float32)


@pytest.mark.parametrize("value", [float("inf"), float("nan")])
@pytest.mark.parametrize("center,scale", [(True, True), (True, False), (False, True)])
@pytest.mark.parametrize("training", [False, True])
def test_non_finite_values_follow_the_rule(value, center, scale, training):
    x = torch.from_numpy(non_finite_input((2, 6, 7, 8), value)).float()
    w = torch.randn(4, 3, 1, 1, generator=torch.Generator().manual_seed(10))
    b = torch.randn(4, generator=torch.Generator().manual_seed(11))
    with torch.set_grad_enabled(training):
        y = ncf.normalized_conv2d(x.requires_grad_(training), w, b, groups=2, center=center, scale=scale)
    assert_non_finite_rule(y.detach(), x.detach(), w, b, torch.float32, groups=2, center=center, scale=scale)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_inputs_keep_float32_statistics(dtype):
    x, w, b = _case(2, 8, 1, dtype=dtype)
    y = ncf.normalized_conv2d(x.to(dtype), w.to(dtype), b.to(dtype))
    assert y.dtype == dtype
    assert_parity(y, nc_reference(x, w, b), dtype)


def test_training_saves_only_the_input_and_the_weights():
    x = torch.randn(2, 16, 12, 12, requires_grad=True)
    w = torch.randn(32, 16, 1, 1, requires_grad=True)
    saved = []
    with torch.autograd.graph.saved_tensors_hooks(lambda t: saved.append(t) or t, lambda t: t):
        ncf.normalized_conv2d(x, w, torch.zeros(32, requires_grad=True)).sum().backward()
    assert sum(t.numel() * t.element_size() for t in saved) <= (x.numel() + w.numel()) * 4


@pytest.mark.parametrize("center,scale", [(True, True), (True, False), (False, True)])
def test_per_sample_gradients_under_vmap(center, scale):
    """torch.func transforms take the PyTorch path (their tensors have no data pointer): per-sample
    gradients of W and of x equal one backward per sample."""
    from torch.func import grad, vmap

    x, w, b = (t.float() for t in _case(2, 8, 2))

    def loss(w, sample):
        y = ncf.normalized_conv2d(sample[None], w, b, stride=2, padding=1, groups=2, center=center, scale=scale)
        return y.square().sum()

    per_w, per_x = vmap(grad(loss, argnums=(0, 1)), in_dims=(None, 0))(w, x)
    for i in range(x.shape[0]):
        w_i, x_i = w.clone().requires_grad_(), x[i].clone().requires_grad_()
        loss(w_i, x_i).backward()
        assert_parity(per_w[i], w_i.grad, torch.float32)
        assert_parity(per_x[i], x_i.grad, torch.float32)


native = pytest.mark.skipif(_native.library() is None, reason="the native library was not built")


@native
@pytest.mark.parametrize("center,scale", [(True, True), (True, False), (False, True)])
@pytest.mark.parametrize("groups,stride,pads", [(1, 1, 0), (2, 2, 1), (4, 1, (1, 0, 0, 1))])
def test_native_standardization_agrees_with_the_pytorch_path(center, scale, groups, stride, pads):
    x, w, b = _case(2, 16, groups, seed=12)
    kwargs = dict(stride=stride, pads=pads, groups=groups, center=center, scale=scale)
    grad = torch.randn(nc_reference(x, w, b, **kwargs).shape, generator=torch.Generator().manual_seed(13),
                       dtype=torch.float64)
    assert _native_channels.applies(x.float())
    ours = _layer_gradients(x.float(), w.float(), b.float(), grad, **kwargs)
    with _native.disabled():
        assert not _native_channels.applies(x.float())
        theirs = _layer_gradients(x.float(), w.float(), b.float(), grad, **kwargs)
    for got, want in zip(ours, theirs):
        assert_parity(got, want, torch.float32)
