"""A missing optional dependency names the extra that installs it, in one line, in the Python API and the
CLI. Each case runs in a child Python in which the module is made unimportable (None in sys.modules), as in
an install without that extra."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from cli_helpers import Result, one_line_error

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def child(code: str, *blocked: str, cwd=None) -> Result:
    prelude = "import sys\n" + "".join(f"sys.modules[{name!r}] = None\n" for name in blocked)
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [ROOT, os.environ.get("PYTHONPATH")])))
    done = subprocess.run([sys.executable, "-c", prelude + textwrap.dedent(code)], capture_output=True, text=True,
                          env=env, cwd=cwd, timeout=300)
    return Result(done.returncode, done.stdout, done.stderr)


def cli_child(*argv, blocked=(), cwd=None) -> Result:
    return child(f"from ncnn_onnx.cli import main\nsys.exit(main({list(map(str, argv))!r}))", *blocked, cwd=cwd)


def api_error(result: Result) -> str:
    """The exception line of a child that failed on an import: exactly one exception, nothing chained."""
    assert result.code != 0, result.out
    assert "During handling of the above exception" not in result.err, result.err
    assert "The above exception was the direct cause" not in result.err, result.err
    return result.err.strip().splitlines()[-1]


TORCH = 'needs torch, which is not installed: pip install "ncnn_onnx[torch]"'


@pytest.mark.parametrize("statement,feature", [
    ("import ncnn_onnx.nn", "ncnn_onnx.nn"),
    ("from ncnn_onnx import NormalizedConv2d", "ncnn_onnx.nn"),
    ("from ncnn_onnx import convert_model", "ncnn_onnx.convert_model"),
    ("import ncnn_onnx.functional", "ncnn_onnx.functional"),
])
def test_api_without_torch_names_the_extra(statement, feature):
    line = api_error(child(statement, "torch"))
    assert line == f"ncnn_onnx._extras.MissingExtraError: {feature} {TORCH}"


@pytest.mark.parametrize("blocked,name", [("torch", "torch"), ("onnxscript", "onnxscript"), ("onnx_ir", "onnx-ir")])
def test_api_export_without_its_extra(blocked, name):
    line = api_error(child("from ncnn_onnx.export import export", blocked))
    assert line == (f"ncnn_onnx._extras.MissingExtraError: ncnn_onnx.export.export() needs {name}, which is not "
                    'installed: pip install "ncnn_onnx[export]"')


def test_serving_needs_none_of_the_extras():
    result = child("""
        import ncnn_onnx.export, ncnn_onnx.runtime, ncnn_onnx.parity
        assert "torch" not in sys.modules or sys.modules["torch"] is None
        print(ncnn_onnx.runtime.get_library_path())
    """, "torch", "onnxscript", "onnx_ir", "PIL")
    assert result.code == 0, result.err
    assert result.out.strip().endswith("libncnn_onnx_ops.so")


def test_cli_export_without_torch(factory_dir):
    result = cli_child("export", "ncnn_cli_tiny_models:classifier", "-o", "x.onnx", "--input-shape", "1,3,8,8",
                       blocked=("torch",), cwd=factory_dir)
    assert one_line_error(result, "export") == 'ncnn-onnx export needs torch, which is not installed: pip install "ncnn_onnx[export]"'


def test_cli_export_without_onnxscript(factory_dir):
    result = cli_child("export", "ncnn_cli_tiny_models:classifier", "-o", "x.onnx", "--input-shape", "1,3,8,8",
                       blocked=("onnxscript",), cwd=factory_dir)
    assert one_line_error(result, "export") == ('ncnn-onnx export needs onnxscript, which is not installed: '
                                                'pip install "ncnn_onnx[export]"')


def test_cli_check_without_torch(model_path, factory_dir):
    result = cli_child("check", model_path, "--reference", "ncnn_cli_tiny_models:classifier", blocked=("torch",),
                       cwd=factory_dir)
    assert one_line_error(result, "check") == f"ncnn-onnx check {TORCH}"


def test_cli_run_image_without_pillow(model_path, tmp_path):
    from PIL import Image

    image = tmp_path / "photo.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (8, 8, 3), dtype=np.uint8)).save(image)
    result = cli_child("run", model_path, image, "--output-dir", tmp_path, blocked=("PIL",))
    assert one_line_error(result, "run") == ('reading the image photo.png needs Pillow, which is not installed: '
                                             'pip install "ncnn_onnx[images]"')
    # .npy inputs need no extra.
    np.save(tmp_path / "x.npy", np.zeros((3, 8, 8), np.float32))
    result = cli_child("run", model_path, tmp_path / "x.npy", "--output-dir", tmp_path, blocked=("PIL", "torch"))
    assert result.code == 0, result.err
