import subprocess
import sys

import numpy as np
import pytest

from conftest import EXAMPLES

sys.path.insert(0, str(EXAMPLES / "cpp_inference"))

import run_example  # noqa: E402

from ncnn_onnx.parity import bar  # noqa: E402

pytestmark = pytest.mark.skipif(run_example.missing_tools() is not None,
                                reason=f"the C++ example cannot be built here: {run_example.missing_tools()}")


@pytest.fixture(scope="module")
def build_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("cpp_inference")


def test_cpp_program_matches_python(build_dir):
    result = run_example.main(["--build-dir", str(build_dir), "--batch", "4", "--width", "8"])
    assert result["parity_python"] <= bar("float32"), result
    assert result["parity_eager"] <= bar("float32"), result
    assert result["same_classes"]


def test_cpp_program_reports_errors_in_one_line(build_dir, tmp_path):
    binary = run_example.build(build_dir)  # up to date after the test above: CMake only re-checks
    from ncnn_onnx.runtime import get_library_path

    model = tmp_path / "missing.onnx"
    x = tmp_path / "x.f32"
    np.zeros((1, 1, 4, 4), np.float32).tofile(x)

    def run(*args):
        result = subprocess.run([str(binary), *map(str, args)], capture_output=True, text=True)
        return result.returncode, result.stderr.strip().splitlines()

    code, lines = run(model, get_library_path(), x, "--shape", "1,1,4,5")
    assert code == 2 and len(lines) == 1 and "needs 80" in lines[0], lines
    code, lines = run(model, tmp_path / "no_such_library.so", x, "--shape", "1,1,4,4")
    assert code == 1 and len(lines) == 1 and lines[0].startswith("error: loading the custom-op library"), lines
    code, lines = run(model, get_library_path(), x, "--shape", "1,1,4,4")
    assert code == 1 and len(lines) == 1 and lines[0].startswith("error: loading the model"), lines
