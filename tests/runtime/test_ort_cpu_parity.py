"""The CPU kernels against the float64 reference (docs/architecture.md): every attribute, rank and dtype, every
backend this machine has, random data and real photographs at their raw scale."""

from __future__ import annotations

import numpy as np
import pytest

from ncnn_onnx import runtime
from ort_models import available_isas, nc_model, reference
from reference import assert_parity, photo_scales, photographs

# (X shape, W shape, attributes): 1-d, 2-d and 3-d; groups incl. depthwise; strides; dilations;
# asymmetric pads; every auto_pad; partial weight panels (M % 8); strips straddling images (N * P % 48).
GRID = [
    ((2, 4, 17), (6, 4, 3), dict(pads=[1, 1])),
    ((1, 6, 20), (6, 3, 4), dict(group=2, strides=[2], dilations=[2], pads=[2, 1])),
    ((2, 5, 12), (5, 1, 3), dict(group=5, auto_pad="SAME_UPPER")),
    ((2, 8, 13, 11), (16, 8, 3, 3), dict(pads=[1, 1, 1, 1])),
    ((1, 6, 15, 14), (9, 2, 3, 2), dict(group=3, strides=[2, 1], dilations=[1, 2], pads=[0, 1, 2, 0])),
    ((2, 8, 9, 10), (8, 1, 3, 3), dict(group=8, strides=[2, 2], auto_pad="SAME_LOWER")),
    ((1, 4, 10, 9), (4, 4, 4, 3), dict(strides=[2, 3], auto_pad="SAME_UPPER")),
    ((1, 3, 11, 12), (5, 3, 3, 3), dict(dilations=[2, 2], auto_pad="VALID")),
    ((1, 5, 7, 7), (7, 5, 1, 1), dict()),
    ((3, 16, 5, 5), (20, 16, 3, 3), dict(pads=[1, 1, 1, 1], kernel_shape=[3, 3])),
    ((1, 32, 20, 20), (40, 32, 3, 3), dict(pads=[1, 1, 1, 1])),
    ((2, 3, 5, 6, 7), (4, 3, 2, 3, 2), dict(pads=[0, 1, 1, 1, 0, 1])),
    ((1, 4, 6, 6, 6), (4, 2, 3, 3, 3), dict(group=2, strides=[2, 2, 2], dilations=[1, 2, 1], auto_pad="SAME_UPPER")),
    # How the vector backends cut the work: many strips per task (a cheap layer over many positions);
    # output channels split over tasks, with more patch rows than one block holds; 1x1 windows with
    # stride 2 over rows narrower than a vector; a last stride of 3 (gathers) over two blocks; stride 2
    # with dilation and windows that start in the padding and end past the row.
    ((1, 2, 64, 64), (4, 2, 3, 3), dict(pads=[1, 1, 1, 1])),
    ((1, 18, 6, 6), (70, 18, 3, 3), dict(pads=[1, 1, 1, 1])),
    ((2, 6, 11, 13), (5, 6, 1, 1), dict(strides=[2, 2])),
    ((1, 20, 9, 17), (6, 20, 3, 3), dict(strides=[1, 3], pads=[1, 1, 1, 1])),
    ((1, 4, 7, 30), (3, 4, 1, 3), dict(strides=[1, 2], dilations=[1, 2], pads=[0, 2, 0, 1])),
    # Pointwise layers take their statistics from the strip up to 128 channels per group, beyond that from
    # the moments pass; grouped, strided and padded.
    ((2, 20, 9, 11), (12, 10, 1, 1), dict(group=2, strides=[2, 1], pads=[1, 0, 0, 1])),
    ((1, 160, 6, 7), (24, 160, 1, 1), dict()),
]
ISAS = available_isas()


def _case(index, dtype, seed=0, offset=0.0, spread=1.0):
    x_shape, w_shape, attributes = GRID[index]
    rng = np.random.default_rng(seed)
    x = (offset + spread * rng.standard_normal(x_shape)).astype(dtype)
    w = (rng.standard_normal(w_shape) / np.sqrt(np.prod(w_shape[1:]))).astype(dtype)
    b = rng.standard_normal(w_shape[0]).astype(dtype)
    return x, w, b, attributes


def _run(model, x, **feeds):
    return runtime.InferenceSession(model, intra_op_num_threads=1).run(None, {"X": x, **feeds})[0]


@pytest.fixture(params=ISAS)
def isa(request, monkeypatch):
    monkeypatch.setenv("NCNN_ONNX_CPU_ISA", request.param)
    return request.param


