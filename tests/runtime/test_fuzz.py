"""Property-based differential fuzzing of ncnn_onnx::NormalizedConv (fuzz_cases.py has the properties).

The custom-op library under every CPU backend this machine has, and the exporter's fallback function in
plain onnxruntime, against the float64 reference; malformed attributes, other opset versions and resource
bombs against the library. Every case runs in a child process (fuzz_child.py), so a crash or a hang fails
the case by name instead of killing pytest.

`make test` runs a fixed, derandomized set (the same cases every run); `make fuzz` sets
NCNN_ONNX_FUZZ_EXAMPLES for a long randomized run (NCNN_ONNX_FUZZ_SEED reproduces one: the seed is printed).
"""

from __future__ import annotations

import os
import time

import pytest

from fuzz_cases import FIXED, all_cases, available_isas, describe, library_leaks, randomized, run_cases

ISAS = available_isas()
TARGETS = ISAS + ["fallback"]
KINDS = ["valid", "raised_pad", "malformed", "opset", "pad_bomb", "output_bomb", "cap_bomb"]
SHOWN = 12  # failing cases listed in full per test
LEAK_CASES = 40  # cases of each kind the leak check runs (make sanitize)


@pytest.fixture(scope="module")
def outcome(tmp_path_factory):
    started = time.monotonic()
    cases, seed = all_cases()
    report = run_cases(cases, ISAS, str(tmp_path_factory.mktemp("fuzz")))
    jobs = sum(len(per_target) for per_target in report.values())
    unchecked = sum(not per_target for per_target in report.values())
    mode = f"randomized, NCNN_ONNX_FUZZ_SEED={seed}" if randomized() else "derandomized"
    print(f"\nfuzz: {len(cases)} cases ({unchecked} not compared: output past float16's range), {jobs} runs on "
          f"{', '.join(TARGETS)} ({mode}) in {time.monotonic() - started:.1f} s")
    return cases, report, seed


def _failures(outcome, case_ids, target=None):
    cases, report, seed = outcome
    found = []
    for case_id in case_ids:
        for where, problem in report[case_id].items():
            if problem is not None and target in (None, where):
                found.append(f"{describe(case_id, cases[case_id])}\n  @{where}: {problem}")
    return found


def _message(found, total, seed):
    head = f"{len(found)} of {total} runs failed"
    if seed is not None:
        head += f" (NCNN_ONNX_FUZZ_SEED={seed})"
    more = f"\n... and {len(found) - SHOWN} more" if len(found) > SHOWN else ""
    repro = "\nre-run one case: .venv/bin/python tests/runtime/fuzz_cases.py '<case json>' (PYTHONPATH=tests)"
    return head + ":\n" + "\n".join(found[:SHOWN]) + more + repro


@pytest.mark.parametrize("name", sorted(FIXED))
def test_fixed_case(outcome, name):
    """The named cases (the malformed attributes, opset versions and bombs of the brief), on every target."""
    found = _failures(outcome, [f"fixed-{name}"])
    assert not found, _message(found, len(outcome[1][f"fixed-{name}"]), None)


# The fallback runs the cases that must succeed; the refusals are the library's.
@pytest.mark.parametrize("kind,target", [(kind, target) for kind in KINDS for target in TARGETS
                                         if target != "fallback" or kind in ("valid", "raised_pad")])
def test_generated_cases(outcome, kind, target):
    cases, report, seed = outcome
    ids = [case_id for case_id, case in cases.items() if case["kind"] == kind and not case_id.startswith("fixed-")]
    runs = sum(target in report[case_id] for case_id in ids)
    if not runs:
        pytest.skip(f"no {kind} case runs on {target}")
    found = _failures(outcome, ids, target)
    assert not found, _message(found, runs, seed)


# Defined only under `make sanitize` (the sanitized library and the ASan runtime preloaded), so a plain
# run neither collects nor skips it.
if "libasan" in os.environ.get("LD_PRELOAD", ""):

    def test_library_leaks_nothing(outcome, tmp_path):
        """LeakSanitizer over a share of the cases (valid, malformed, bombs) on every backend; only leaks
        whose allocation stack passes through the library count (fuzz_cases.library_leaks)."""
        cases = outcome[0]
        picked, taken = {}, {}
        for case_id, case in cases.items():
            kind = case["kind"]
            if kind != "opset" and taken.get(kind, 0) < LEAK_CASES:
                picked[case_id] = case
                taken[kind] = taken.get(kind, 0) + 1
        found = library_leaks(picked, ISAS, str(tmp_path))
        assert not found, f"{len(found)} leak reports through the library:\n" + "\n\n".join(found[:SHOWN])
