import itertools

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from ncnn_onnx import functional as ncf
from reference import (
    assert_non_finite_rule, assert_parity, nc_reference, non_finite_input, photo_scales, photographs,
)

FUNCS = {1: ncf.normalized_conv1d, 2: ncf.normalized_conv2d, 3: ncf.normalized_conv3d}
SPATIAL = {1: (23,), 2: (11, 10), 3: (7, 6, 5)}

# (ndim, in_ch, out_ch, kernel, stride, padding, dilation, groups)
GEOMETRIES = [
    (1, 4, 6, 3, 1, 1, 1, 1),
    (1, 6, 4, 4, 1, "same", 1, 2),
    (1, 4, 4, 3, 2, 2, 3, 4),  # depthwise, strided, dilated
    (2, 4, 6, 3, 1, 1, 1, 1),
    (2, 6, 6, 3, 2, 0, 1, 3),
    (2, 4, 8, 2, 1, "same", 2, 1),  # even kernel: asymmetric padding
    (2, 8, 8, 3, 1, "valid", 1, 8),  # depthwise
    (2, 3, 5, (3, 1), (2, 1), (1, 0), (1, 2), 1),
    (3, 4, 4, 3, 1, 1, 1, 2),
    (3, 2, 3, 2, 2, 1, 1, 1),
]


def _resolved_pads(ndim, padding, kernel, dilation):
    from ncnn_onnx._arguments import expand, resolve_pads

    return resolve_pads(padding, expand("k", kernel, ndim, 1), (1,) * ndim, expand("d", dilation, ndim, 1))


