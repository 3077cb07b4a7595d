"""The layer's native per-location channel statistics (ncnn_onnx/_native_channels.py,
runtime/layer/channels.cc): `centre` must give the PyTorch path's channel mean and centred input bit for
bit (the general path's exactness rests on them) and its location moments; both entry points must not
depend on the thread count and must refuse sizes that overflow. (The standardization's agreement with
the PyTorch path and the reference is in test_pointwise.py.)"""

from __future__ import annotations

import pytest
import torch

from ncnn_onnx import _native, _native_channels
from ncnn_onnx._algorithm import centre_channels

pytestmark = pytest.mark.skipif(_native.library() is None, reason="the native library was not built")


@pytest.mark.parametrize("shape,groups", [((2, 12, 9, 7), 1), ((2, 12, 9, 7), 3), ((1, 8, 31), 2), ((2, 6, 3, 4, 5), 2),
                                          ((3, 1000, 5, 5), 1)])
def test_centre_matches_the_pytorch_path(shape, groups):
    x = torch.rand(shape, generator=torch.Generator().manual_seed(0)) * 255
    x[0, :, 0] = 7.7  # flat locations: their mean must be the value itself, x - m exactly 0
    m, xc, s, q = _native_channels.centre(x, groups)
    with _native.disabled():
        m_ref, xc_ref = centre_channels(x, groups)
    assert torch.equal(m, m_ref) and torch.equal(xc, xc_ref)
    assert torch.equal(xc[0, :, :, 0], torch.zeros_like(xc[0, :, :, 0]))
    # Float32 sums of cg terms, in any order: within cg * 2^-24 * sum|terms| of the exact (float64) sums.
    cg = shape[1] // groups
    exact = xc_ref.double()
    for got, terms in ((s, exact), (q, exact.square())):
        assert ((got.double() - terms.sum(2)).abs() <= cg * 2.0**-24 * terms.abs().sum(2)).all()


def test_centre_without_the_centred_input_or_the_moments():
    x = torch.randn(2, 8, 6, 6)
    m, xc, s, q = _native_channels.centre(x, 2, moments=False, centred=False)
    assert xc is None and s is None and q is None
    assert torch.equal(m, _native_channels.centre(x, 2)[0])


def test_results_do_not_depend_on_the_thread_count():
    x = torch.rand(2, 48, 37, 29) * 255
    g = torch.randn(2, 48, 37, 29)
    before = torch.get_num_threads()
    results = []
    try:
        for threads in (1, 3):
            torch.set_num_threads(threads)
            results.append((_native_channels.standardize(x, 3, 1e-5, True, True),
                            _native_channels.standardize_backward(g.clone(), x, 3, 1e-5, True, True),
                            *_native_channels.centre(x, 3)))
    finally:
        torch.set_num_threads(before)
    assert all(torch.equal(a, b) for a, b in zip(*results))


@pytest.mark.parametrize("entry", ["ncnn_onnx_standardize_forward", "ncnn_onnx_centre"])
def test_sizes_that_overflow_are_refused(entry):
    x = torch.zeros(1, 4, 4)
    call = _native_channels._call(x, 1, 1e-5, True, True)
    call.out = call.mean = _native.pointer(x)
    call.batch, call.positions = 2**40, 2**40
    with pytest.raises(RuntimeError, match="overflows a 64-bit integer"):
        _native.run(entry, call)


def test_a_missing_output_is_refused():
    x = torch.zeros(1, 4, 4)
    with pytest.raises(RuntimeError, match="null"):
        _native.run("ncnn_onnx_centre", _native_channels._call(x, 1))
