"""Memory a model can make the CPU kernel take: scratch is worked through in tiles, so a long kernel costs
about its packed weights (at most 8x the float32 weight bytes: panels of 8 output channels), not hundreds of
times the model's size. Each case runs in a child so its peak resident size is its own."""

from __future__ import annotations

import json

import pytest

from ort_models import available_isas, run_python

CHILD = """
import json, resource, numpy as np
from ncnn_onnx import runtime
from ort_models import nc_model
n = 2**21
w = np.random.default_rng(0).standard_normal((1, 1, n)).astype(np.float32)   # 8 MiB
x = np.random.default_rng(1).standard_normal((1, 1, n + 1)).astype(np.float32)
session = runtime.InferenceSession(nc_model(w), intra_op_num_threads=2)
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
y = session.run(None, {"X": x})[0]
after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
print(json.dumps({"model_bytes": w.nbytes, "run_growth": after - before, "peak": after, "shape": list(y.shape)}))
"""


@pytest.mark.parametrize("isa", available_isas())
def test_long_kernel_scratch_stays_small(isa):
    done = run_python(CHILD, timeout=120, env_extra={"NCNN_ONNX_CPU_ISA": isa})
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads(done.stdout.strip().splitlines()[-1])
    assert report["shape"] == [1, 1, 2]
    # The weights are packed when the session is created; a run may add scratch of a few blocks only
    # (it was 60x the model before the kernels worked in tiles).
    assert report["run_growth"] <= 2 * report["model_bytes"], report
