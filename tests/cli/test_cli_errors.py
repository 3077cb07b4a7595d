"""Errors are one line on stderr with exit 1 and no traceback; --debug (before or after the subcommand)
gives the traceback instead. (Named test_cli_errors: tests/export has a test_errors.py.)"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from cli_helpers import one_line_error, spec
from ncnn_onnx.cli import CliError, main


@pytest.mark.parametrize("command", ["run", "check", "bench"])
def test_missing_model_file(cli, tmp_path, command, sample):
    missing = tmp_path / "nope.onnx"
    extra = {"run": [sample[0]], "check": ["--reference", spec("classifier")], "bench": []}[command]
    message = one_line_error(cli(command, missing, *extra), command)
    assert message == f"model file not found: {missing}"


def test_file_that_is_not_onnx(cli, tmp_path):
    garbage = tmp_path / "garbage.onnx"
    garbage.write_bytes(b"\x00\xffnot a protobuf" * 10)
    assert "is not a readable ONNX model" in one_line_error(cli("bench", garbage), "bench")


@pytest.mark.parametrize(
    "bad_spec, expected",
    [
        ("nomodule:factory", "cannot import 'nomodule'"),
        ("x", "package.module:factory"),
        (":classifier", "package.module:factory"),
        (spec(""), "package.module:factory"),
        (spec("missing"), "has no callable 'missing'"),
        (spec("NOT_CALLABLE"), "has no callable 'NOT_CALLABLE'"),
        (spec("not_a_module"), "returned int, not a torch.nn.Module"),
        (spec("broken"), "ValueError: factory failed on purpose"),
    ],
)
def test_bad_spec(cli, tmp_path, bad_spec, expected):
    out = tmp_path / "m.onnx"
    message = one_line_error(cli("export", bad_spec, "-o", out, "--input-shape", "1,3,8,8"), "export")
    assert expected in message
    assert "second line" not in message
    assert not out.exists()


@pytest.mark.parametrize("shape", ["1,a,8,8", "", "0,3,8,8", "1,-3,8,8", "1.5,3"])
def test_bad_input_shape_text(cli, tmp_path, shape):
    result = cli("export", spec("classifier"), "-o", tmp_path / "m.onnx", "--input-shape", shape)
    assert "input shape must be" in one_line_error(result, "export")


def test_input_shape_the_model_cannot_take(cli, tmp_path):
    result = cli("export", spec("classifier"), "-o", tmp_path / "m.onnx", "--input-shape", "1,4,8,8")
    assert "does not run on an input of shape (1, 4, 8, 8)" in one_line_error(result, "export")


def test_missing_weights_file(cli, tmp_path):
    result = cli("export", spec("classifier"), "-o", tmp_path / "m.onnx", "--input-shape", "1,3,8,8",
                 "--weights", tmp_path / "nope.pt")
    assert "weights file not found" in one_line_error(result, "export")


def test_weights_of_another_model_name_the_mismatch(cli, tmp_path):
    torch.save(torch.nn.Linear(2, 2).state_dict(), tmp_path / "linear.pt")
    result = cli("export", spec("classifier"), "-o", tmp_path / "m.onnx", "--input-shape", "1,3,8,8",
                 "--weights", tmp_path / "linear.pt")
    message = one_line_error(result, "export")
    assert "weights do not fit" in message and "0.weight" in message  # the detail, not torch's header line


def test_weights_file_that_is_not_a_state_dict(cli, tmp_path):
    np.save(tmp_path / "w.npy", np.zeros(3))
    result = cli("export", spec("classifier"), "-o", tmp_path / "m.onnx", "--input-shape", "1,3,8,8",
                 "--weights", tmp_path / "w.npy")
    assert "cannot read" in one_line_error(result, "export")


@pytest.mark.parametrize("where", ["before", "after"])
def test_debug_raises_instead(factory_dir, tmp_path, where):
    argv = ["run", str(tmp_path / "nope.onnx"), "x.npy"]
    argv = ["--debug", *argv] if where == "before" else [*argv, "--debug"]
    with pytest.raises(CliError, match="model file not found"):
        main(argv)


def test_usage_errors_exit_2(cli):
    result = cli("export", spec("classifier"))  # -o and --input-shape missing
    assert result.code == 2 and "-o/--output" in result.err
    assert cli("frobnicate").code == 2
    assert cli().code == 2
