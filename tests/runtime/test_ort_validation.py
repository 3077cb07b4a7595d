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
