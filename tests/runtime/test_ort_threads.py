"""onnxruntime's intra-op pool runs the kernel's tasks: any thread count gives the same bits, and one
session serves concurrent run() calls from several Python threads."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

from ncnn_onnx import runtime
from ort_models import nc_model, reference
from reference import assert_parity


def _problem(seed=0, batch=2):
    rng = np.random.default_rng(seed)
    x = (5 + rng.standard_normal((batch, 24, 23, 21))).astype(np.float32)
    w = (rng.standard_normal((40, 24, 3, 3)) / 15).astype(np.float32)
    b = rng.standard_normal(40).astype(np.float32)
    return x, w, b, dict(pads=[1, 1, 1, 1])


@pytest.mark.parametrize("threads", [1, 2, 4])
def test_intra_op_threads(threads):
    x, w, b, attributes = _problem()
    session = runtime.InferenceSession(nc_model(w, b, **attributes), intra_op_num_threads=threads)
    y = session.run(None, {"X": x})[0]
    assert_parity(y, reference(x, w, b, **attributes), np.float32)
    single = runtime.InferenceSession(nc_model(w, b, **attributes), intra_op_num_threads=1).run(None, {"X": x})[0]
    np.testing.assert_array_equal(y, single)  # tasks never depend on which thread runs them


def test_concurrent_runs_on_one_session():
    x, w, b, attributes = _problem(batch=1)
    session = runtime.InferenceSession(nc_model(w, b, **attributes), intra_op_num_threads=2)
    inputs = [(x + i).astype(np.float32) for i in range(6)]
    expected = [session.run(None, {"X": xi})[0] for xi in inputs]

    def work(i):
        return [session.run(None, {"X": inputs[i % 6]})[0] for _ in range(4)]

    with ThreadPoolExecutor(max_workers=4) as pool:
        results = list(pool.map(work, range(12)))
    for i, outs in enumerate(results):
        for y in outs:
            np.testing.assert_array_equal(y, expected[i % 6])
