import subprocess
import sys

from conftest import EXAMPLES


def test_two_process_ddp_keeps_ranks_identical():
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
           str(EXAMPLES / "ddp_train.py"), "--epochs", "1", "--train-size", "64"]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=240)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "max weight difference between ranks: 0.000e+00" in done.stdout