@pytest.mark.parametrize("index", range(len(GRID)))
def test_attribute_grid_float32(index, isa):
    x, w, b, attributes = _case(index, np.float32, seed=index, offset=3.0)
    y = _run(nc_model(w, b, **attributes), x)
    assert_parity(y, reference(x, w, b, **attributes), np.float32)


@pytest.mark.parametrize("center,scale", [(1, 1), (0, 1), (1, 0), (0, 0)])
@pytest.mark.parametrize("index", [1, 3, 11])
def test_center_scale(index, center, scale, isa):
    x, w, b, attributes = _case(index, np.float32, seed=10 + index, offset=2.0)
    attributes = dict(attributes, center=center, scale=scale, epsilon=1e-3)
    y = _run(nc_model(w, b, **attributes), x)
    assert_parity(y, reference(x, w, b, **attributes), np.float32)


@pytest.mark.parametrize("index", [0, 3, 5, 9, 12, 14, 15, 16, 17])
def test_float16(index, isa):
    x, w, b, attributes = _case(index, np.float16, seed=20 + index, offset=1.0)
    y = _run(nc_model(w, b, **attributes), x)
    assert y.dtype == np.float16
    assert_parity(y, reference(x, w, b, **attributes), np.float16)


@pytest.mark.parametrize("index", [2, 4, 11])
def test_float64(index):
    x, w, b, attributes = _case(index, np.float64, seed=30 + index)
    y = _run(nc_model(w, b, **attributes), x)
    assert y.dtype == np.float64
    assert_parity(y, reference(x, w, b, **attributes), np.float64)


def test_without_bias_and_with_weights_as_graph_inputs():
    x, w, b, attributes = _case(4, np.float32, seed=40)
    y = _run(nc_model(w, None, **attributes), x)
    assert_parity(y, reference(x, w, None, **attributes), np.float32)
    y = _run(nc_model(w, b, w_input=True, b_input=True, **attributes), x, W=w, B=b)
    assert_parity(y, reference(x, w, b, **attributes), np.float32)
    # W constant (packed once) with B absent under the empty name, or B a graph input read per call.
    y = _run(nc_model(w, None, empty_b=True, **attributes), x)
    assert_parity(y, reference(x, w, None, **attributes), np.float32)
    for dtype in (np.float32, np.float16, np.float64):
        xd, wd, bd = x.astype(dtype), w.astype(dtype), b.astype(dtype)
        y = _run(nc_model(wd, bd, b_input=True, **attributes), xd, B=bd)
        assert_parity(y, reference(xd, wd, bd, **attributes), dtype)


@pytest.mark.parametrize("index", [10, 15, 16])
def test_near_flat_bright_input(index, isa):
    """A mean far above the spread: E[v^2] - mu^2 or conv(x, W) - mu*sum(W) would lose every digit."""
    x, w, b, attributes = _case(index, np.float32, seed=50, offset=200.0, spread=0.01)
    y = _run(nc_model(w, b, **attributes), x)
    assert_parity(y, reference(x, w, b, **attributes), np.float32)


@pytest.mark.parametrize("scale_name", ["raw", "unit", "standardized"])
def test_photographs(scale_name, isa):
    photos = photo_scales(photographs(size=40, count=4))[scale_name]
    rng = np.random.default_rng(60)
    for w_shape, attributes in (
        ((16, 3, 3, 3), dict(pads=[1, 1, 1, 1])),
        ((8, 3, 7, 7), dict(strides=[2, 2], pads=[3, 3, 3, 3])),
    ):
        w = (rng.standard_normal(w_shape) / np.sqrt(np.prod(w_shape[1:]))).astype(np.float32)
        b = rng.standard_normal(w_shape[0]).astype(np.float32)
        x = photos.astype(np.float32)
        y = _run(nc_model(w, b, **attributes), x)
        assert_parity(y, reference(x, w, b, **attributes), np.float32)


def test_photographs_float16():
    photos = photographs(size=32, count=2)  # raw 0-255: integers, exact in float16
    rng = np.random.default_rng(70)
    w = (rng.standard_normal((8, 3, 3, 3)) / np.sqrt(27)).astype(np.float16)
    b = rng.standard_normal(8).astype(np.float16)
    x = photos.astype(np.float16)
    y = _run(nc_model(w, b, pads=[1, 1, 1, 1]), x)
    assert_parity(y, reference(x, w, b, pads=[1, 1, 1, 1]), np.float16)


def test_empty_batch():
    x, w, b, attributes = _case(3, np.float32)
    y = _run(nc_model(w, b, **attributes), x[:0])
    assert y.shape == (0, 16, 13, 11)


