import re
import signal
import subprocess
import sys

import pytest

from conftest import EXAMPLES

# Every collective fails after this many seconds (the example's --timeout), and the whole run is stopped
# after RUN_TIMEOUT: a hang fails the test instead of blocking the suite.
COLLECTIVE_TIMEOUT = 60
RUN_TIMEOUT = 180


def run_torchrun(*args) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
           str(EXAMPLES / "ddp_train.py"), "--timeout", str(COLLECTIVE_TIMEOUT), *map(str, args)]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        out, err = proc.communicate(timeout=RUN_TIMEOUT)
    except subprocess.TimeoutExpired:
        # SIGTERM first: torchrun passes it on to the workers it started (each in its own session).
        proc.send_signal(signal.SIGTERM)
        try:
            out, err = proc.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            out, err = proc.communicate()
        pytest.fail(f"ddp_train.py {' '.join(map(str, args))} did not finish in {RUN_TIMEOUT} s:\n{err[-3000:]}")
    return subprocess.CompletedProcess(cmd, proc.returncode, out, err)


@pytest.mark.parametrize(
    "args,steps",
    [
        # 67 samples: 34 and 33 per rank, so 17 and 16 full batches of 2 (this hung when every rank took
        # only full batches); the last partial batch evens the step counts here.
        (("--train-size", 67), (17, 17)),
        # Uneven step counts: the rank that finishes first shadows the other's all-reduces (Join).
        (("--train-size", 67, "--batch-size", 3), (12, 11)),
    ],
    ids=["uneven-shards", "uneven-steps"],
)
def test_two_process_ddp_keeps_ranks_identical(args, steps):
    done = run_torchrun("--epochs", 1, *args)
    assert done.returncode == 0, done.stderr[-3000:]
    per_rank = dict(re.findall(r"rank (\d): \d+ samples, (\d+) steps per epoch", done.stdout))
    assert (int(per_rank["0"]), int(per_rank["1"])) == steps
    assert "max weight difference between ranks: 0.000e+00" in done.stdout
