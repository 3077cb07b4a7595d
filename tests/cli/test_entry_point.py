"""The real entry points, in subprocesses: the console script, `python -m ncnn_onnx.cli`, and the
inference commands in an interpreter where torch cannot be imported."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

SCRIPT = Path(sys.executable).with_name("ncnn-onnx")


def _run(argv, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run(argv, capture_output=True, text=True, timeout=120, **kwargs)


@pytest.mark.skipif(not SCRIPT.is_file(), reason=f"console script not installed next to {sys.executable}")
def test_console_script_error_is_one_line_without_traceback(tmp_path):
    done = _run([str(SCRIPT), "run", str(tmp_path / "nope.onnx"), "x.npy"])
    assert done.returncode == 1
    assert done.stderr.strip() == f"ncnn-onnx run: error: model file not found: {tmp_path / 'nope.onnx'}"
    assert done.stdout == ""


def test_module_entry_point_with_debug_shows_the_traceback(tmp_path):
    done = _run([sys.executable, "-m", "ncnn_onnx.cli", "--debug", "run", str(tmp_path / "nope.onnx"), "x.npy"])
    assert done.returncode == 1
    assert "Traceback" in done.stderr and "CliError: model file not found" in done.stderr


BLOCK_TORCH = textwrap.dedent(
    """
    import sys

    class NoTorch:
        def find_spec(self, name, path=None, target=None):
            if name == "torch" or name.startswith("torch."):
                raise ModuleNotFoundError("torch is blocked in this test", name=name)

    sys.meta_path.insert(0, NoTorch())
    from ncnn_onnx.cli import main

    codes = [main(argv) for argv in {argvs!r}]
    assert "torch" not in sys.modules
    print("codes", codes)
    """
)


def test_run_bench_info_need_no_torch(tmp_path, model_path, sample):
    argvs = [
        ["info"],
        ["run", model_path, str(sample[0]), "--output-dir", str(tmp_path)],
        ["run", model_path, str(sample[0]), "--no-library", "--output-dir", str(tmp_path)],
        ["bench", model_path, "--repeats", "2", "--warmup", "0"],
    ]
    env = {k: v for k, v in os.environ.items() if k != "NCNN_ONNX_LIBRARY"}
    done = _run([sys.executable, "-c", BLOCK_TORCH.format(argvs=argvs)], env=env)
    assert done.returncode == 0, done.stderr
    assert "codes [0, 0, 0, 0]" in done.stdout
    assert "library CPU" in done.stdout and "top-5" in done.stdout
