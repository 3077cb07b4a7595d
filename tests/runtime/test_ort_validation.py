"""Bad models and inputs: every one must raise an onnxruntime error whose message names the op, the node
and what is wrong, and none may crash the process (they run in a child interpreter to prove it)."""

from __future__ import annotations

import json

import pytest

from bad_models import CASES
from ort_models import run_python


@pytest.fixture(scope="module")
def reports():
    done = run_python("import bad_models; bad_models.main()")
    assert done.returncode == 0, f"the child process died (exit {done.returncode}):\n{done.stderr[-3000:]}"
    lines = [json.loads(line) for line in done.stdout.splitlines() if line.startswith("{")]
    return {report["case"]: report for report in lines}


def test_every_case_ran(reports):
    assert sorted(reports) == sorted(CASES)


@pytest.mark.parametrize("case", sorted(CASES))
def test_bad_input_is_reported(reports, case):
    report = reports[case]
    message = report["message"]
    assert report["stage"] in ("load", "run"), f"{case} was accepted"
    # onnxruntime's own type check (X of an unsupported type) words it "operator (...) in node (...)".
    assert "NormalizedConv" in message and ("node 'nc'" in message or "node (nc)" in message), message
    for word in report["words"]:
        assert word in message, f"{case}: {word!r} not in {message!r}"


# The resource limits come from the environment when a session creates the kernel: each case runs in a
# child with its own environment and prints the outcome.
LIMIT_CHILD = """
import json, numpy as np
from ncnn_onnx import runtime
from ort_models import nc_model, reference
w = np.full({w_shape}, 0.5, np.float32)
x = np.random.default_rng(0).standard_normal({x_shape}).astype(np.float32)
try:
    y = runtime.InferenceSession(nc_model(w, **{attributes})).run(None, {{"X": x}})[0]
    error = np.abs(y - reference(x, w, **{attributes})).max() if y.size else 0.0
    print(json.dumps({{"shape": list(y.shape), "error": float(error)}}))
except Exception as exc:
    print(json.dumps({{"message": str(exc)}}))
"""


def run_limited(env: dict, w_shape, x_shape, **attributes) -> dict:
    code = LIMIT_CHILD.format(w_shape=tuple(w_shape), x_shape=tuple(x_shape), attributes=attributes)
    done = run_python(code, timeout=60, env_extra=env)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_output_over_the_buffer_limit_is_refused():
    # Y is 8 x 100 float32 = 3200 bytes.
    report = run_limited({"NCNN_ONNX_MAX_BUFFER_BYTES": "3000"}, (8, 1, 1), (1, 1, 100))
    assert "the output Y would take 800 elements of 4 bytes" in report["message"]
    assert "NCNN_ONNX_MAX_BUFFER_BYTES" in report["message"]
    assert run_limited({"NCNN_ONNX_MAX_BUFFER_BYTES": "3200"}, (8, 1, 1), (1, 1, 100))["shape"] == [1, 8, 100]


def test_scratch_over_the_buffer_limit_is_refused():
    # Y is 1 x 100 float32 (400 bytes); the location statistics are 3 x 100 floats (1200 bytes).
    report = run_limited({"NCNN_ONNX_MAX_BUFFER_BYTES": "1000", "NCNN_ONNX_CPU_ISA": "avx2"}, (1, 8, 3), (1, 8, 102))
    if "shape" in report:
        pytest.skip("this CPU has no AVX2: the portable backend needs no location statistics")
    assert "the location statistics (scratch)" in report["message"]
    # Depthwise (the direct kernel): Y is 100 floats; the padded input row 100 + 200 + a vector of floats.
    report = run_limited({"NCNN_ONNX_MAX_BUFFER_BYTES": "1000"}, (1, 1, 3), (1, 1, 300), dilations=[100])
    assert "the direct kernel's padded input (scratch)" in report["message"]


def test_max_pad_raises_the_pad_limit():
    attributes = {"pads": [40, 40]}
    refused = run_limited({}, (2, 1, 1), (1, 1, 3), **attributes)
    assert "pad 40 in spatial dim 0 exceeds" in refused["message"]
    report = run_limited({"NCNN_ONNX_MAX_PAD": "40"}, (2, 1, 1), (1, 1, 3), **attributes)
    assert report["shape"] == [1, 2, 83] and report["error"] <= 1e-6


def test_overflowing_pads_are_refused_when_the_pad_limit_allows_them():
    report = run_limited({"NCNN_ONNX_MAX_PAD": str(2**62)}, (4, 3, 3, 3), (1, 3, 8, 8), pads=[2**62] * 4)
    assert "overflows" in report["message"]


@pytest.mark.parametrize("name, value", [("NCNN_ONNX_MAX_PAD", "-1"), ("NCNN_ONNX_MAX_BUFFER_BYTES", "lots")])
def test_malformed_limit_is_named(name, value):
    report = run_limited({name: value}, (2, 1, 3), (1, 1, 8))
    assert f"environment variable {name} must be a whole number" in report["message"]
