"""The child process of the NormalizedConv fuzz test (test_fuzz.py, fuzz_cases.py).

    python fuzz_child.py JOBS.pickle START

runs jobs[START:] of a pickled job list one after another, in this process, and prints two JSON lines per
job: {"event": "start", "id": ...} before it and {"event": "done", ...} after it (where it failed, the
exception and its message, the seconds it took, the output's dtype and shape and its parity error against
the float64 reference the parent computed). A crash (segfault, abort, a sanitizer report) or a hang inside
the library therefore shows up in the parent as a "start" line without its "done" line, which names the case.

This module is also imported by the parent for `make_data` (so both sides draw the same X, W and B). It
imports numpy only at module level: no hypothesis, no torch, no exporter.
"""

from __future__ import annotations

import json
import os
import pickle
import sys
import time

import numpy as np

# Without a sanitizer the child's address space is capped, so that a case the library should have
# refused but did not cannot take the shared machine's memory (it fails with an allocation error
# instead). AddressSanitizer reserves terabytes of shadow memory and cannot run under such a cap; the
# sanitized run caps single allocations with ASAN_OPTIONS=max_allocation_size_mb instead (Makefile).
ADDRESS_SPACE_BYTES = int(os.environ.get("NCNN_ONNX_FUZZ_CHILD_AS_BYTES", str(4 << 30)))


def make_data(seed: int, x_shape, w_shape, bias: bool, dtype: str, offset: float, spread: float):
    """X, W and B of a case: X = offset + spread * N(0, 1), W ~ N(0, 1/fan_in), B ~ N(0, 1)."""
    x = make_x(seed, x_shape, dtype, offset, spread)
    rng = np.random.default_rng([seed, 1])
    fan_in = max(1, int(np.prod(w_shape[1:])))
    w = (rng.standard_normal(w_shape) / np.sqrt(fan_in)).astype(dtype)
    b = np.random.default_rng([seed, 2]).standard_normal(w_shape[0]).astype(dtype) if bias else None
    return x, w, b


def make_x(seed: int, shape, dtype: str, offset: float, spread: float) -> np.ndarray:
    rng = np.random.default_rng([seed, 0])
    return (offset + spread * rng.standard_normal(shape)).astype(dtype)


def _limit_memory() -> None:
    if "asan" in os.environ.get("LD_PRELOAD", "") or ADDRESS_SPACE_BYTES <= 0:
        return
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_AS)
    if hard == resource.RLIM_INFINITY or hard > ADDRESS_SPACE_BYTES:
        resource.setrlimit(resource.RLIMIT_AS, (ADDRESS_SPACE_BYTES, hard))


def _emit(record: dict) -> None:
    sys.stdout.write(json.dumps(record) + "\n")
    sys.stdout.flush()


def run_job(job: dict, ort, runtime, parity_error) -> dict:
    out = {"event": "done", "id": job["id"], "stage": "load", "type": "", "message": ""}
    x = make_x(**job["x"])
    start = time.perf_counter()
    try:
        if job["path"] == "fallback":
            # Plain onnxruntime, no custom-op library: the model's embedded function runs.
            options = ort.SessionOptions()
            options.intra_op_num_threads = job["threads"]
            options.log_severity_level = 4
            session = ort.InferenceSession(job["model"], options, providers=["CPUExecutionProvider"])
        else:
            session = runtime.InferenceSession(job["model"], intra_op_num_threads=job["threads"], log_severity_level=4)
        out["stage"] = "run"
        y = session.run(None, {"X": x})[0]
        out["stage"] = "none"
        out["seconds"] = time.perf_counter() - start
        out["dtype"] = str(y.dtype)
        out["shape"] = list(y.shape)
        ref = job.get("ref")
        if ref is not None and tuple(y.shape) == tuple(ref.shape):
            out["error"] = parity_error(y, ref) if np.isfinite(y).all() else float("inf")
    except Exception as exc:  # noqa: BLE001 - every failure is reported to the parent
        out["seconds"] = time.perf_counter() - start
        out["type"] = type(exc).__name__
        out["message"] = str(exc)[:4000]
    return out


def main(path: str, start: int) -> None:
    _limit_memory()
    import onnxruntime as ort

    from ncnn_onnx import runtime
    from ncnn_onnx.parity import parity_error

    ort.set_default_logger_severity(4)  # the exceptions carry the messages
    with open(path, "rb") as f:
        jobs = pickle.load(f)
    for job in jobs[start:]:
        _emit({"event": "start", "id": job["id"]})
        _emit(run_job(job, ort, runtime, parity_error))


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]))