@pytest.mark.parametrize("x_shape, w_shape, attributes", [
    ((1, 2, 2600), (3, 2, 2500), dict(pads=[7, 3])),  # patches of 5000 rows: a block across channels, one inside one
    ((1, 2, 40, 40), (3, 2, 33, 33), dict(pads=[4, 4, 4, 4])),  # 1089 kernel offsets: past the vector backends
])
def test_long_kernels(x_shape, w_shape, attributes, isa):
    """Kernels too long for the vector backends' per-offset tables: the portable backend works through
    the patch in blocks, so its scratch does not grow with the kernel."""
    rng = np.random.default_rng(80)
    x = (5.0 + rng.standard_normal(x_shape)).astype(np.float32)
    w = (rng.standard_normal(w_shape) / np.sqrt(np.prod(w_shape[1:]))).astype(np.float32)
    y = _run(nc_model(w, None, **attributes), x)
    assert_parity(y, reference(x, w, None, **attributes), np.float32)


@pytest.mark.parametrize("dtype", [np.float32, np.float16, np.float64])
@pytest.mark.parametrize("epsilon", [1e-5, 1e-20, 1e-30, 1.1754944e-38])
def test_flat_patches_give_exactly_the_bias(dtype, epsilon, isa):
    """docs/op.md: an exactly flat patch is centred to exactly 0, so its output is B for every epsilon
    (where 1/sqrt(epsilon) would amplify any rounding of the mean to thousands)."""
    rng = np.random.default_rng(90)
    for value, w_shape in ((200.0, (4, 1, 3, 5)), (0.1, (5, 3, 3, 3)), (-7.3, (9, 6, 2, 2))):
        w = rng.standard_normal(w_shape).astype(dtype)
        b = rng.standard_normal(w_shape[0]).astype(dtype)
        x = np.full((2, w_shape[1], 8, 9), value, dtype)
        y = _run(nc_model(w, b, epsilon=epsilon), x)
        np.testing.assert_array_equal(y, np.broadcast_to(b.reshape(1, -1, 1, 1), y.shape))
        y = _run(nc_model(w, None, epsilon=epsilon), x)
        np.testing.assert_array_equal(y, np.zeros_like(y))


@pytest.mark.parametrize("center,scale", [(1, 1), (0, 1), (1, 0), (0, 0)])
def test_non_finite_values(center, scale, isa):
    """docs/op.md, "Non-finite values": with center or scale a patch holding inf or NaN gives NaN; with
    neither the op is a convolution and follows IEEE arithmetic; other patches are untouched."""
    w = np.array([[[1.0, 2.0, -1.0]], [[-2.0, 0.5, 3.0]]], np.float32)
    for bad in (np.inf, -np.inf, np.nan):
        x = np.array([[[0.0, bad, 0.0, 1.0, 2.0, 4.0, 3.0]]], np.float32)
        y = _run(nc_model(w, None, center=center, scale=scale), x)
        touched = y[..., :2]
        if center or scale:
            assert np.isnan(touched).all(), touched
        else:
            with np.errstate(invalid="ignore"):
                expected = np.stack([np.correlate(x[0, 0], w[m, 0], "valid") for m in range(2)])[None, :, :2]
            np.testing.assert_array_equal(touched, expected)
        finite = x[..., 3:]
        expected = reference(finite, w, None, center=center, scale=scale)
        assert_parity(y[..., 3:], expected, np.float32)


# Layers the direct kernel takes (C/group <= 4, M/group <= 32, or 64 for kernels of 25 offsets or more):
# depthwise of every size, with channel multipliers, strides, dilations, asymmetric and SAME pads, rows
# that are no whole number of vectors, 1-d and 3-d, small groups and stems.
DIRECT = [
    ((1, 24, 29, 37), (24, 1, 3, 3), dict(group=24, pads=[1, 1, 1, 1])),
    ((2, 8, 20, 21), (8, 1, 7, 7), dict(group=8, pads=[3, 3, 3, 3])),
    ((1, 6, 17, 19), (12, 1, 3, 3), dict(group=6, strides=[2, 2], dilations=[2, 2], pads=[2, 1, 0, 2])),
    ((2, 5, 40), (5, 1, 5), dict(group=5, strides=[3], pads=[2, 1])),
    ((1, 8, 12, 13), (16, 4, 3, 3), dict(group=2, pads=[1, 1, 1, 1])),
    ((1, 4, 6, 7, 8), (4, 1, 3, 3, 3), dict(group=4, pads=[1, 1, 1, 1, 1, 1])),
    ((1, 6, 11, 10), (6, 1, 5, 5), dict(group=6, strides=[1, 2], auto_pad="SAME_UPPER")),
    ((3, 12, 5, 4), (6, 2, 3, 3), dict(group=6, auto_pad="VALID")),
    # enough groups that a task takes a block of them, rows shorter than a vector
    ((2, 96, 7, 9), (96, 1, 5, 5), dict(group=96, pads=[2, 2, 2, 2])),
    # rows of at most half a vector go two to a vector, here an odd number of them (3 rows of 4)
    ((2, 24, 5, 7), (24, 1, 3, 3), dict(group=24, strides=[2, 2], pads=[1, 1, 1, 1])),
    # a stem with a long kernel takes up to 8 weight panels (here 6, the last one partial)
    ((1, 3, 23, 21), (44, 3, 5, 5), dict(strides=[2, 2], pads=[2, 2, 2, 2])),
]