@pytest.mark.parametrize("geometry", GEOMETRIES, ids=lambda g: "-".join(map(str, g)))
@pytest.mark.parametrize("center,scale", list(itertools.product([True, False], repeat=2)))
def test_random_activations_match_reference(geometry, center, scale):
    ndim, cin, cout, kernel, stride, padding, dilation, groups = geometry
    gen = torch.Generator().manual_seed(1)
    k = (kernel,) * ndim if isinstance(kernel, int) else kernel
    x = torch.randn(2, cin, *SPATIAL[ndim], generator=gen) * 3 + 2
    w = torch.randn(cout, cin // groups, *k, generator=gen)
    b = torch.randn(cout, generator=gen)
    y = FUNCS[ndim](x, w, b, stride, padding, dilation, groups, center=center, scale=scale)
    pads = _resolved_pads(ndim, padding, k, dilation)
    ref = nc_reference(x, w, b, stride, pads, dilation, groups, center=center, scale=scale)
    assert_parity(y, ref, torch.float32)


@pytest.mark.parametrize("scale_name", ["raw", "unit", "standardized"])
@pytest.mark.parametrize("kernel,groups", [(3, 1), (5, 1), (3, 3)])
def test_photographs_match_reference(scale_name, kernel, groups):
    photos = photo_scales(photographs(size=40, count=6))[scale_name]
    gen = torch.Generator().manual_seed(2)
    x64 = torch.from_numpy(photos)
    w = torch.randn(6, 3 // groups, kernel, kernel, generator=gen, dtype=torch.float64)
    b = torch.randn(6, generator=gen, dtype=torch.float64)
    y = ncf.normalized_conv2d(x64.float(), w.float(), b.float(), padding=kernel // 2, groups=groups)
    ref = nc_reference(x64.float().double(), w.float().double(), b.float().double(), pads=kernel // 2, groups=groups)
    assert_parity(y, ref, torch.float32)


def test_near_flat_patches_are_exact():
    """A nearly constant bright field: one-pass variance fails here, the contract must hold."""
    gen = torch.Generator().manual_seed(3)
    x = 200.0 + 0.01 * torch.randn(2, 4, 12, 12, generator=gen, dtype=torch.float64)
    x[:, :, :4] = 255.0  # saturated: exactly flat patches, var = 0
    w = torch.randn(5, 4, 3, 3, generator=gen, dtype=torch.float64)
    y = ncf.normalized_conv2d(x.float(), w.float(), padding=1)
    assert_parity(y, nc_reference(x.float(), w.float(), pads=1), torch.float32)


@pytest.mark.parametrize("center,scale", list(itertools.product([True, False], repeat=2)))
@pytest.mark.parametrize("ndim", [1, 2, 3])
def test_gradcheck_float64(ndim, center, scale):
    gen = torch.Generator().manual_seed(4)
    shape = {1: (9,), 2: (6, 5), 3: (4, 4, 3)}[ndim]
    x = (torch.randn(2, 4, *shape, generator=gen, dtype=torch.float64) + 1).requires_grad_()
    w = torch.randn(6, 2, *([2] * ndim), generator=gen, dtype=torch.float64).requires_grad_()
    b = torch.randn(6, generator=gen, dtype=torch.float64).requires_grad_()

    def f(x, w, b):
        return FUNCS[ndim](x, w, b, stride=1, padding="same", groups=2, center=center, scale=scale)

    assert torch.autograd.gradcheck(f, (x, w, b))


def test_gradcheck_strided_dilated_depthwise():
    gen = torch.Generator().manual_seed(5)
    x = torch.randn(1, 3, 9, 8, generator=gen, dtype=torch.float64).requires_grad_()
    w = torch.randn(6, 1, 3, 3, generator=gen, dtype=torch.float64).requires_grad_()
    assert torch.autograd.gradcheck(
        lambda x, w: ncf.normalized_conv2d(x, w, None, stride=2, padding=2, dilation=2, groups=3), (x, w)
    )


def test_float32_gradients_match_float64_on_photographs():
    photos = torch.from_numpy(photographs(size=24, count=2))
    gen = torch.Generator().manual_seed(6)
    w = torch.randn(4, 3, 3, 3, generator=gen, dtype=torch.float64)
    grads = {}
    for dtype in (torch.float64, torch.float32):
        x = photos.to(dtype).detach().requires_grad_()
        wd = w.to(dtype).detach().requires_grad_()
        y = ncf.normalized_conv2d(x, wd, padding=1)
        (y * torch.linspace(-1, 1, y.numel(), dtype=dtype).reshape(y.shape)).sum().backward()
        grads[dtype] = (x.grad, wd.grad)
    for g32, g64 in zip(grads[torch.float32], grads[torch.float64]):
        # The gradient inherits the conditioning of the forward pass; hold it to the same bar.
        assert_parity(g32, g64, torch.float32)


def test_autocast_bfloat16_keeps_float32_statistics():
    photos = torch.from_numpy(photographs(size=24, count=2)).float()
    gen = torch.Generator().manual_seed(7)
    w = torch.randn(8, 3, 3, 3, generator=gen)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y = ncf.normalized_conv2d(photos, w, padding=1)
    assert y.dtype == torch.bfloat16
    ref = nc_reference(photos.bfloat16(), w.bfloat16(), pads=1)
    assert_parity(y, ref, torch.bfloat16)
    # Statistics in bfloat16 would be far off on raw-scale photos: the raw-scale mean alone would
    # lose ~3 significant bits; this check fails if the op computed them in the autocast dtype.


def test_float16_inputs_accumulate_in_float32():
    gen = torch.Generator().manual_seed(8)
    x = (torch.randn(2, 4, 8, 8, generator=gen) * 20 + 100).half()
    w = torch.randn(4, 4, 3, 3, generator=gen).half()
    y = ncf.normalized_conv2d(x, w, padding=1)
    assert y.dtype == torch.float16
    assert_parity(y, nc_reference(x, w, pads=1), torch.float16)


def test_unbatched_input():
    x = torch.randn(3, 7, 7)
    w = torch.randn(4, 3, 3, 3)
    y = ncf.normalized_conv2d(x, w, padding=1)
    assert y.shape == (4, 7, 7)
    assert torch.equal(y, ncf.normalized_conv2d(x[None], w, padding=1)[0])


def test_memory_saved_for_backward_is_linear_in_input():
    """Nothing k^2-times the input is kept for backward (docs/architecture.md)."""
    x = torch.randn(2, 16, 20, 20, requires_grad=True)
    w = torch.randn(16, 16, 5, 5, requires_grad=True)
    saved = []

    def pack(t):
        saved.append(t.numel() * t.element_size())
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        y = ncf.normalized_conv2d(x, w, padding=2)
    io_bytes = (x.numel() + y.numel() + w.numel()) * 4
    # A 5x5 im2col alone would be 25x the input; what is kept must stay within input + output + stats.
    assert sum(saved) <= 1.5 * io_bytes, f"saved {sum(saved)} bytes for {io_bytes} bytes of input+output"


def test_non_finite_inputs_propagate():
    x = torch.randn(1, 2, 6, 6)
    x[0, 0, 2, 2] = float("nan")
    x[0, 1, 4, 4] = float("inf")
    y = ncf.normalized_conv2d(x, torch.randn(3, 2, 3, 3), padding=1)
    assert torch.isnan(y[0, :, 1:4, 1:4]).all()  # every patch that sees the NaN
    assert torch.isfinite(y[0, :, 0, 5]).all()  # a patch that sees neither stays finite


CENTER_SCALE = list(itertools.product([False, True], repeat=2))


@pytest.mark.parametrize("center,scale", CENTER_SCALE)
def test_infinite_input_in_one_dimension(center, scale):
    """The smallest case of the rule: three patches, two of which see the inf."""
    x = torch.tensor([[[0.0, float("inf"), 0.0, 1.0, 2.0]]])
    y = ncf.normalized_conv1d(x, torch.ones(1, 1, 3), center=center, scale=scale)[0, 0]
    if center or scale:
        assert torch.isnan(y[:2]).all()
    else:  # a plain convolution: inf + 0 + 0 is inf, as conv1d gives
        assert torch.equal(y[:2], torch.full((2,), float("inf")))
        assert torch.equal(y, F.conv1d(x, torch.ones(1, 1, 3))[0, 0])
    assert torch.isfinite(y[2])


@pytest.mark.parametrize("center,scale", CENTER_SCALE)
@pytest.mark.parametrize("value", [float("inf"), -float("inf"), float("nan")], ids=["inf", "-inf", "nan"])
@pytest.mark.parametrize("ndim", [1, 2])
@pytest.mark.parametrize("training", [False, True], ids=["inference", "training"])
def test_non_finite_inputs_follow_the_rule(ndim, value, center, scale, training):
    """docs/op.md, "Non-finite values", on both forward paths (the opaque op, the autograd function)."""
    x = non_finite_input((2, 4, *SPATIAL[ndim]), value, seed=ndim)
    rng = np.random.default_rng(ndim)
    w, b = rng.standard_normal((6, 2) + (3,) * ndim), rng.standard_normal(6)
    xt = torch.from_numpy(x).float().requires_grad_(training)
    wt, bt = torch.from_numpy(w).float(), torch.from_numpy(b).float()
    y = FUNCS[ndim](xt, wt, bt, padding=1, groups=2, center=center, scale=scale)
    assert_non_finite_rule(y, xt, wt, bt, torch.float32, pads=1, groups=2, center=center, scale=scale)
    if not (center or scale):  # exactly what the convolution gives, non-finite values included
        conv = (F.conv1d, F.conv2d)[ndim - 1](xt, wt, bt, padding=1, groups=2)
        torch.testing.assert_close(y, conv, equal_nan=True)


def test_plain_convolution_gradients_match_conv():
    """center=0, scale=0 runs the convolution itself, in training too (asymmetric 'same' pads)."""
    x = torch.randn(2, 4, 9, 8, dtype=torch.float64, requires_grad=True)
    w = torch.randn(6, 2, 2, 3, dtype=torch.float64, requires_grad=True)
    b = torch.randn(6, dtype=torch.float64, requires_grad=True)
    args = dict(padding="same", groups=2, dilation=(2, 1))
    y = ncf.normalized_conv2d(x, w, b, center=False, scale=False, **args)
    grads = torch.autograd.grad(y.square().sum(), (x, w, b))
    expected = torch.autograd.grad(F.conv2d(x, w, b, **args).square().sum(), (x, w, b))
    for got, want in zip(grads, expected):
        torch.testing.assert_close(got, want)


@pytest.mark.parametrize(
    "kwargs,message",
    [
        (dict(x=(2, 8), w=(3, 4, 3, 3)), "input must be 4-D"),
        (dict(x=(2, 4, 8, 8), w=(3, 4, 3)), "weight must be 4-D"),
        (dict(x=(2, 5, 8, 8), w=(4, 2, 3, 3), groups=2), "input channels (5) must be divisible by groups (2)"),
        (dict(x=(2, 4, 8, 8), w=(3, 2, 3, 3), groups=2), "out channels (3) must be divisible by groups (2)"),
        (dict(x=(2, 4, 8, 8), w=(4, 3, 3, 3)), "weight.shape[1] must equal input channels / groups"),
        (dict(x=(2, 4, 4, 4), w=(4, 4, 7, 7)), "kernel larger than the padded input"),
        (dict(x=(2, 4, 8, 8), w=(4, 4, 3, 3), b=(5,)), "bias must have shape (4,)"),
        (dict(x=(2, 4, 8, 8), w=(4, 4, 3, 3), eps=0.0), "eps must be a finite float > 0"),
        (dict(x=(2, 4, 8, 8), w=(4, 4, 3, 3), eps=-1.0), "eps must be a finite float > 0"),
        (dict(x=(2, 4, 8, 8), w=(4, 4, 3, 3), eps=1e-46), "eps=1e-46 is not a finite, normal float32"),
        (dict(x=(2, 4, 8, 8), w=(4, 4, 3, 3), eps=1e-40), "eps=1e-40 is not a finite, normal float32"),
        (dict(x=(2, 4, 8, 8), w=(4, 4, 3, 3), eps=1e39), "eps=1e+39 is not a finite, normal float32"),
        (dict(x=(1, 0, 8, 8), w=(4, 0, 3, 3)), "input has 0 channels"),
        (dict(x=(1, 0, 8, 8), w=(4, 0, 3, 3), groups=2), "input has 0 channels"),
        (dict(x=(2, 4, 8, 8), w=(4, 4, 3, 3), stride=0), "stride must be >= 1"),
        (dict(x=(2, 4, 8, 8), w=(4, 4, 3, 3), padding=-1), "padding must be >= 0"),
        (dict(x=(2, 4, 8, 8), w=(4, 4, 3, 3), padding=(1, 1, 1)), "padding must be an int or a tuple of 2"),
        (dict(x=(2, 4, 8, 8), w=(4, 4, 3, 3), padding="full"), "padding must be 'same', 'valid'"),
        (dict(x=(2, 4, 8, 8), w=(4, 4, 3, 3), padding="same", stride=2), "padding='same' needs stride 1"),
    ],
)
def test_bad_input_names_the_argument(kwargs, message):
    x = torch.randn(*kwargs.pop("x"))
    w = torch.randn(*kwargs.pop("w"))
    b = kwargs.pop("b", None)
    b = torch.randn(*b) if b is not None else None
    with pytest.raises(ValueError) as info:
        ncf.normalized_conv2d(x, w, b, **kwargs)
    assert message in str(info.value)


def test_dtype_mismatch_is_a_type_error():
    with pytest.raises(TypeError, match="same dtype"):
        ncf.normalized_conv2d(torch.randn(1, 2, 5, 5), torch.randn(2, 2, 3, 3, dtype=torch.float64))


def test_bias_of_another_dtype_is_refused_like_conv2d():
    x, w = torch.randn(1, 2, 5, 5), torch.randn(3, 2, 3, 3)
    b = torch.randn(3, dtype=torch.float64)
    with pytest.raises(RuntimeError, match="bias type"):  # what F.conv2d does
        F.conv2d(x, w, b)
    with pytest.raises(TypeError, match="input and bias must have the same dtype, got torch.float32 and torch.float64"):
        ncf.normalized_conv2d(x, w, b)


@pytest.mark.parametrize("eps", [1e-5, 1e-20, 1e-30, 2.0**-126])
@pytest.mark.parametrize("value, channels", [(0.0, 2), (200.0, 1), (7.7, 3), (0.1, 3), (-3.3, 6)])
def test_flat_patches_give_exactly_the_bias(eps, value, channels):
    """docs/op.md: for every accepted eps (down to the smallest normal float32) an exactly flat patch
    centres to exactly 0, so its output is B; the rounded mean of 3 x 7.7 would leave 1e10 at eps 1e-45."""
    torch.manual_seed(0)
    x = torch.full((2, channels, 6, 7), value)
    w, b = torch.randn(4, channels, 3, 3), torch.randn(4)
    y = ncf.normalized_conv2d(x, w, b, eps=eps)
    assert torch.equal(y, b.reshape(1, 4, 1, 1).expand_as(y))


def test_generic_entry_point_takes_rank_from_weight():
    x = torch.randn(1, 2, 9)
    w = torch.randn(3, 2, 3)
    assert torch.equal(ncf.normalized_conv(x, w, padding=1), ncf.normalized_conv1d(x, w, padding=1))
    np.testing.assert_equal(ncf.normalized_conv(x, w).shape, (1, 3, 7))


@pytest.mark.parametrize("kernel,groups", [(3, 1), (3, 4), (1, 2)])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_an_empty_batch_trains_and_infers(kernel, groups, dtype):
    """N = 0 on every path (dense, the native depthwise and pointwise ones): an empty output, an empty
    input gradient and a zero weight gradient, as nn.Conv2d gives."""
    x = torch.rand(0, 4, 5, 5, dtype=dtype, requires_grad=True)
    w = torch.randn(8, 4 // groups, kernel, kernel, dtype=dtype, requires_grad=True)
    y = ncf.normalized_conv2d(x, w, padding=kernel // 2, groups=groups)
    assert y.shape == (0, 8, 5, 5)
    y.sum().backward()
    assert x.grad.shape == x.shape and torch.equal(w.grad, torch.zeros_like(w))
    with torch.no_grad():
        assert ncf.normalized_conv2d(x, w, padding=kernel // 2, groups=groups).shape == (0, 8, 5, 5)