def _direct_case(index, dtype, offset=0.0, spread=1.0):
    x_shape, w_shape, attributes = DIRECT[index]
    rng = np.random.default_rng(100 + index)
    x = (offset + spread * rng.standard_normal(x_shape)).astype(dtype)
    w = (rng.standard_normal(w_shape) / np.sqrt(np.prod(w_shape[1:]))).astype(dtype)
    b = rng.standard_normal(w_shape[0]).astype(dtype)
    return x, w, b, attributes


@pytest.mark.parametrize("center,scale", [(1, 1), (0, 1), (1, 0), (0, 0)])
@pytest.mark.parametrize("index", range(len(DIRECT)))
def test_direct_kernel(index, center, scale, isa):
    x, w, b, attributes = _direct_case(index, np.float32, offset=2.0)
    attributes = dict(attributes, center=center, scale=scale)
    assert_parity(_run(nc_model(w, b, **attributes), x), reference(x, w, b, **attributes), np.float32)
    assert_parity(_run(nc_model(w, None, empty_b=True, **attributes), x), reference(x, w, None, **attributes),
                  np.float32)


@pytest.mark.parametrize("index", range(len(DIRECT)))
def test_direct_kernel_float16_and_near_flat(index, isa):
    x, w, b, attributes = _direct_case(index, np.float16, offset=1.0)
    y = _run(nc_model(w, b, **attributes), x)
    assert y.dtype == np.float16
    assert_parity(y, reference(x, w, b, **attributes), np.float16)
    x, w, b, attributes = _direct_case(index, np.float32, offset=200.0, spread=0.01)
    assert_parity(_run(nc_model(w, b, **attributes), x), reference(x, w, b, **attributes), np.float32)


@pytest.mark.parametrize("kernel", [3, 7])
def test_direct_kernel_on_photographs(kernel, isa):
    photos = photo_scales(photographs(size=40, count=2))["raw"].astype(np.float32)
    rng = np.random.default_rng(kernel)
    w = (rng.standard_normal((6, 1, kernel, kernel)) / kernel).astype(np.float32)
    attributes = dict(group=3, pads=[kernel // 2] * 4)
    assert_parity(_run(nc_model(w, None, **attributes), photos), reference(photos, w, None, **attributes), np.float32)


@pytest.mark.parametrize("width", [37, 6])
@pytest.mark.parametrize("dtype", [np.float32, np.float16])
def test_direct_kernel_flat_regions_among_varied_ones(dtype, width, isa):
    """The direct kernel takes the mean as sum / I where no output of a vector may be flat, and redoes a
    vector exactly where one may be: outputs whose patch lies in a flat region are exactly B, next to
    outputs of varied patches in the same vector (rows of 6 go two to a vector on AVX-512), at raw scale."""
    rng = np.random.default_rng(7)
    x = rng.uniform(0, 255, (2, 80, 12, width)).astype(dtype)
    cols = slice(5, 30) if width > 30 else slice(0, width)  # a narrow map: whole rows flat
    inner = slice(cols.start + 1, cols.stop - 1)  # outputs whose 3x3 patch lies in the region (pads are 0)
    x[:, :, 2:9, cols] = 173.3  # its rounded sum over 9 need not give it back
    w = (rng.standard_normal((80, 1, 3, 3)) / 3).astype(dtype)
    b = rng.standard_normal(80).astype(dtype)
    attributes = dict(group=80, pads=[1, 1, 1, 1], epsilon=1e-30)
    y = _run(nc_model(w, b, **attributes), x)
    flat = y[:, :, 3:8, inner]
    assert flat.size > 0
    np.testing.assert_array_equal(flat, np.broadcast_to(b.reshape(1, -1, 1, 1), flat.shape))
    varied = np.ones(y.shape[2:], bool)
    varied[2:9, cols] = False  # the flat region and the outputs whose patches reach into it
    expected = reference(x, w, b, **attributes)
    assert_parity(y[..., varied], expected[..., varied], dtype)
